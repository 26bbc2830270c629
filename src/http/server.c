/* The API server: libuv TCP listener, llhttp request parsing, one exchange
 * at a time per connection.
 *
 * The exchange is embedded in its connection, so a request costs no
 * allocation.  A connection is freed only when its socket is closed and no
 * exchange is outstanding: that is how an exchange outlives a client that
 * left (the late reply is dropped and frees the connection).
 */
#include "kk/http_server.h"

#include "kk/buf.h"
#include "kk/err.h"
#include "kk/log.h"

#include <llhttp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SRV_READ_BUF 16384
#define SRV_MAX_HEADER 8192
#define SRV_MAX_REPLY (64u << 20)
#define SRV_MAX_CONNS 256
#define SRV_IDLE_MS 60000

struct srv_conn;

struct kk_http_exchange {
    struct srv_conn *conn;
    bool outstanding; /* handler called, reply not yet given */
};

struct srv_conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* idle / slow request: armed while waiting for a request */
    unsigned nhandles;
    uv_write_t wreq;
    uv_write_t cwreq;           /* "100 Continue", independent of the response write */
    struct kk_http_server *srv; /* NULL once the socket is closed */
    struct srv_conn *next, *prev;
    llhttp_t parser;
    struct kk_buf url;     /* request target, NUL-terminated at headers complete */
    struct kk_buf body;    /* bounded by max_body */
    struct kk_buf out;     /* response being written */
    struct kk_buf pending; /* bytes read past a complete request (pipelining) */
    size_t header_bytes;
    char hname[8]; /* header name being read, enough to spot "Expect" */
    size_t hname_len;
    bool in_expect; /* reading the Expect header's value */
    bool expect_continue;
    bool cont_writing;
    char hval[16];
    size_t hval_len;
    int fail_status; /* 4xx decided by a parser callback */
    bool keep_alive; /* of the current request */
    bool tcp_closed; /* close callback ran */
    bool closing;    /* uv_close requested */
    bool writing;
    bool close_after_write;
    struct kk_http_exchange ex;
    char rbuf[SRV_READ_BUF];
};

struct kk_http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    kk_http_handler handler;
    void *user;
    size_t max_body;
    uint16_t port;
    struct srv_conn *conns;
    unsigned handles; /* listener + connections not yet closed */
    unsigned nconns;
    uint32_t idle_ms;
    bool closing;
    void (*done)(void *arg);
    void *done_arg;
};

static const llhttp_settings_t srv_settings;

static void srv_maybe_done(struct kk_http_server *srv)
{
    if (!srv->closing || srv->handles > 0)
        return;
    void (*done)(void *) = srv->done;
    void *arg = srv->done_arg;
    free(srv);
    if (done)
        done(arg);
}

static void conn_free(struct srv_conn *c)
{
    kk_buf_free(&c->url);
    kk_buf_free(&c->body);
    kk_buf_free(&c->out);
    kk_buf_free(&c->pending);
    free(c);
}

static void on_conn_closed(uv_handle_t *h)
{
    struct srv_conn *c = h->data;
    if (--c->nhandles > 0)
        return;
    struct kk_http_server *srv = c->srv;
    c->tcp_closed = true;
    srv->nconns--;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->srv = NULL;
    srv->handles--;
    /* An outstanding exchange keeps the memory until its reply. */
    if (!c->ex.outstanding)
        conn_free(c);
    srv_maybe_done(srv);
}

static void conn_close(struct srv_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
    }
}

static void conn_process(struct srv_conn *c, const char *data, size_t len);
static void conn_read_start(struct srv_conn *c);

static void on_write(uv_write_t *w, int status)
{
    struct srv_conn *c = w->data;
    c->writing = false;
    if (c->closing)
        return;
    if (status < 0 || c->close_after_write || c->srv->closing) {
        conn_close(c);
        return;
    }
    /* Next request: first what was already read past the last one. */
    if (c->pending.len > 0) {
        size_t n = c->pending.len;
        /* conn_process may save a new tail into pending: take the bytes out first. */
        char tmp[SRV_READ_BUF];
        memcpy(tmp, c->pending.base, n);
        kk_buf_reset(&c->pending);
        conn_process(c, tmp, n);
        if (c->closing || c->ex.outstanding || c->writing)
            return;
    }
    conn_read_start(c);
}

static int conn_send(struct srv_conn *c, int status, const char *ctype, const char *body, size_t len,
                     bool close)
{
    int rc;
    kk_buf_reset(&c->out);
    rc = kk_buf_printf(
        &c->out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: %s\r\n\r\n",
        status, reason_phrase(status), ctype ? ctype : "text/plain", len, close ? "close" : "keep-alive");
    if (rc < 0)
        goto out;
    rc = kk_buf_append(&c->out, body, len);
    if (rc < 0)
        goto out;
    c->close_after_write = close;
    c->wreq.data = c;
    uv_buf_t b = uv_buf_init(c->out.base, (unsigned)c->out.len);
    rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc == 0)
        c->writing = true;
out:
    return rc;
}

/* Protocol failures: answer, then close (the rest of the stream is unusable). */
static void conn_fail(struct srv_conn *c, int status)
{
    const char *reason = reason_phrase(status);
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (conn_send(c, status, "text/plain", reason, strlen(reason), true) < 0)
        conn_close(c);
}

static void conn_reset_request(struct srv_conn *c)
{
    kk_buf_reset(&c->url);
    kk_buf_reset(&c->body);
    c->header_bytes = 0;
    c->hname_len = 0;
    c->hval_len = 0;
    c->in_expect = false;
    c->expect_continue = false;
    c->fail_status = 0;
}

static int on_message_begin(llhttp_t *p)
{
    conn_reset_request(p->data);
    return 0;
}

static int count_header(struct srv_conn *c, size_t n)
{
    c->header_bytes += n;
    if (c->header_bytes > SRV_MAX_HEADER) {
        c->fail_status = 431;
        return -1;
    }
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    struct srv_conn *c = p->data;
    if (count_header(c, n) < 0)
        return -1;
    return kk_buf_append(&c->url, at, n) < 0 ? -1 : 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    struct srv_conn *c = p->data;
    if (c->hname_len + n <= sizeof(c->hname))
        memcpy(c->hname + c->hname_len, at, n);
    c->hname_len += n;
    return count_header(c, n);
}

static int on_header_field_complete(llhttp_t *p)
{
    struct srv_conn *c = p->data;
    c->in_expect = c->hname_len == 6 && strncasecmp(c->hname, "expect", 6) == 0;
    c->hname_len = 0;
    c->hval_len = 0;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    struct srv_conn *c = p->data;
    if (c->in_expect && c->hval_len + n <= sizeof(c->hval)) {
        memcpy(c->hval + c->hval_len, at, n);
        c->hval_len += n;
    }
    return count_header(c, n);
}

static int on_header_value_complete(llhttp_t *p)
{
    struct srv_conn *c = p->data;
    if (c->in_expect && c->hval_len == 12 && strncasecmp(c->hval, "100-continue", 12) == 0)
        c->expect_continue = true;
    c->in_expect = false;
    return 0;
}

static void on_continue_written(uv_write_t *w, int status)
{
    struct srv_conn *c = w->data;
    (void)status;
    c->cont_writing = false;
}

static int on_headers_complete(llhttp_t *p)
{
    struct srv_conn *c = p->data;
    struct kk_http_server *srv = c->srv;
    /* Known Content-Length over the limit: refuse before reading the body. */
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > srv->max_body) {
        c->fail_status = 413;
        return -1;
    }
    if (kk_buf_append(&c->url, "", 1) < 0) {
        c->fail_status = 431;
        return -1;
    }
    /* curl sends Expect: 100-continue for bodies over 1 KiB and otherwise
     * waits a second before the body. */
    if (c->expect_continue && p->content_length > 0 && !c->cont_writing) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
        c->cwreq.data = c;
        if (uv_write(&c->cwreq, (uv_stream_t *)&c->tcp, &b, 1, on_continue_written) == 0)
            c->cont_writing = true;
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    struct srv_conn *c = p->data;
    if (n > c->srv->max_body - c->body.len) {
        c->fail_status = 413;
        return -1;
    }
    if (kk_buf_append(&c->body, at, n) < 0) {
        c->fail_status = 500;
        return -1;
    }
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct srv_conn *c = p->data;
    c->keep_alive = llhttp_should_keep_alive(p);
    /* Stop here: the handler owns the connection until its reply. */
    return HPE_PAUSED;
}

static const llhttp_settings_t srv_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void conn_dispatch(struct srv_conn *c)
{
    struct kk_http_server *srv = c->srv;
    char *url = c->url.base;
    char *q = strchr(url, '?');
    const char *query = "";
    if (q) {
        *q = '\0';
        query = q + 1;
    }
    struct kk_http_request_view view = {
        .method = llhttp_method_name((llhttp_method_t)c->parser.method),
        .path = url,
        .query = query,
        .body = c->body.base ? c->body.base : "",
        .body_len = c->body.len,
    };
    c->ex.conn = c;
    c->ex.outstanding = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_timer_stop(&c->timer); /* the handler takes its time; the client waits */
    srv->handler(srv->user, &c->ex, &view);
}

/* Feeds bytes to the parser; stops at a complete request (dispatched) and
 * keeps what follows it for after the reply. */
static void conn_process(struct srv_conn *c, const char *data, size_t len)
{
    llhttp_errno_t e = llhttp_execute(&c->parser, data, len);
    if (e == HPE_OK)
        return;
    if (e == HPE_PAUSED) {
        const char *pos = llhttp_get_error_pos(&c->parser);
        size_t used = pos ? (size_t)(pos - data) : len;
        llhttp_resume(&c->parser);
        if (used < len && kk_buf_append(&c->pending, data + used, len - used) < 0) {
            conn_fail(c, 400);
            return;
        }
        conn_dispatch(c);
        return;
    }
    conn_fail(c, c->fail_status ? c->fail_status : 400);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct srv_conn *c = h->data;
    (void)suggested;
    *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct srv_conn *c = s->data;
    if (n < 0) {
        conn_close(c);
        return;
    }
    if (n == 0)
        return;
    conn_process(c, buf->base, (size_t)n);
}

static void on_idle(uv_timer_t *t)
{
    struct srv_conn *c = t->data;
    conn_close(c);
}

/* Waits for the next request, for at most idle_ms. */
static void conn_read_start(struct srv_conn *c)
{
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    uv_timer_start(&c->timer, on_idle, c->srv->idle_ms, 0);
}

static void on_connection(uv_stream_t *l, int status)
{
    struct kk_http_server *srv = l->data;
    if (status < 0 || srv->closing)
        return;
    struct srv_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    uv_tcp_init(srv->loop, &c->tcp);
    uv_timer_init(srv->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->nhandles = 2;
    c->srv = srv;
    srv->handles++;
    srv->nconns++;
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    kk_buf_init(&c->url, SRV_MAX_HEADER + 1);
    kk_buf_init(&c->body, srv->max_body);
    kk_buf_init(&c->out, SRV_MAX_REPLY);
    kk_buf_init(&c->pending, SRV_READ_BUF);
    llhttp_init(&c->parser, HTTP_REQUEST, &srv_settings);
    c->parser.data = c;
    /* Over the cap the connection is accepted only to be closed, so the
     * backlog does not keep the listener readable. */
    if (uv_accept(l, (uv_stream_t *)&c->tcp) < 0 || srv->nconns > SRV_MAX_CONNS) {
        conn_close(c);
        return;
    }
    conn_read_start(c);
}

int kk_http_server_start(uv_loop_t *loop, const char *host, uint16_t port, size_t max_body,
                         kk_http_handler handler, void *user, struct kk_http_server **out)
{
    int rc;
    struct sockaddr_storage ss;
    struct kk_http_server *srv = NULL;

    if (!loop || !host || !handler || !out)
        return KK_EINVAL;
    rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
    if (rc < 0)
        rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss);
    if (rc < 0)
        return KK_EINVAL;
    srv = calloc(1, sizeof(*srv));
    if (!srv)
        return KK_ENOMEM;
    srv->loop = loop;
    srv->handler = handler;
    srv->user = user;
    srv->max_body = max_body;
    srv->idle_ms = SRV_IDLE_MS;
    uv_tcp_init(loop, &srv->listener);
    srv->listener.data = srv;
    srv->handles = 1;
    /* libuv sets SO_REUSEADDR on bind for TCP on Unix. */
    rc = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&srv->listener, 128, on_connection);
    if (rc == 0) {
        struct sockaddr_storage bound;
        int len = sizeof(bound);
        rc = uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &len);
        if (rc == 0)
            srv->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                          : ((struct sockaddr_in *)&bound)->sin_port);
    }
    if (rc < 0) {
        KK_ERROR("http", "listen on %s:%u: %s", host, port, kk_strerror(rc));
        kk_http_server_close(srv, NULL, NULL);
        return rc;
    }
    *out = srv;
    return 0;
}

uint16_t kk_http_server_port(const struct kk_http_server *srv)
{
    return srv->port;
}

void kk_http_server_set_idle_timeout(struct kk_http_server *srv, uint32_t ms)
{
    srv->idle_ms = ms ? ms : SRV_IDLE_MS;
}

void kk_http_reply(struct kk_http_exchange *ex, int status, const char *content_type, const char *body,
                   size_t len)
{
    struct srv_conn *c = ex->conn;
    if (!ex->outstanding)
        return;
    ex->outstanding = false;
    if (c->tcp_closed) {
        /* The client left: drop the reply, the exchange was the last owner. */
        conn_free(c);
        return;
    }
    if (c->closing)
        return;
    bool close = !c->keep_alive || c->srv->closing;
    if (conn_send(c, status, content_type, body ? body : "", body ? len : 0, close) < 0)
        conn_close(c);
}

static void on_listener_closed(uv_handle_t *h)
{
    struct kk_http_server *srv = h->data;
    srv->handles--;
    srv_maybe_done(srv);
}

void kk_http_server_close(struct kk_http_server *srv, void (*done)(void *arg), void *arg)
{
    if (!srv || srv->closing)
        return;
    srv->closing = true;
    srv->done = done;
    srv->done_arg = arg;
    uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
    for (struct srv_conn *c = srv->conns; c; c = c->next)
        conn_close(c);
}

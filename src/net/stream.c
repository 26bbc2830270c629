/* Client byte stream: DNS + TCP connect, optional TLS (mbedTLS 2.28) over libuv.
 *
 * One allocation per stream holds the handles; output buffers grow on demand
 * up to a hard cap.  Reads go into one 64 KiB buffer per thread, shared by
 * every stream: libuv calls alloc and read back to back for one stream and
 * the bytes are consumed inside the read callback (handed to the user, or
 * for TLS decrypted into the equally shared plaintext buffer, leftovers
 * copied to the stream's own rx).  A stream therefore costs no read memory
 * while idle or waiting, which matters with thousands of pooled connections.
 * The stream counts what the loop still references (timer, tcp handle,
 * getaddrinfo request) and frees itself when the count drops to zero after
 * kk_stream_close.  Memory therefore stays valid during any callback even if
 * the user closes inside it; code after an upcall only checks s->closing.
 *
 * Output: two buffers.  `out` collects bytes (plaintext, or TLS records from
 * the BIO send callback); `fly` is owned by the one uv_write in flight.  When
 * the write completes the buffers swap, so small writes coalesce while a
 * write is on the wire and nothing is moved.
 */
#include "kk/stream.h"

#include "kk/buf.h"
#include "kk/err.h"
#include "kk/log.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/oid.h> /* MBEDTLS_X509_EXT_* expand to MBEDTLS_OID_X509_EXT_* */
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCOPE "net"
#define READ_BUF_SIZE (64 * 1024)
/* A TLS record carries at most 16 KiB of plaintext (RFC 5246 §6.2.1). */
#define PLAIN_BUF_SIZE (16 * 1024)
/* Hard cap on queued output per buffer: above the largest Kinesis request
 * (10 MiB, kinesis.md §0) with room for a few more; callers watch pending. */
#define OUT_MAX (32u * 1024 * 1024)
/* Ciphertext left over when the user pauses reading mid-chunk. */
#define RX_MAX (2 * READ_BUF_SIZE)
/* A drained output buffer larger than this is released rather than kept, so
 * an idle pooled connection does not hold on to its largest request. */
#define OUT_KEEP (16 * 1024)
#define SYSTEM_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"
#define MAX_ALPN 4
#define HOST_MAX 255
/* kk_stream_close with output still queued keeps writing it for at most this
 * long (then FIN, and the peer's EOF awaited within the same bound) before
 * the socket is closed: callers flush their last replies and close at once. */
#define LINGER_MS 2000

struct kk_tls_ctx {
    mbedtls_ssl_config conf;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_x509_crt ca;
    mbedtls_x509_crt cert;
    mbedtls_pk_context key;
    char *server_name; /* NULL: the connect host */
    char *alpn_store;  /* the protocol names, NUL-separated */
    const char *alpn[MAX_ALPN + 1];
    /* Last session, for resumption; only offered to the same server name. */
    mbedtls_ssl_session session;
    bool have_session;
    char session_host[HOST_MAX + 1];
};

enum stream_state {
    ST_RESOLVING,  /* waiting for uv_getaddrinfo */
    ST_CONNECTING, /* waiting for uv_tcp_connect (or the close before the next address) */
    ST_HANDSHAKE,  /* TCP up, waiting for the TLS handshake */
    ST_OPEN,       /* on_connect(0) delivered, data flows */
    ST_FAILED,     /* on_connect(err) or on_read(NULL, err) delivered; waiting for close */
};

struct kk_stream {
    uv_loop_t *loop;
    uv_tcp_t tcp;
    uv_timer_t timer; /* connect timeout, later the deferred TLS read pump */
    uv_getaddrinfo_t *gai; /* only while a name is resolved (numeric hosts skip it) */
    uv_connect_t creq;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    struct kk_stream_cbs cbs;
    void *user;
    struct kk_tls_ctx *tls;
    mbedtls_ssl_context *ssl; /* TLS only: a plaintext stream carries none of it */

    enum stream_state state;
    int refs;     /* open handles + pending getaddrinfo */
    bool closing; /* kk_stream_close was called */
    bool silent;  /* connect failed synchronously: no on_closed */
    bool tcp_inited;
    bool gai_pending;
    bool reading;      /* the user wants on_read */
    bool uv_reading;   /* uv_read_start is in effect */
    bool write_active; /* wreq is in flight */
    bool in_pump;      /* guards tls_pump against re-entry via read_start */
    bool resumed;
    bool lingering;   /* closing, but still draining queued output (kk_stream_close) */
    bool shut_sent;   /* lingering: the queue drained and uv_shutdown was issued */
    int last_err;     /* last per-address connect error */
    int deferred_err; /* error found inside kk_stream_write, delivered from the loop */

    struct addrinfo *ai_list, *ai_next;

    struct kk_buf out; /* queued bytes, from out_off */
    size_t out_off;
    struct kk_buf fly; /* bytes owned by the uv_write in flight, from fly_off */
    size_t fly_off;
    struct kk_buf pre; /* TLS: plaintext written before the handshake finished */
    struct kk_buf rx;  /* TLS: ciphertext not yet consumed, from rx_off */
    size_t rx_off;
    const unsigned char *in_p; /* TLS: what the BIO recv callback reads next */
    size_t in_n;

    /* TLS to an IP literal: the address the leaf must list as an iPAddress
     * SAN (4 or 16 bytes); vip_len 0 means mbedTLS checks the DNS name. */
    uint8_t vip[16];
    uint8_t vip_len;
    bool vip_mismatch;    /* the verify callback found no matching iPAddress */
    bool offered_session; /* a saved session went into the ClientHello */
    bool full_handshake;  /* the server sent its certificate: not resumed */
    char alpn[32];
    uint16_t port;
    char host[]; /* NUL-terminated, allocated with the stream */
};

/* Per-thread read buffers (see the top of the file).  tls_pump never nests
 * (it runs only from loop callbacks, and on_read upcalls cannot start a pump
 * synchronously), so one plaintext buffer is enough; pbuf_busy checks it. */
static __thread char rbuf[READ_BUF_SIZE];
static __thread unsigned char pbuf[PLAIN_BUF_SIZE];
static __thread bool pbuf_busy;

static void flush(struct kk_stream *s);
static void tls_pump(struct kk_stream *s);
static void connect_next(struct kk_stream *s);
static void on_timer(uv_timer_t *t);
static void on_tcp_closed_retry(uv_handle_t *h);
static void update_reading(struct kk_stream *s);
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);

/* ---- TLS context ------------------------------------------------------- */

static void set_err(char *err, size_t errlen, const char *what, const char *path, int mbed)
{
    if (!err || !errlen)
        return;
    char msg[128] = "";
    if (mbed)
        mbedtls_strerror(mbed, msg, sizeof(msg));
    snprintf(err, errlen, "%s%s%s%s%s", what, path ? " " : "", path ? path : "", mbed ? ": " : "", msg);
}

int kk_tls_ctx_new(const struct kk_tls_opts *opts, struct kk_tls_ctx **out, char *err, size_t errlen)
{
    int rv = 0;
    *out = NULL;
    struct kk_tls_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return KK_ENOMEM;
    mbedtls_ssl_config_init(&c->conf);
    mbedtls_entropy_init(&c->entropy);
    mbedtls_ctr_drbg_init(&c->drbg);
    mbedtls_x509_crt_init(&c->ca);
    mbedtls_x509_crt_init(&c->cert);
    mbedtls_pk_init(&c->key);
    mbedtls_ssl_session_init(&c->session);

    static const unsigned char pers[] = "kubemq-kinesis";
    int m = mbedtls_ctr_drbg_seed(&c->drbg, mbedtls_entropy_func, &c->entropy, pers, sizeof(pers) - 1);
    if (m) {
        set_err(err, errlen, "tls: seeding the random generator", NULL, m);
        rv = KK_ETLS;
        goto out;
    }
    m = mbedtls_ssl_config_defaults(&c->conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                    MBEDTLS_SSL_PRESET_DEFAULT);
    if (m) {
        set_err(err, errlen, "tls: config defaults", NULL, m);
        rv = KK_ETLS;
        goto out;
    }
    mbedtls_ssl_conf_min_version(&c->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_rng(&c->conf, mbedtls_ctr_drbg_random, &c->drbg);

    const char *ca_file = opts && opts->ca_file && *opts->ca_file ? opts->ca_file : SYSTEM_CA_BUNDLE;
    bool insecure = opts && opts->insecure_skip_verify;
    m = mbedtls_x509_crt_parse_file(&c->ca, ca_file);
    /* A positive result counts certificates that failed to parse; a bundle is
     * usable as long as one parsed.  Without verification a CA is optional. */
    if (m < 0 || c->ca.version == 0) {
        if (!insecure) {
            set_err(err, errlen, "tls: cannot load CA file", ca_file, m < 0 ? m : 0);
            rv = KK_ETLS;
            goto out;
        }
    } else {
        mbedtls_ssl_conf_ca_chain(&c->conf, &c->ca, NULL);
    }
    mbedtls_ssl_conf_authmode(&c->conf, insecure ? MBEDTLS_SSL_VERIFY_NONE : MBEDTLS_SSL_VERIFY_REQUIRED);

    if (opts && opts->cert_file && *opts->cert_file) {
        if (!opts->key_file || !*opts->key_file) {
            set_err(err, errlen, "tls: client certificate without key", NULL, 0);
            rv = KK_EINVAL;
            goto out;
        }
        m = mbedtls_x509_crt_parse_file(&c->cert, opts->cert_file);
        if (m) {
            set_err(err, errlen, "tls: cannot load client certificate", opts->cert_file, m < 0 ? m : 0);
            rv = KK_ETLS;
            goto out;
        }
        /* Never echo key parse details beyond mbedTLS's generic text: no key bytes reach it. */
        m = mbedtls_pk_parse_keyfile(&c->key, opts->key_file, NULL);
        if (m) {
            set_err(err, errlen, "tls: cannot load client key", opts->key_file, m);
            rv = KK_ETLS;
            goto out;
        }
        m = mbedtls_ssl_conf_own_cert(&c->conf, &c->cert, &c->key);
        if (m) {
            set_err(err, errlen, "tls: client certificate and key", NULL, m);
            rv = KK_ETLS;
            goto out;
        }
    }

    if (opts && opts->server_name && *opts->server_name) {
        if (strlen(opts->server_name) > HOST_MAX) {
            set_err(err, errlen, "tls: server_name too long", NULL, 0);
            rv = KK_EINVAL;
            goto out;
        }
        c->server_name = strdup(opts->server_name);
        if (!c->server_name) {
            rv = KK_ENOMEM;
            goto out;
        }
    }

    if (opts && opts->alpn && *opts->alpn) {
        /* "h2" or a comma-separated preference list "h2,http/1.1". */
        c->alpn_store = strdup(opts->alpn);
        if (!c->alpn_store) {
            rv = KK_ENOMEM;
            goto out;
        }
        int n = 0;
        char *save = NULL;
        for (char *tok = strtok_r(c->alpn_store, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            size_t len = strlen(tok);
            if (n == MAX_ALPN || len == 0 || len >= sizeof(((struct kk_stream *)0)->alpn)) {
                set_err(err, errlen, "tls: invalid alpn list", NULL, 0);
                rv = KK_EINVAL;
                goto out;
            }
            c->alpn[n++] = tok;
        }
        c->alpn[n] = NULL;
        if (n > 0) {
            m = mbedtls_ssl_conf_alpn_protocols(&c->conf, c->alpn);
            if (m) {
                set_err(err, errlen, "tls: alpn", NULL, m);
                rv = KK_ETLS;
                goto out;
            }
        }
    }

out:
    if (rv < 0) {
        kk_tls_ctx_free(c);
        return rv;
    }
    *out = c;
    return 0;
}

void kk_tls_ctx_free(struct kk_tls_ctx *c)
{
    if (!c)
        return;
    mbedtls_ssl_session_free(&c->session);
    mbedtls_ssl_config_free(&c->conf);
    mbedtls_ctr_drbg_free(&c->drbg);
    mbedtls_entropy_free(&c->entropy);
    mbedtls_x509_crt_free(&c->ca);
    mbedtls_x509_crt_free(&c->cert);
    mbedtls_pk_free(&c->key);
    free(c->server_name);
    free(c->alpn_store);
    free(c);
}

/* ---- lifetime ---------------------------------------------------------- */

static void maybe_free(struct kk_stream *s)
{
    if (!s->closing || s->refs > 0)
        return;
    bool notify = !s->silent;
    /* Release everything that points into the TLS context before on_closed:
     * the user may free the context there (its last stream is gone). */
    if (s->ai_list)
        uv_freeaddrinfo(s->ai_list);
    s->ai_list = NULL;
    if (s->ssl) {
        mbedtls_ssl_free(s->ssl);
        free(s->ssl);
        s->ssl = NULL;
    }
    kk_buf_free(&s->out);
    kk_buf_free(&s->fly);
    kk_buf_free(&s->pre);
    kk_buf_free(&s->rx);
    if (notify && s->cbs.on_closed)
        s->cbs.on_closed(s);
    free(s);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct kk_stream *s = h->data;
    s->refs--;
    maybe_free(s);
}

static void close_handles(struct kk_stream *s)
{
    if (s->tcp_inited && !uv_is_closing((uv_handle_t *)&s->tcp))
        uv_close((uv_handle_t *)&s->tcp, on_handle_closed);
    if (!uv_is_closing((uv_handle_t *)&s->timer))
        uv_close((uv_handle_t *)&s->timer, on_handle_closed);
    if (s->gai_pending)
        uv_cancel((uv_req_t *)s->gai);
}

/* Lingering close: bytes of the socket are read and discarded (unread input
 * would make the kernel answer our close with a reset that drops the tail of
 * what we sent); EOF before our FIN only stops reading, anything else ends
 * the linger. */
static void on_linger_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct kk_stream *s = st->data;
    (void)buf;
    if (nread >= 0 || !s->lingering)
        return;
    if (nread == UV_EOF && !s->shut_sent) {
        uv_read_stop(st); /* half-closed peer: it may still read what we send */
        s->uv_reading = false;
        return;
    }
    s->lingering = false;
    close_handles(s);
}

static void on_linger_timeout(uv_timer_t *t)
{
    struct kk_stream *s = t->data;
    if (!s->lingering)
        return;
    KK_DEBUG(SCOPE, "close %s:%u: %zu queued bytes not taken within %d ms", s->host, s->port,
             kk_stream_pending(s), LINGER_MS);
    s->lingering = false;
    close_handles(s);
}

static void on_linger_shutdown(uv_shutdown_t *req, int status)
{
    struct kk_stream *s = req->data;
    /* FIN is out; wait for the peer's EOF (on_linger_read) unless this failed
     * or nothing reads the socket anymore. */
    if (s->lingering && (status < 0 || !s->uv_reading)) {
        s->lingering = false;
        close_handles(s);
    }
}

/* Lingering and the queue is empty: FIN after the last byte, then close. */
static void linger_drained(struct kk_stream *s)
{
    if (!s->lingering || s->shut_sent || s->write_active || kk_stream_pending(s) > 0)
        return;
    s->shut_sent = true;
    s->sreq.data = s;
    if (uv_shutdown(&s->sreq, (uv_stream_t *)&s->tcp, on_linger_shutdown) < 0) {
        s->lingering = false;
        close_handles(s);
    }
}

void kk_stream_close(struct kk_stream *s)
{
    if (!s || s->closing)
        return;
    s->closing = true;
    /* A failed stream (or one with a failure still to report) closes at once. */
    if (s->state != ST_OPEN || s->deferred_err || !s->tcp_inited) {
        close_handles(s);
        return;
    }
    if (s->tls && s->ssl)
        mbedtls_ssl_close_notify(s->ssl); /* appends the alert after the queued records */
    if (s->out.len == s->out_off && !s->write_active) {
        close_handles(s);
        return;
    }
    /* Output is queued: keep writing it, bounded by LINGER_MS.  No on_read
     * runs from here on (user reads are replaced by on_linger_read). */
    s->lingering = true;
    if (s->uv_reading)
        uv_read_stop((uv_stream_t *)&s->tcp);
    s->uv_reading = uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_linger_read) == 0;
    /* From now, not from the loop's cached time: the caller may have spent
     * long in this loop turn (encrypting a large write, say). */
    uv_update_time(s->loop);
    uv_timer_start(&s->timer, on_linger_timeout, LINGER_MS, 0);
    flush(s);
    if (s->lingering && s->out.len == s->out_off && !s->write_active) {
        /* Everything went out right away: no FIN dance needed. */
        s->lingering = false;
        close_handles(s);
    }
}

/* Connect failed (or timed out): report once; the user closes. */
static void fail_connect(struct kk_stream *s, int err)
{
    if (s->closing || s->state == ST_FAILED || s->state == ST_OPEN)
        return;
    s->state = ST_FAILED;
    uv_timer_stop(&s->timer);
    if (s->uv_reading) {
        uv_read_stop((uv_stream_t *)&s->tcp);
        s->uv_reading = false;
    }
    if (s->gai_pending)
        uv_cancel((uv_req_t *)s->gai);
    s->cbs.on_connect(s, err);
}

/* A connection-level error after connect (write failure, read error, EOF). */
static void fail_stream(struct kk_stream *s, int err)
{
    if (s->closing || s->state == ST_FAILED)
        return;
    if (s->state != ST_OPEN) {
        fail_connect(s, err);
        return;
    }
    s->state = ST_FAILED;
    if (s->uv_reading) {
        uv_read_stop((uv_stream_t *)&s->tcp);
        s->uv_reading = false;
    }
    s->cbs.on_read(s, NULL, err);
}

/* ---- TLS glue ---------------------------------------------------------- */

static int mbed_to_kk(struct kk_stream *s, int m, const char *what)
{
    if (m == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
        char info[256] = "";
        uint32_t flags = mbedtls_ssl_get_verify_result(s->ssl);
        mbedtls_x509_crt_verify_info(info, sizeof(info), "", flags);
        /* The verify text is one or more "reason\n" lines; make them one line. */
        for (char *p = info; *p; p++)
            if (*p == '\n')
                *p = (p[1] ? ';' : '\0');
        /* mbedTLS words an IP mismatch as a CN mismatch; say what was looked for. */
        const char *ipname = s->tls->server_name ? s->tls->server_name : s->host;
        KK_WARN(SCOPE, "tls %s %s:%u: certificate verification failed: %s%s%s", what, s->host, s->port, info,
                s->vip_mismatch ? "; no subjectAltName iPAddress is " : "", s->vip_mismatch ? ipname : "");
        return KK_ETLS_VERIFY;
    }
    char msg[128];
    mbedtls_strerror(m, msg, sizeof(msg));
    KK_WARN(SCOPE, "tls %s %s:%u: %s (-0x%04x)", what, s->host, s->port, msg, (unsigned)-m);
    return KK_ETLS;
}

/* BIO send: append to the output buffer; never blocks. */
static int bio_send(void *ctx, const unsigned char *p, size_t n)
{
    struct kk_stream *s = ctx;
    if (kk_buf_append(&s->out, p, n) < 0)
        return MBEDTLS_ERR_NET_SEND_FAILED;
    return (int)n;
}

/* BIO recv: read from the ciphertext the socket delivered. */
static int bio_recv(void *ctx, unsigned char *p, size_t n)
{
    struct kk_stream *s = ctx;
    if (s->in_n == 0)
        return MBEDTLS_ERR_SSL_WANT_READ;
    if (n > s->in_n)
        n = s->in_n;
    memcpy(p, s->in_p, n);
    s->in_p += n;
    s->in_n -= n;
    return (int)n;
}

/* Keeps ciphertext the pump did not consume; it must outlive rbuf's reuse. */
static int stash_input(struct kk_stream *s)
{
    int rv = 0;
    if (s->rx.len > 0 && s->in_p >= (const unsigned char *)s->rx.base &&
        s->in_p <= (const unsigned char *)s->rx.base + s->rx.len) {
        /* Input already lives in rx: just advance. */
        s->rx_off = (size_t)((const char *)s->in_p - s->rx.base);
        if (s->in_n == 0) {
            kk_buf_reset(&s->rx);
            s->rx_off = 0;
        }
        return 0;
    }
    kk_buf_reset(&s->rx);
    s->rx_off = 0;
    if (s->in_n > 0)
        rv = kk_buf_append(&s->rx, s->in_p, s->in_n);
    s->in_p = (const unsigned char *)s->rx.base;
    return rv;
}

static void save_session(struct kk_stream *s)
{
    struct kk_tls_ctx *c = s->tls;
    s->resumed = s->offered_session && !s->full_handshake;
    mbedtls_ssl_session_free(&c->session);
    mbedtls_ssl_session_init(&c->session);
    c->have_session = mbedtls_ssl_get_session(s->ssl, &c->session) == 0;
    if (c->have_session)
        snprintf(c->session_host, sizeof(c->session_host), "%s", c->server_name ? c->server_name : s->host);
}

static void handshake_step(struct kk_stream *s)
{
    /* Stepping (rather than mbedtls_ssl_handshake) lets us see whether the
     * server took the full path through its Certificate message; with tickets
     * the session id cannot tell, as the client sends a fresh random one. */
    int m = 0;
    while (s->ssl->state != MBEDTLS_SSL_HANDSHAKE_OVER) {
        m = mbedtls_ssl_handshake_step(s->ssl);
        if (s->ssl->state == MBEDTLS_SSL_SERVER_CERTIFICATE)
            s->full_handshake = true;
        if (m)
            break;
    }
    flush(s);
    if (s->closing || s->state != ST_HANDSHAKE)
        return;
    if (m == MBEDTLS_ERR_SSL_WANT_READ || m == MBEDTLS_ERR_SSL_WANT_WRITE)
        return;
    if (m) {
        fail_connect(s, mbed_to_kk(s, m, "handshake with"));
        return;
    }
    const char *proto = mbedtls_ssl_get_alpn_protocol(s->ssl);
    if (proto)
        snprintf(s->alpn, sizeof(s->alpn), "%s", proto);
    save_session(s);
    KK_DEBUG(SCOPE, "tls to %s:%u: %s %s%s%s", s->host, s->port, mbedtls_ssl_get_version(s->ssl),
             mbedtls_ssl_get_ciphersuite(s->ssl), s->resumed ? " resumed" : "", proto ? " alpn " : "");
    uv_timer_stop(&s->timer);
    s->state = ST_OPEN;
    if (s->pre.len > 0) {
        /* Writes made during the handshake: encrypt them now, in order. */
        struct kk_buf pre = s->pre;
        kk_buf_init(&s->pre, OUT_MAX);
        uv_buf_t b = uv_buf_init(pre.base, (unsigned)pre.len);
        int rv = kk_stream_write(s, &b, 1);
        kk_buf_free(&pre);
        if (rv < 0) {
            s->state = ST_HANDSHAKE; /* so the failure reaches on_connect */
            fail_connect(s, rv);
            return;
        }
    }
    update_reading(s);
    s->cbs.on_connect(s, 0);
    if (s->closing)
        return;
    /* Application data may have arrived with the last handshake flight. */
    tls_pump(s);
}

/* Decrypts and delivers until mbedTLS needs more input, the user pauses or closes. */
static void tls_pump(struct kk_stream *s)
{
    if (s->in_pump)
        return;
    s->in_pump = true;
    /* A nested pump (of another stream, from inside an upcall) would clobber
     * the shared buffer that the outer on_read is still reading: it uses a
     * small stack buffer instead.  Not expected to happen; kept safe. */
    unsigned char small[1024];
    bool own = !pbuf_busy;
    unsigned char *pb = own ? pbuf : small;
    size_t pn = own ? sizeof(pbuf) : sizeof(small);
    pbuf_busy = true;
    while (!s->closing && s->state == ST_OPEN && s->reading) {
        int n = mbedtls_ssl_read(s->ssl, pb, pn);
        if (n > 0) {
            s->cbs.on_read(s, (const char *)pb, n);
            continue;
        }
        if (n == MBEDTLS_ERR_SSL_WANT_READ || n == MBEDTLS_ERR_SSL_WANT_WRITE)
            break;
        s->in_pump = false;
        if (own)
            pbuf_busy = false;
        if (n == 0 || n == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY)
            fail_stream(s, UV_EOF);
        else
            fail_stream(s, mbed_to_kk(s, n, "read from"));
        return;
    }
    s->in_pump = false;
    if (own)
        pbuf_busy = false;
    if (!s->closing)
        flush(s);
}

/* ---- reading ----------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h;
    (void)hint;
    buf->base = rbuf;
    buf->len = sizeof(rbuf);
}

static void on_tcp_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct kk_stream *s = st->data;
    if (s->closing || nread == 0)
        return;
    if (!s->tls) {
        if (nread < 0)
            fail_stream(s, (int)nread);
        else if (s->state == ST_OPEN)
            s->cbs.on_read(s, buf->base, nread);
        return;
    }
    if (nread < 0) {
        if (s->state == ST_HANDSHAKE) {
            KK_WARN(SCOPE, "tls handshake with %s:%u: connection %s", s->host, s->port,
                    nread == UV_EOF ? "closed by peer" : kk_strerror((int)nread));
            fail_connect(s, nread == UV_EOF ? KK_ETLS : (int)nread);
        } else {
            fail_stream(s, (int)nread);
        }
        return;
    }
    /* Read straight from rbuf unless earlier ciphertext is still queued
     * (update_reading keeps the socket paused until rx drains, so this is rare). */
    if (s->rx.len > s->rx_off) {
        kk_buf_consume(&s->rx, s->rx_off);
        s->rx_off = 0;
        if (kk_buf_append(&s->rx, buf->base, (size_t)nread) < 0) {
            fail_stream(s, KK_ETOOBIG);
            return;
        }
        s->in_p = (const unsigned char *)s->rx.base + s->rx_off;
        s->in_n = s->rx.len - s->rx_off;
    } else {
        s->in_p = (const unsigned char *)buf->base;
        s->in_n = (size_t)nread;
    }
    if (s->state == ST_HANDSHAKE)
        handshake_step(s);
    else if (s->state == ST_OPEN)
        tls_pump(s);
    if (s->closing)
        return;
    if (stash_input(s) < 0)
        fail_stream(s, KK_ETOOBIG);
    else
        update_reading(s);
}

/* The socket is read during the handshake, and afterwards while the user
 * wants data and no paused ciphertext is waiting (which bounds rx). */
static void update_reading(struct kk_stream *s)
{
    bool want = s->state == ST_HANDSHAKE || (s->state == ST_OPEN && s->reading && s->rx.len == s->rx_off);
    if (want && !s->uv_reading) {
        int rv = uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_tcp_read);
        if (rv == 0)
            s->uv_reading = true;
    } else if (!want && s->uv_reading) {
        uv_read_stop((uv_stream_t *)&s->tcp);
        s->uv_reading = false;
    }
}

void kk_stream_read_stop(struct kk_stream *s)
{
    if (!s || s->closing)
        return;
    s->reading = false;
    update_reading(s);
}

void kk_stream_read_start(struct kk_stream *s)
{
    if (!s || s->closing || s->reading)
        return;
    s->reading = true;
    update_reading(s);
    /* Decrypted or queued input from before the pause: deliver it from the
     * loop, not from inside this call. */
    if (s->tls && s->state == ST_OPEN &&
        (s->rx.len > s->rx_off || mbedtls_ssl_get_bytes_avail(s->ssl) > 0 ||
         mbedtls_ssl_check_pending(s->ssl)))
        uv_timer_start(&s->timer, on_timer, 0, 0);
}

/* ---- writing ----------------------------------------------------------- */

/* Errors found while the user is inside kk_stream_write reach on_read from
 * the loop, so the user's call never re-enters its own callback. */
static void fail_later(struct kk_stream *s, int err)
{
    if (s->deferred_err == 0)
        s->deferred_err = err;
    uv_timer_start(&s->timer, on_timer, 0, 0);
}

static void drain_buf(struct kk_buf *b)
{
    if (b->cap > OUT_KEEP)
        kk_buf_free(b);
    else
        kk_buf_reset(b);
}

static void on_write(uv_write_t *req, int status)
{
    struct kk_stream *s = req->data;
    s->write_active = false;
    drain_buf(&s->fly);
    s->fly_off = 0;
    if (s->closing) {
        if (!s->lingering)
            return;
        if (status < 0) {
            s->lingering = false;
            close_handles(s);
            return;
        }
        flush(s);
        linger_drained(s);
        return;
    }
    if (status < 0) {
        fail_stream(s, status);
        return;
    }
    flush(s);
}

/* Hands queued bytes to the kernel: try_write first (unless the caller just
 * got EAGAIN from it), the rest via uv_write. */
static void flush_ex(struct kk_stream *s, bool try_first)
{
    if ((s->closing && !s->lingering) || s->write_active || s->out.len == s->out_off || !s->tcp_inited)
        return;
    if (s->state != ST_OPEN && s->state != ST_HANDSHAKE)
        return;
    uv_buf_t b;
    if (try_first) {
        b = uv_buf_init(s->out.base + s->out_off, (unsigned)(s->out.len - s->out_off));
        int n = uv_try_write((uv_stream_t *)&s->tcp, &b, 1);
        /* Errors other than EAGAIN resurface from uv_write, asynchronously. */
        if (n > 0) {
            s->out_off += (size_t)n;
            if (s->out_off == s->out.len) {
                drain_buf(&s->out);
                s->out_off = 0;
                return;
            }
        }
    }
    /* The in-flight bytes must not move while new writes append: swap. */
    struct kk_buf tmp = s->fly;
    s->fly = s->out;
    s->fly_off = s->out_off;
    s->out = tmp;
    s->out_off = 0;
    b = uv_buf_init(s->fly.base + s->fly_off, (unsigned)(s->fly.len - s->fly_off));
    s->wreq.data = s;
    int rv = uv_write(&s->wreq, (uv_stream_t *)&s->tcp, &b, 1, on_write);
    if (rv < 0) {
        kk_buf_reset(&s->fly);
        s->fly_off = 0;
        if (s->lingering) {
            s->lingering = false;
            close_handles(s);
            return;
        }
        fail_later(s, rv);
        return;
    }
    s->write_active = true;
}

static void flush(struct kk_stream *s)
{
    flush_ex(s, true);
}

static size_t bufs_total(const uv_buf_t bufs[], unsigned nbufs)
{
    size_t total = 0;
    for (unsigned i = 0; i < nbufs; i++)
        total += bufs[i].len;
    return total;
}

static int append_bufs(struct kk_buf *dst, const uv_buf_t bufs[], unsigned nbufs, size_t skip)
{
    for (unsigned i = 0; i < nbufs; i++) {
        size_t len = bufs[i].len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        int rv = kk_buf_append(dst, bufs[i].base + skip, len - skip);
        if (rv < 0)
            return rv;
        skip = 0;
    }
    return 0;
}

int kk_stream_write(struct kk_stream *s, const uv_buf_t bufs[], unsigned nbufs)
{
    if (!s || s->closing || s->state == ST_FAILED)
        return KK_ECLOSED;
    size_t total = bufs_total(bufs, nbufs);
    if (total == 0)
        return 0;
    if (s->tls && s->state != ST_OPEN) {
        if (total > s->pre.max - s->pre.len)
            return KK_ETOOBIG;
        return append_bufs(&s->pre, bufs, nbufs, 0);
    }
    if (!s->tls) {
        if (total > s->out.max - s->out.len)
            return KK_ETOOBIG;
        size_t done = 0;
        bool tried = false;
        if (s->state == ST_OPEN && !s->write_active && s->out.len == s->out_off) {
            /* Fast path: nothing queued, so the kernel may take the caller's bytes directly. */
            int n = uv_try_write((uv_stream_t *)&s->tcp, bufs, nbufs);
            if (n > 0)
                done = (size_t)n;
            tried = true;
        }
        if (done == total)
            return 0;
        int rv = append_bufs(&s->out, bufs, nbufs, done);
        if (rv < 0)
            return rv;
        flush_ex(s, !tried);
        return 0;
    }
    /* TLS: records are appended to out by bio_send.  Check the cap first so a
     * record is never cut in half (mbedTLS cannot take back a partial write). */
    int exp = mbedtls_ssl_get_record_expansion(s->ssl);
    size_t per = exp > 0 ? (size_t)exp : 256;
    size_t need = total + (total / PLAIN_BUF_SIZE + nbufs + 1) * per;
    if (need > s->out.max - s->out.len)
        return KK_ETOOBIG;
    for (unsigned i = 0; i < nbufs; i++) {
        const unsigned char *p = (const unsigned char *)bufs[i].base;
        size_t left = bufs[i].len;
        while (left > 0) {
            int n = mbedtls_ssl_write(s->ssl, p, left);
            if (n < 0) {
                /* The TLS session is unusable now: report through on_read. */
                fail_later(s, mbed_to_kk(s, n, "write to"));
                return 0;
            }
            p += n;
            left -= (size_t)n;
        }
    }
    flush(s);
    return 0;
}

size_t kk_stream_pending(const struct kk_stream *s)
{
    return (s->out.len - s->out_off) + (s->fly.len - s->fly_off) + s->pre.len;
}

/* ---- connecting -------------------------------------------------------- */

static void on_timer(uv_timer_t *t)
{
    struct kk_stream *s = t->data;
    if (s->closing)
        return;
    if (s->deferred_err) {
        int err = s->deferred_err;
        s->deferred_err = 0;
        fail_stream(s, err);
        return;
    }
    if (s->state == ST_OPEN) {
        /* Deferred pump after kk_stream_read_start. */
        if (!s->tls)
            return;
        if (s->rx.len > s->rx_off) {
            s->in_p = (const unsigned char *)s->rx.base + s->rx_off;
            s->in_n = s->rx.len - s->rx_off;
        } else {
            s->in_n = 0;
        }
        tls_pump(s);
        if (s->closing)
            return;
        if (stash_input(s) < 0)
            fail_stream(s, KK_ETOOBIG);
        else
            update_reading(s);
        return;
    }
    if (s->state == ST_FAILED)
        return;
    static const char *const stage[] = {"resolving", "connecting", "in TLS handshake"};
    KK_WARN(SCOPE, "connect to %s:%u: timed out %s", s->host, s->port,
            s->state <= ST_HANDSHAKE ? stage[s->state] : "");
    fail_connect(s, KK_ETIMEOUT);
}

/* The address in name if it is an IPv4 or IPv6 literal ("[v6]" and a
 * "%zone" suffix accepted): returns 4 or 16 with the bytes in ip, else 0. */
static uint8_t ip_literal(const char *name, uint8_t ip[16])
{
    char tmp[64];
    size_t n = strlen(name);
    if (n >= 2 && name[0] == '[' && name[n - 1] == ']') {
        name++;
        n -= 2;
    }
    if (n == 0 || n >= sizeof(tmp))
        return 0;
    memcpy(tmp, name, n);
    tmp[n] = '\0';
    if (uv_inet_pton(AF_INET, tmp, ip) == 0)
        return 4;
    char *zone = strchr(tmp, '%');
    if (zone)
        *zone = '\0';
    if (uv_inet_pton(AF_INET6, tmp, ip) == 0)
        return 16;
    return 0;
}

/* The IPv4 address inside an IPv4-mapped IPv6 one (::ffff:a.b.c.d), or NULL. */
static const uint8_t *v4_in_v6(const uint8_t *a, size_t len)
{
    static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return len == 16 && memcmp(a, prefix, sizeof(prefix)) == 0 ? a + 12 : NULL;
}

/* Whether the certificate lists addr as a subjectAltName iPAddress.  mbedTLS
 * 2.28 keeps every GeneralName in subject_alt_names with its tag; iPAddress
 * is the primitive context-specific [7], holding the address in network
 * order (RFC 5280 §4.2.1.6).  As in Go's crypto/x509 (kubemq-targets), an
 * IPv4 address and its IPv4-mapped IPv6 form are the same address. */
static bool cert_has_ip(const mbedtls_x509_crt *crt, const uint8_t *addr, size_t len)
{
    if (!(crt->ext_types & MBEDTLS_X509_EXT_SUBJECT_ALT_NAME))
        return false;
    const uint8_t *v4 = len == 4 ? addr : v4_in_v6(addr, len);
    for (const mbedtls_x509_sequence *cur = &crt->subject_alt_names; cur; cur = cur->next) {
        const mbedtls_x509_buf *b = &cur->buf;
        if (b->tag != (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_IP_ADDRESS))
            continue;
        if (b->len == len && memcmp(b->p, addr, len) == 0)
            return true;
        const uint8_t *bv4 = b->len == 4 ? b->p : v4_in_v6(b->p, b->len);
        if (v4 && bv4 && memcmp(v4, bv4, 4) == 0)
            return true;
    }
    return false;
}

/* Verify callback for IP-literal hosts.  mbedTLS 2.28 matches the expected
 * name against dNSName SANs and the CN only, so the name is not given to it
 * (which also keeps the literal out of SNI, RFC 6066 §3); the leaf's IP SANs
 * are checked here instead.  Chain results in *flags are kept as they are:
 * this only adds the name mismatch. */
static int on_verify_ip(void *ctx, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
    struct kk_stream *s = ctx;
    if (depth == 0 && !cert_has_ip(crt, s->vip, s->vip_len)) {
        *flags |= MBEDTLS_X509_BADCERT_CN_MISMATCH;
        s->vip_mismatch = true;
    }
    return 0;
}

static int tls_start(struct kk_stream *s)
{
    struct kk_tls_ctx *c = s->tls;
    const char *name = c->server_name ? c->server_name : s->host;
    int m = mbedtls_ssl_setup(s->ssl, &c->conf);
    if (m == 0) {
        s->vip_len = ip_literal(name, s->vip);
        if (s->vip_len)
            mbedtls_ssl_set_verify(s->ssl, on_verify_ip, s);
        else
            m = mbedtls_ssl_set_hostname(s->ssl, name);
    }
    if (m)
        return mbed_to_kk(s, m, "setup for");
    mbedtls_ssl_set_bio(s->ssl, s, bio_send, bio_recv, NULL);
    if (c->have_session && strcmp(c->session_host, name) == 0)
        s->offered_session = mbedtls_ssl_set_session(s->ssl, &c->session) == 0;
    return 0;
}

static void on_tcp_connect(uv_connect_t *req, int status)
{
    struct kk_stream *s = req->data;
    if (s->closing || s->state != ST_CONNECTING)
        return;
    if (status < 0) {
        s->last_err = status;
        if (s->ai_next) {
            /* Next address: the handle must be closed and re-initialised first;
             * it still counts in refs until on_tcp_closed_retry. */
            s->tcp_inited = false;
            uv_close((uv_handle_t *)&s->tcp, on_tcp_closed_retry);
            return;
        }
        KK_DEBUG(SCOPE, "connect to %s:%u: %s", s->host, s->port, kk_strerror(status));
        fail_connect(s, status);
        return;
    }
    uv_tcp_nodelay(&s->tcp, 1);
    if (s->ai_list) {
        uv_freeaddrinfo(s->ai_list);
        s->ai_list = s->ai_next = NULL;
    }
    if (s->tls) {
        int rv = tls_start(s);
        if (rv < 0) {
            fail_connect(s, rv);
            return;
        }
        s->state = ST_HANDSHAKE;
        update_reading(s);
        handshake_step(s);
        return;
    }
    uv_timer_stop(&s->timer);
    s->state = ST_OPEN;
    update_reading(s);
    flush(s);
    s->cbs.on_connect(s, 0);
}

static int start_tcp(struct kk_stream *s, const struct sockaddr *sa)
{
    int rv = uv_tcp_init(s->loop, &s->tcp);
    if (rv < 0)
        return rv;
    s->tcp.data = s;
    s->tcp_inited = true;
    s->refs++;
    s->creq.data = s;
    return uv_tcp_connect(&s->creq, &s->tcp, sa, on_tcp_connect);
}

/* Tries the remaining addresses in order until one connect starts. */
static void connect_next(struct kk_stream *s)
{
    while (s->ai_next) {
        struct addrinfo *ai = s->ai_next;
        s->ai_next = ai->ai_next;
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        int rv = start_tcp(s, ai->ai_addr);
        if (rv == 0)
            return;
        s->last_err = rv;
        if (s->tcp_inited) {
            s->tcp_inited = false;
            uv_close((uv_handle_t *)&s->tcp, on_tcp_closed_retry);
            return;
        }
    }
    fail_connect(s, s->last_err ? s->last_err : UV_EAI_NONAME);
}

static void on_tcp_closed_retry(uv_handle_t *h)
{
    struct kk_stream *s = h->data;
    s->refs--;
    if (s->closing) {
        maybe_free(s);
        return;
    }
    if (s->state == ST_CONNECTING)
        connect_next(s);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct kk_stream *s = req->data;
    free(s->gai);
    s->gai = NULL;
    s->gai_pending = false;
    s->refs--;
    if (s->closing) {
        if (res)
            uv_freeaddrinfo(res);
        maybe_free(s);
        return;
    }
    if (s->state != ST_RESOLVING) {
        if (res)
            uv_freeaddrinfo(res);
        return;
    }
    if (status < 0) {
        KK_WARN(SCOPE, "resolve %s: %s", s->host, kk_strerror(status));
        fail_connect(s, status);
        return;
    }
    s->ai_list = res;
    s->ai_next = res;
    s->state = ST_CONNECTING;
    connect_next(s);
}

int kk_stream_connect(uv_loop_t *loop, const char *host, uint16_t port, struct kk_tls_ctx *tls,
                      uint32_t connect_timeout_ms, const struct kk_stream_cbs *cbs, void *user,
                      struct kk_stream **out)
{
    int rv = 0;
    *out = NULL;
    if (!loop || !host || !*host || !cbs || !cbs->on_connect || !cbs->on_read || port == 0)
        return KK_EINVAL;
    if (strlen(host) > HOST_MAX)
        return KK_EINVAL;
    size_t hlen = strlen(host);
    struct kk_stream *s = calloc(1, sizeof(*s) + hlen + 1);
    if (!s)
        return KK_ENOMEM;
    if (tls) {
        s->ssl = malloc(sizeof(*s->ssl));
        if (!s->ssl) {
            free(s);
            return KK_ENOMEM;
        }
        mbedtls_ssl_init(s->ssl);
    }
    s->loop = loop;
    s->cbs = *cbs;
    s->user = user;
    s->tls = tls;
    s->port = port;
    s->reading = true;
    memcpy(s->host, host, hlen + 1);
    kk_buf_init(&s->out, OUT_MAX);
    kk_buf_init(&s->fly, OUT_MAX);
    kk_buf_init(&s->pre, OUT_MAX);
    kk_buf_init(&s->rx, RX_MAX);

    rv = uv_timer_init(loop, &s->timer);
    if (rv < 0) {
        if (s->ssl) {
            mbedtls_ssl_free(s->ssl);
            free(s->ssl);
        }
        free(s);
        return rv;
    }
    s->timer.data = s;
    s->refs++;
    if (connect_timeout_ms > 0)
        uv_timer_start(&s->timer, on_timer, connect_timeout_ms, 0);

    /* Numeric addresses skip the thread-pool trip of getaddrinfo. */
    struct sockaddr_storage ss;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) == 0 ||
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) == 0) {
        s->state = ST_CONNECTING;
        rv = start_tcp(s, (struct sockaddr *)&ss);
    } else {
        char service[8];
        snprintf(service, sizeof(service), "%u", port);
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        s->state = ST_RESOLVING;
        s->gai = malloc(sizeof(*s->gai));
        if (!s->gai) {
            rv = KK_ENOMEM;
        } else {
            s->gai->data = s;
            rv = uv_getaddrinfo(loop, s->gai, on_resolved, host, service, &hints);
        }
        if (rv == 0) {
            s->gai_pending = true;
            s->refs++;
        } else {
            free(s->gai);
            s->gai = NULL;
        }
    }
    if (rv < 0) {
        /* Nothing will run: tear down quietly; memory goes in the close callbacks. */
        s->silent = true;
        s->closing = true;
        close_handles(s);
        return rv;
    }
    *out = s;
    return 0;
}

/* ---- accessors --------------------------------------------------------- */

const char *kk_stream_alpn(const struct kk_stream *s)
{
    return s && s->alpn[0] ? s->alpn : NULL;
}

bool kk_stream_is_tls(const struct kk_stream *s)
{
    return s && s->tls;
}

bool kk_stream_tls_resumed(const struct kk_stream *s)
{
    return s && s->resumed;
}

void *kk_stream_user(const struct kk_stream *s)
{
    return s ? s->user : NULL;
}

void kk_stream_set_user(struct kk_stream *s, void *user)
{
    s->user = user;
}

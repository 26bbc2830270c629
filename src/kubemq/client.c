/* KubeMQ client: one HTTP/2 session per connection (nghttp2, memory I/O over
 * kk_stream), gRPC calls as HTTP/2 streams, reconnect and resubscribe.
 *
 * Why it looks like this:
 * - nghttp2 runs with NO_AUTO_WINDOW_UPDATE so a paused subscription stops
 *   acknowledging bytes and the broker's stream window closes (real
 *   backpressure instead of an unbounded buffer here).  Connection-level
 *   bytes are consumed at once so other streams never starve.
 * - Message credit (opts.message_credit): HTTP/2 counts bytes, the cap
 *   counts messages.  Streams start with a zero window; a subscription's
 *   window is moved by hand so that it ends 5 bytes (one gRPC prefix, the
 *   smallest possible message) per unit of credit past the last message
 *   whose prefix has arrived, plus that message's body.  So the broker can
 *   finish writing at most `credit` more messages, whatever their sizes.
 *   credit_scan() walks message boundaries; credit_window() sends the
 *   WINDOW_UPDATE.  Every other stream opens a normal window once its
 *   HEADERS are out (a WINDOW_UPDATE before them would be a protocol error).
 * - Output is coalesced: API calls only mark work and start an idle
 *   handle; input processing flushes right after nghttp2 has seen it.
 *   Either way one kk_stream_write per flush.
 * - User callbacks may re-enter (send a response, unsubscribe, close the
 *   client).  Calls released while callbacks are on the stack are parked on
 *   a zombie list and freed when the stack unwinds (cb_depth).
 * - A GOAWAY connection keeps serving the streams it accepted ("draining")
 *   while a new connection takes every new call.  Unary calls the broker
 *   refused (never processed) are parked and sent once more there.
 * - Keepalive is one timer for all connections, set for the earliest due
 *   PING or PING timeout; reads only move last_rx (no timer call per read).
 * - The hot path does not call malloc once warm: calls and their buffers
 *   are pooled, nghttp2 allocates from a size-class cache (h2mem.c), and a
 *   delivered message is one block (pbarena.c), the single allocation left
 *   per received message.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "grpc_frame.h"
#include "h2mem.h"
#include "pbarena.h"
#include "kk/backoff.h"
#include "kk/buf.h"
#include "kk/err.h"
#include "kk/kubemq.h"
#include "kk/log.h"

#define STREAM_WINDOW (1u << 20)      /* per-stream receive window */
#define CONN_WINDOW (16u << 20)       /* connection receive window */
#define KEEPALIVE_MS (5u * 60 * 1000) /* grpc-go's minimum ping interval */
#define KEEPALIVE_TIMEOUT_MS 20000u
#define BACKOFF_CAP_MS 30000u
#define WBUF_CHUNK (256u << 10) /* write out once this much is collected */
/* Recycled call structs: one unary call per reply, so with hundreds of
 * replies in flight a short list would miss and calloc every time.  Their
 * buffers are kept only within a byte budget (bounded memory after a burst of
 * large messages); past it a recycled call keeps its struct, not its buffers. */
#define FREE_CALLS_MAX 1024
#define KEEP_BUF_MAX (64u << 10)         /* larger call buffers are never kept */
#define FREE_BUF_BUDGET ((size_t)4 << 20) /* buffer bytes kept across free calls */
#define PATH_PREFIX "/kubemq.kubemq/"
/* Unary calls made while no connection is READY wait for the next one,
 * within their deadline and these caps (past them: KK_EBUSY at once). */
#define PARKED_MAX_CALLS 4096u
#define LIVE_UNARY_MAX 16384u /* unary calls in flight per client, parked ones included */
#define PARKED_MAX_BYTES ((size_t)4 << 20)
/* A connection counts as stable (the reconnect backoff starts over) only
 * after it has been READY this long; a broker that closes or GOAWAYs every
 * connection right after SETTINGS then meets a growing backoff, not a storm. */
#define STABLE_MS 10000u

struct link {
    struct link *prev, *next;
};

static void link_init(struct link *l)
{
    l->prev = l->next = l;
}
static bool link_empty(const struct link *h)
{
    return h->next == h;
}
static void link_add(struct link *h, struct link *l)
{
    l->prev = h->prev;
    l->next = h;
    h->prev->next = l;
    h->prev = l;
}
static void link_del(struct link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    link_init(l);
}
#define CONTAINER(p, type, member) ((type *)((char *)(p)-offsetof(type, member)))

enum call_kind { CALL_UNARY, CALL_SUB, CALL_DOWN };

struct conn;

struct call {
    struct link link;    /* conn->calls, or client->zombies */
    struct link dl_link; /* client->deadlines (unary) */
    struct conn *conn;
    int32_t id;
    enum call_kind kind;
    const char *method; /* static string, for a resend */
    bool retried;       /* unary: already resent once after a refusal */
    bool counted;       /* unary: counted in kk_kmq_client.live_unary */
    bool keep_open;     /* bidi: the request side stays open */
    bool canceled;      /* we sent RST_STREAM */
    int err;            /* local verdict (ETOOBIG, EPARSE, ETIMEOUT) */
    struct kk_buf out;  /* framed request bytes not yet given to nghttp2 */
    size_t out_off;
    struct kk_grpc_dec dec;
    struct kk_grpc_resp resp;
    size_t unconsumed; /* stream bytes held while paused */
    /* subscription with message credit: offsets in the stream's DATA bytes */
    bool opened;      /* our HEADERS are out: WINDOW_UPDATE is allowed */
    uint8_t pfx_have; /* bytes of a gRPC prefix seen (0..4) */
    uint8_t pfx[KK_GRPC_HDR_LEN];
    uint64_t rx;       /* bytes received */
    uint64_t body_end; /* where the body of the last announced message ends */
    uint64_t granted;  /* bytes the broker may send in all (window updates) */
    /* unary */
    kk_kmq_unary_cb cb;
    void *cb_arg;
    const ProtobufCMessageDescriptor *reply_desc;
    ProtobufCMessage *reply;
    uint64_t deadline;
    /* owners */
    struct kk_kmq_sub *sub;
    struct kk_kmq_downstream *down;
};

struct conn {
    struct link link; /* client->conns */
    struct kk_kmq_client *c;
    struct kk_stream *stream;
    nghttp2_session *h2;
    struct link calls;
    bool ready, draining, closing;
    bool flushing; /* inside nghttp2_session_mem_send/mem_recv */
    uint64_t last_rx;
    uint64_t ping_at; /* when our unanswered keepalive PING went out */
    bool ping_out;
    uint64_t ready_at;  /* when SETTINGS arrived (READY) */
    struct kk_buf wbuf; /* coalesced output of one flush */
};

struct kk_kmq_client {
    uv_loop_t *loop;
    struct kk_kmq_opts o;
    char *host, *token, *scope;
    char authority[300];
    struct kk_tls_ctx *tls;
    bool tls_owned; /* created here (else borrowed from opts.tls_ctx) */
    void (*on_state)(void *user, enum kk_kmq_state st, int err);
    void *user;
    enum kk_kmq_state state;
    struct conn *cur;
    struct link conns, subs, downs, deadlines, zombies;
    struct link parked; /* unary calls waiting for a READY connection */
    unsigned n_parked;
    unsigned live_unary; /* unary calls not yet ended (on a connection or parked) */
    size_t parked_bytes; /* request bytes held by parked calls */
    unsigned attempt;
    int cb_depth;
    bool drain_pending;
    uv_idle_t idle;
    uv_timer_t reconnect_timer, deadline_timer, keepalive_timer, resub_timer;
    int handles;
    bool closing;  /* kk_kmq_client_close was called */
    bool teardown; /* ... and its deferred teardown has started */
    void (*done)(void *arg);
    void *done_arg;
    struct call *free_calls[FREE_CALLS_MAX];
    unsigned n_free;
    size_t free_buf_bytes; /* buffer capacity held by free_calls */
    struct kk_h2mem h2mem; /* nghttp2's per-call allocations, recycled */
};

struct kk_kmq_sub {
    struct link link;
    struct kk_kmq_client *c;
    Kubemq__Subscribe *req;
    struct kk_kmq_sub_cbs cbs;
    void *user;
    struct call *call;
    bool paused, in_cb, dead, needs_drain;
    bool have_seq;
    uint64_t last_seq;
    unsigned fails;
    /* message credit (opts.message_credit): messages the broker may still
     * start, and messages whose prefix arrived but which are not delivered
     * yet.  Kept across streams: a lost stream's reserved ones return. */
    uint32_t credit;
    uint32_t reserved;
};

struct kk_kmq_downstream {
    struct link link;
    struct kk_kmq_client *c;
    struct kk_kmq_downstream_cbs cbs;
    void *user;
    struct call *call;
    bool in_cb, dead;
    unsigned fails;
};

static void kick(struct kk_kmq_client *c);
static void conn_lost(struct conn *cn, int err);
static void start_connect(struct kk_kmq_client *c);
static void client_finish(struct kk_kmq_client *c);
static void on_handle_closed(uv_handle_t *h);
static void keepalive_arm(struct kk_kmq_client *c);
static void parked_fail(struct kk_kmq_client *c, int err);

/* ------------------------------------------------------------------ calls */

static struct call *call_get(struct kk_kmq_client *c)
{
    struct call *call;

    if (c->n_free) {
        call = c->free_calls[--c->n_free];
        c->free_buf_bytes -= call->out.cap + call->dec.buf.cap;
    } else {
        call = calloc(1, sizeof(*call));
        if (!call)
            return NULL;
        kk_buf_init(&call->out, c->o.max_message_bytes + KK_GRPC_HDR_LEN + STREAM_WINDOW);
        kk_grpc_dec_init(&call->dec, c->o.max_message_bytes,
                         c->o.max_message_bytes + KK_GRPC_HDR_LEN + STREAM_WINDOW + (64u << 10));
    }
    link_init(&call->link);
    link_init(&call->dl_link);
    call->id = -1;
    call->method = NULL;
    call->keep_open = call->canceled = call->retried = call->counted = false;
    call->err = 0;
    call->out_off = 0;
    call->unconsumed = 0;
    call->opened = false;
    call->pfx_have = 0;
    call->rx = call->body_end = call->granted = 0;
    kk_grpc_resp_init(&call->resp);
    call->cb = NULL;
    call->cb_arg = NULL;
    call->reply_desc = NULL;
    call->reply = NULL;
    call->sub = NULL;
    call->down = NULL;
    call->conn = NULL;
    return call;
}

static void call_free(struct kk_kmq_client *c, struct call *call)
{
    if (call->counted) {
        c->live_unary--;
        call->counted = false;
    }
    kk_pb_free(call->reply);
    call->reply = NULL;
    if (c->n_free < FREE_CALLS_MAX && !c->closing) {
        size_t bytes = call->out.cap + call->dec.buf.cap;
        if (call->out.cap > KEEP_BUF_MAX || call->dec.buf.cap > KEEP_BUF_MAX ||
            c->free_buf_bytes + bytes > FREE_BUF_BUDGET) {
            kk_buf_free(&call->out);
            kk_grpc_dec_free(&call->dec); /* the limits stay: reusable as is */
            bytes = 0;
        }
        kk_buf_reset(&call->out);
        kk_grpc_dec_reset(&call->dec);
        c->free_buf_bytes += bytes;
        c->free_calls[c->n_free++] = call;
        return;
    }
    kk_buf_free(&call->out);
    kk_grpc_dec_free(&call->dec);
    free(call);
}

/* Detaches the call from its connection; frees it now or, when user code is
 * on the stack, once it unwinds. */
static void call_release(struct kk_kmq_client *c, struct call *call)
{
    struct conn *cn = call->conn;

    link_del(&call->link);
    link_del(&call->dl_link);
    if (cn && call->id > 0 && cn->h2)
        nghttp2_session_set_stream_user_data(cn->h2, call->id, NULL);
    if (c->cb_depth > 0)
        link_add(&c->zombies, &call->link);
    else
        call_free(c, call);
    if (cn && cn->draining && !cn->closing && link_empty(&cn->calls))
        conn_lost(cn, KK_ECLOSED);
}

static void enter(struct kk_kmq_client *c)
{
    c->cb_depth++;
}

static void leave(struct kk_kmq_client *c)
{
    if (--c->cb_depth > 0)
        return;
    while (!link_empty(&c->zombies)) {
        struct call *call = CONTAINER(c->zombies.next, struct call, link);

        link_del(&call->link);
        call_free(c, call);
    }
}

static void call_cancel(struct call *call, int err)
{
    if (call->canceled)
        return;
    call->canceled = true;
    if (!call->err)
        call->err = err;
    if (call->id > 0 && call->conn->h2)
        nghttp2_submit_rst_stream(call->conn->h2, NGHTTP2_FLAG_NONE, call->id, NGHTTP2_CANCEL);
    kick(call->conn->c);
}

static ssize_t on_data_read(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                            nghttp2_data_source *src, void *user)
{
    struct call *call = src->ptr;
    size_t avail, n;

    if (!call)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    avail = call->out.len - call->out_off;
    if (avail == 0) {
        if (call->keep_open && !call->canceled)
            return NGHTTP2_ERR_DEFERRED;
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
    }
    n = avail < length ? avail : length;
    memcpy(buf, call->out.base + call->out_off, n);
    call->out_off += n;
    if (call->out_off == call->out.len) {
        /* A unary request stays in out: if the broker refuses the stream,
         * the same bytes go out again on the next connection. */
        if (call->kind != CALL_UNARY) {
            kk_buf_reset(&call->out);
            call->out_off = 0;
        }
        if (!call->keep_open)
            *flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return (ssize_t)n;
}

/* Frames msg into call->out (compacting what nghttp2 already took). */
static int call_append(struct call *call, const ProtobufCMessage *msg)
{
    size_t size = protobuf_c_message_get_packed_size(msg);
    uint8_t *p;

    if (size > call->conn->c->o.max_message_bytes)
        return KK_ETOOBIG;
    if (call->out_off) {
        kk_buf_consume(&call->out, call->out_off);
        call->out_off = 0;
    }
    p = (uint8_t *)kk_buf_reserve(&call->out, KK_GRPC_HDR_LEN + size);
    if (!p)
        return KK_ETOOBIG;
    kk_grpc_frame_hdr(p, (uint32_t)size);
    protobuf_c_message_pack(msg, p + KK_GRPC_HDR_LEN);
    kk_buf_commit(&call->out, KK_GRPC_HDR_LEN + size);
    return 0;
}

#define NV(n, v, vl)                                                                                         \
    {                                                                                                        \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl),                                                 \
            NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE                                     \
    }

/* "<n>m" (or "<s>S" past 8 digits): kk_grpc_timeout_format without printf. */
static void fmt_timeout(uint32_t ms, char out[16])
{
    char d[12];
    int n = 0, o = 0;
    char unit = 'm';
    if (ms > 99999999u) {
        ms = (uint32_t)(((uint64_t)ms + 999) / 1000);
        unit = 'S';
    }
    do {
        d[n++] = (char)('0' + ms % 10);
        ms /= 10;
    } while (ms);
    while (n)
        out[o++] = d[--n];
    out[o++] = unit;
    out[o] = '\0';
}

static int call_start(struct conn *cn, struct call *call, const char *method, const ProtobufCMessage *msg,
                      uint32_t timeout_ms)
{
    struct kk_kmq_client *c = cn->c;
    char path[64], tmo[16];
    nghttp2_nv nva[10];
    size_t n = 0;
    nghttp2_data_provider prd;
    int rc;

    call->conn = cn;
    call->method = method;
    if (msg && (rc = call_append(call, msg)) < 0)
        return rc;
    /* Per call, so no snprintf: prefix + method (a constant name), and the
     * grpc-timeout value as kk_grpc_timeout_format would print it. */
    size_t pl = sizeof(PATH_PREFIX) - 1, ml = strnlen(method, sizeof(path) - pl - 1);
    memcpy(path, PATH_PREFIX, pl);
    memcpy(path + pl, method, ml);
    path[pl + ml] = '\0';
    nva[n++] = (nghttp2_nv)NV(":method", "POST", 4);
    nva[n++] = (nghttp2_nv)NV(":scheme", c->o.tls ? "https" : "http", c->o.tls ? 5 : 4);
    nva[n++] = (nghttp2_nv)NV(":path", path, strlen(path));
    nva[n++] = (nghttp2_nv)NV(":authority", c->authority, strlen(c->authority));
    if (timeout_ms) {
        fmt_timeout(timeout_ms, tmo);
        nva[n++] = (nghttp2_nv)NV("grpc-timeout", tmo, strlen(tmo));
    }
    nva[n++] = (nghttp2_nv)NV("content-type", "application/grpc", 16);
    nva[n++] = (nghttp2_nv)NV("te", "trailers", 8);
    nva[n++] = (nghttp2_nv)NV("user-agent", "kubemq-kinesis/0.1", 18);
    if (c->token)
        nva[n++] = (nghttp2_nv)NV("authorization", c->token, strlen(c->token));
    /* path and tmo live on this stack frame: let nghttp2 copy them. */
    nva[2].flags = NGHTTP2_NV_FLAG_NO_COPY_NAME;
    if (timeout_ms)
        nva[4].flags = NGHTTP2_NV_FLAG_NO_COPY_NAME;
    prd.source.ptr = call;
    prd.read_callback = on_data_read;
    call->id = nghttp2_submit_request(cn->h2, NULL, nva, n, &prd, call);
    if (call->id < 0) {
        KK_ERROR(c->scope, "kubemq: submit %s: %s", method, nghttp2_strerror(call->id));
        return KK_EH2;
    }
    link_add(&cn->calls, &call->link);
    kick(c);
    return 0;
}

/* --------------------------------------------------------- subscriptions */

static void sub_free(struct kk_kmq_sub *s)
{
    protobuf_c_message_free_unpacked(&s->req->base, NULL);
    free(s);
}

static void sub_notify(struct kk_kmq_sub *s, bool up, int err)
{
    if (s->c->closing || !s->cbs.on_state)
        return;
    s->in_cb = true;
    s->cbs.on_state(s->user, up, err);
    s->in_cb = false;
    if (s->dead)
        sub_free(s);
}

static void down_notify(struct kk_kmq_downstream *d, bool up, int err)
{
    if (d->c->closing || !d->cbs.on_state)
        return;
    d->in_cb = true;
    d->cbs.on_state(d->user, up, err);
    d->in_cb = false;
    if (d->dead)
        free(d);
}

static int sub_open(struct kk_kmq_sub *s, struct conn *cn)
{
    Kubemq__Subscribe *r = s->req;
    bool requests = r->subscribetypedata == KUBEMQ__SUBSCRIBE__SUBSCRIBE_TYPE__Commands ||
                    r->subscribetypedata == KUBEMQ__SUBSCRIBE__SUBSCRIBE_TYPE__Queries;
    struct call *call;
    int rc;

    if (r->subscribetypedata == KUBEMQ__SUBSCRIBE__SUBSCRIBE_TYPE__EventsStore && s->have_seq) {
        r->eventsstoretypedata = KUBEMQ__SUBSCRIBE__EVENTS_STORE_TYPE__StartAtSequence;
        r->eventsstoretypevalue = (int64_t)(s->last_seq + 1);
    }
    call = call_get(cn->c);
    if (!call)
        return KK_ENOMEM;
    call->kind = CALL_SUB;
    call->sub = s;
    rc = call_start(cn, call, requests ? "SubscribeToRequests" : "SubscribeToEvents", &r->base, 0);
    if (rc < 0) {
        call_free(cn->c, call);
        return rc;
    }
    s->call = call;
    return 0;
}

static int down_open(struct kk_kmq_downstream *d, struct conn *cn)
{
    struct call *call = call_get(cn->c);
    int rc;

    if (!call)
        return KK_ENOMEM;
    call->kind = CALL_DOWN;
    call->keep_open = true; /* requests follow through kk_kmq_downstream_send */
    call->down = d;
    rc = call_start(cn, call, "QueuesDownstream", NULL, 0);
    if (rc < 0) {
        call_free(cn->c, call);
        return rc;
    }
    d->call = call;
    return 0;
}

static void on_resub_timer(uv_timer_t *t);

/* A subscription or downstream lost its stream: retry on this connection
 * after a backoff, or wait for the next READY. */
static void schedule_resub(struct kk_kmq_client *c, unsigned fails)
{
    uint64_t base = c->o.reconnect_interval_ms;

    if (c->closing || uv_is_active((uv_handle_t *)&c->resub_timer))
        return;
    uv_timer_start(&c->resub_timer, on_resub_timer, kk_backoff_full_jitter(base, BACKOFF_CAP_MS, fails), 0);
}

static void open_idle_streams(struct kk_kmq_client *c)
{
    struct link *l;

    if (!c->cur || !c->cur->ready)
        return;
    for (l = c->subs.next; l != &c->subs; l = l->next) {
        struct kk_kmq_sub *s = CONTAINER(l, struct kk_kmq_sub, link);

        if (!s->call && sub_open(s, c->cur) < 0)
            schedule_resub(c, s->fails++);
    }
    for (l = c->downs.next; l != &c->downs; l = l->next) {
        struct kk_kmq_downstream *d = CONTAINER(l, struct kk_kmq_downstream, link);

        if (!d->call && down_open(d, c->cur) < 0)
            schedule_resub(c, d->fails++);
    }
}

static void on_resub_timer(uv_timer_t *t)
{
    open_idle_streams(t->data);
}

/* --------------------------------------------------- call completion */

static void parked_account(struct kk_kmq_client *c, struct call *call)
{
    c->n_parked++;
    c->parked_bytes += call->out.len;
}

static void parked_unaccount(struct kk_kmq_client *c, struct call *call)
{
    c->n_parked--;
    c->parked_bytes -= call->out.len;
}

/* Ends a parked call (it has no connection) with err. */
static void parked_finish(struct kk_kmq_client *c, struct call *call, int err)
{
    kk_kmq_unary_cb cb = call->cb;

    parked_unaccount(c, call);
    link_del(&call->link);
    link_del(&call->dl_link);
    call->cb = NULL;
    enter(c);
    if (cb)
        cb(call->cb_arg, err, -1, "", NULL);
    link_add(&c->zombies, &call->link);
    leave(c);
}

static void parked_fail(struct kk_kmq_client *c, int err)
{
    while (!link_empty(&c->parked))
        parked_finish(c, CONTAINER(c->parked.next, struct call, link), err);
}

/* Sends the parked calls on the current connection, each with what is left
 * of its deadline. */
static void parked_resend(struct kk_kmq_client *c)
{
    uint64_t now = uv_now(c->loop);

    while (!link_empty(&c->parked) && c->cur && c->cur->ready && !c->cur->closing) {
        struct call *call = CONTAINER(c->parked.next, struct call, link);
        uint64_t left = call->deadline > now ? call->deadline - now : 1;

        parked_unaccount(c, call);
        link_del(&call->link);
        if (call_start(c->cur, call, call->method, NULL, (uint32_t)left) < 0) {
            link_add(&c->parked, &call->link); /* parked_finish unlinks it again */
            parked_account(c, call);
            parked_finish(c, call, KK_EH2);
        }
    }
}

/* The broker refused the stream before processing it (GOAWAY below its id,
 * or RST_STREAM REFUSED_STREAM; RFC 9113 §8.7 makes such a request safe to
 * repeat): keep its request bytes and send it once more when a connection
 * is READY, at once if the current one is. */
static void call_park(struct kk_kmq_client *c, struct call *call)
{
    struct conn *cn = call->conn;

    KK_INFO(c->scope, "kubemq: %s refused by the broker; sending it again", call->method);
    link_del(&call->link);
    if (call->id > 0 && cn->h2)
        nghttp2_session_set_stream_user_data(cn->h2, call->id, NULL);
    call->id = -1;
    call->conn = NULL;
    call->retried = true;
    call->opened = false;
    call->out_off = 0;
    kk_grpc_resp_init(&call->resp);
    kk_grpc_dec_reset(&call->dec);
    if (call->reply)
        kk_kmq_free(call->reply);
    call->reply = NULL;
    link_add(&c->parked, &call->link);
    parked_account(c, call);
    if (cn->draining && !cn->closing && link_empty(&cn->calls))
        conn_lost(cn, KK_ECLOSED);
    parked_resend(c);
}

static void call_finish(struct call *call, uint32_t h2err)
{
    struct kk_kmq_client *c = call->conn->c;
    int err, gs = -1;
    const char *gm = "";

    if (call->err) {
        err = call->err;
    } else if (call->canceled) {
        err = KK_ECANCELED;
    } else if (h2err != NGHTTP2_NO_ERROR) {
        err = KK_EH2;
        gm = nghttp2_http2_strerror(h2err);
    } else {
        err = kk_grpc_resp_result(&call->resp, &gs, &gm);
    }
    switch (call->kind) {
    case CALL_UNARY:
        if (call->cb && err == KK_EH2 && h2err == NGHTTP2_REFUSED_STREAM && !call->retried && !c->closing &&
            c->state != KK_KMQ_FAILED) {
            call_park(c, call);
            return;
        }
        if (call->cb) {
            void *reply = err ? NULL : call->reply;
            kk_kmq_unary_cb cb = call->cb;

            if (!err)
                call->reply = NULL;
            call->cb = NULL;
            cb(call->cb_arg, err, gs, gm, reply);
        }
        break;
    case CALL_SUB:
        if (call->sub) {
            struct kk_kmq_sub *s = call->sub;

            s->call = NULL;
            call->sub = NULL;
            s->credit += s->reserved; /* their messages died with the stream */
            s->reserved = 0;
            if (err == KK_EGRPC)
                KK_WARN(c->scope, "kubemq: subscription %s ended: %s %s", s->req->channel,
                        kk_grpc_status_name(gs), gm);
            else
                KK_WARN(c->scope, "kubemq: subscription %s ended: %s", s->req->channel, kk_strerror(err));
            if (c->cur && c->cur->ready) /* else the next READY reopens it */
                schedule_resub(c, s->fails++);
            sub_notify(s, false, err ? err : KK_ECLOSED);
        }
        break;
    case CALL_DOWN:
        if (call->down) {
            struct kk_kmq_downstream *d = call->down;

            d->call = NULL;
            call->down = NULL;
            KK_WARN(c->scope, "kubemq: queue downstream ended: %s %s", kk_strerror(err), gm);
            if (c->cur && c->cur->ready) /* else the next READY reopens it */
                schedule_resub(c, d->fails++);
            down_notify(d, false, err ? err : KK_ECLOSED);
        }
        break;
    }
    call_release(c, call);
}

/* ------------------------------------------------------ nghttp2 callbacks */

static int on_sub_msg(void *arg, const uint8_t *p, size_t n)
{
    struct call *call = arg;
    struct kk_kmq_sub *s = call->sub;
    struct kk_kmq_client *c = call->conn->c;
    const ProtobufCMessageDescriptor *desc;
    ProtobufCMessage *msg;
    bool store;

    if (!s || call->canceled || c->closing)
        return 1;
    if (s->paused)
        return 1;
    store = s->req->subscribetypedata == KUBEMQ__SUBSCRIBE__SUBSCRIBE_TYPE__EventsStore;
    desc = (s->req->subscribetypedata == KUBEMQ__SUBSCRIBE__SUBSCRIBE_TYPE__Commands ||
            s->req->subscribetypedata == KUBEMQ__SUBSCRIBE__SUBSCRIBE_TYPE__Queries)
               ? &kubemq__request__descriptor
               : &kubemq__event_receive__descriptor;
    msg = kk_pb_unpack(desc, p, n);
    if (!msg) {
        KK_ERROR(c->scope, "kubemq: malformed %s on %s (%zu bytes); resetting the stream", desc->short_name,
                 s->req->channel, n);
        call_cancel(call, KK_EPARSE);
        return 1;
    }
    s->fails = 0;
    if (s->reserved)
        s->reserved--; /* before the callback: its owner may grant credit in it */
    if (store) {
        s->last_seq = ((Kubemq__EventReceive *)msg)->sequence;
        s->have_seq = true;
    }
    s->in_cb = true;
    s->cbs.on_message(s->user, msg);
    s->in_cb = false;
    if (s->dead) {
        sub_free(s);
        return 1;
    }
    return (call->sub == NULL || s->paused || call->canceled) ? 1 : 0;
}

static int on_unary_msg(void *arg, const uint8_t *p, size_t n)
{
    struct call *call = arg;

    if (call->reply || call->canceled)
        return 1; /* a unary reply has one message; ignore extras */
    if (!call->reply_desc)
        return 0;
    call->reply = kk_pb_unpack(call->reply_desc, p, n);
    if (!call->reply) {
        KK_ERROR(call->conn->c->scope, "kubemq: malformed %s reply (%zu bytes)", call->reply_desc->short_name,
                 n);
        call_cancel(call, KK_EPARSE);
        return 1;
    }
    return 0;
}

static int on_down_msg(void *arg, const uint8_t *p, size_t n)
{
    struct call *call = arg;
    struct kk_kmq_downstream *d = call->down;
    struct kk_kmq_client *c = call->conn->c;
    Kubemq__QueuesDownstreamResponse *r;

    if (!d || call->canceled || c->closing)
        return 1;
    r = (Kubemq__QueuesDownstreamResponse *)kk_pb_unpack(&kubemq__queues_downstream_response__descriptor, p,
                                                         n);
    if (!r) {
        KK_ERROR(c->scope, "kubemq: malformed QueuesDownstreamResponse (%zu bytes); resetting the stream", n);
        call_cancel(call, KK_EPARSE);
        return 1;
    }
    d->fails = 0;
    d->in_cb = true;
    d->cbs.on_response(d->user, r);
    d->in_cb = false;
    if (d->dead) {
        free(d);
        return 1;
    }
    return (call->down == NULL || call->canceled) ? 1 : 0;
}

static kk_grpc_msg_fn msg_fn(const struct call *call)
{
    return call->kind == CALL_SUB ? on_sub_msg : call->kind == CALL_DOWN ? on_down_msg : on_unary_msg;
}

/* Acknowledges (opens the broker's stream window for) the received bytes of
 * a subscription that are no longer held: while it is paused, every byte
 * still in the decoder (undelivered messages, a partial tail) stays
 * unacknowledged, so the window bounds what the broker can push beyond what
 * was delivered.  Crediting held bytes on resume instead let each
 * pause/resume cycle (one freed slot each under overload) admit another
 * window, and the held buffer grew to its 100 MiB limit. */
static void sub_credit(struct call *call)
{
    size_t keep;

    if (call->canceled || !call->unconsumed || !call->conn->h2 || call->conn->c->o.message_credit)
        return;
    keep = call->sub && call->sub->paused ? kk_grpc_dec_pending(&call->dec) : 0;
    if (call->unconsumed > keep) {
        nghttp2_session_consume_stream(call->conn->h2, call->id, call->unconsumed - keep);
        call->unconsumed = keep;
    }
}

/* Message credit: moves the stream's window end to 5 bytes per unit of
 * credit past the first message not yet announced (see the top of the
 * file).  The end only grows: announcing a message adds its body and
 * takes 5 bytes of credit, so it can never move back. */
static void credit_window(struct call *call)
{
    struct kk_kmq_sub *s = call->sub;
    uint64_t start, end, inc;

    /* Paused: nothing is delivered, so granting the bodies of announced
     * messages would let credit x message size pile up here. */
    if (!s || s->paused || !call->opened || call->canceled || !call->conn->h2)
        return;
    start = call->rx < call->body_end ? call->body_end : call->rx - call->pfx_have;
    end = start + (uint64_t)KK_GRPC_HDR_LEN * s->credit;
    if (end <= call->granted)
        return;
    inc = end - call->granted;
    if (inc > (uint64_t)INT32_MAX - (call->granted - call->rx))
        inc = (uint64_t)INT32_MAX - (call->granted - call->rx); /* HTTP/2's largest window */
    if (inc && nghttp2_submit_window_update(call->conn->h2, NGHTTP2_FLAG_NONE, call->id, (int32_t)inc) == 0)
        call->granted += inc;
}

/* Message credit: walks the gRPC prefixes in p[0..n) (the decoder sees the
 * same bytes next).  A message is announced (takes one credit, becomes
 * reserved until delivered) when its 5-byte prefix is complete. */
static void credit_scan(struct call *call, const uint8_t *p, size_t n)
{
    struct kk_kmq_sub *s = call->sub;

    while (n) {
        if (call->rx < call->body_end) {
            uint64_t k = call->body_end - call->rx;

            if (k > n)
                k = n;
            call->rx += k;
            p += k;
            n -= (size_t)k;
            continue;
        }
        call->pfx[call->pfx_have++] = *p++;
        call->rx++;
        n--;
        if (call->pfx_have == KK_GRPC_HDR_LEN) {
            call->pfx_have = 0;
            call->body_end = call->rx + (((uint64_t)call->pfx[1] << 24) | ((uint64_t)call->pfx[2] << 16) |
                                         ((uint64_t)call->pfx[3] << 8) | call->pfx[4]);
            if (s) {
                if (s->credit) /* 0 only if the broker overran its window */
                    s->credit--;
                s->reserved++;
            }
        }
    }
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                         void *user)
{
    struct conn *cn = user;
    struct call *call = nghttp2_session_get_stream_user_data(h2, id);
    bool sub, hold;
    int rc;

    nghttp2_session_consume_connection(h2, len);
    if (!call || call->canceled)
        return 0;
    sub = call->kind == CALL_SUB;
    hold = sub && call->sub && call->sub->paused;
    if (sub && cn->c->o.message_credit)
        credit_scan(call, data, len); /* the window moves in credit_window, not by consuming */
    else if (sub)
        call->unconsumed += len;
    else
        nghttp2_session_consume_stream(h2, id, len);
    rc = kk_grpc_dec_feed(&call->dec, data, len, hold, msg_fn(call), call);
    if (rc < 0) {
        KK_ERROR(cn->c->scope, "kubemq: stream %d: %s", id, kk_strerror(rc));
        call_cancel(call, rc);
    } else if (sub && cn->c->o.message_credit) {
        credit_window(call);
    } else if (sub) {
        sub_credit(call);
    }
    return 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user)
{
    struct call *call;

    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    call = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (call)
        kk_grpc_resp_header(&call->resp, (const char *)name, namelen, (const char *)value, valuelen);
    return 0;
}

static void conn_ready(struct conn *cn)
{
    struct kk_kmq_client *c = cn->c;

    cn->ready = true;
    cn->ready_at = uv_now(c->loop);
    if (c->cur != cn)
        return;
    c->state = KK_KMQ_READY;
    open_idle_streams(c);
    parked_resend(c);
    if (c->on_state && !c->closing)
        c->on_state(c->user, KK_KMQ_READY, 0);
}

static void set_state(struct kk_kmq_client *c, enum kk_kmq_state st, int err)
{
    if (c->state == st)
        return;
    c->state = st;
    if (c->on_state && !c->closing)
        c->on_state(c->user, st, err);
}

static void on_reconnect_timer(uv_timer_t *t)
{
    start_connect(t->data);
}

/* The current connection cn is going away: the backoff starts over only if
 * it had been READY for STABLE_MS (not at READY itself: a broker that drops
 * every connection right after SETTINGS must meet a growing backoff). */
static void note_conn_end(struct kk_kmq_client *c, const struct conn *cn)
{
    if (cn->ready_at && uv_now(c->loop) - cn->ready_at >= STABLE_MS)
        c->attempt = 0;
}

/* The current connection is gone: back off and reconnect (or give up). */
static void schedule_reconnect(struct kk_kmq_client *c, int err)
{
    uint64_t delay;

    if (c->closing)
        return;
    if (!c->o.auto_reconnect || (c->o.max_reconnects && c->attempt >= c->o.max_reconnects)) {
        KK_ERROR(c->scope, "kubemq: %s:%u unreachable, giving up: %s", c->host, c->o.port, kk_strerror(err));
        uv_timer_stop(&c->resub_timer);
        parked_fail(c, err);
        set_state(c, KK_KMQ_FAILED, err);
        return;
    }
    delay = kk_backoff_full_jitter(c->o.reconnect_interval_ms, BACKOFF_CAP_MS, c->attempt++);
    KK_WARN(c->scope, "kubemq: %s:%u: %s; reconnecting in %llu ms (attempt %u)", c->host, c->o.port,
            kk_strerror(err), (unsigned long long)delay, c->attempt);
    set_state(c, KK_KMQ_RECONNECTING, err);
    uv_timer_start(&c->reconnect_timer, on_reconnect_timer, delay, 0);
}

static void conn_goaway(struct conn *cn, int32_t last_id, uint32_t code)
{
    struct kk_kmq_client *c = cn->c;

    KK_WARN(c->scope, "kubemq: GOAWAY (%s, last stream %d); new calls go on a new connection",
            nghttp2_http2_strerror(code), last_id);
    cn->draining = true;
    if (c->cur == cn) {
        c->cur = NULL;
        note_conn_end(c, cn);
        if (!c->o.auto_reconnect || code != NGHTTP2_NO_ERROR || c->attempt > 0) {
            /* An error GOAWAY (too_many_pings, overload, ...) or one after a
             * short-lived connection: back off as for any loss (FAILED when
             * reconnecting is off). */
            schedule_reconnect(c, KK_ECLOSED);
        } else {
            /* A graceful GOAWAY of a stable connection: reconnect now, but
             * count it, so a repeat within STABLE_MS backs off. */
            c->attempt++;
            set_state(c, KK_KMQ_RECONNECTING, KK_ECLOSED);
            if (!c->closing)
                uv_timer_start(&c->reconnect_timer, on_reconnect_timer, 0, 0);
        }
    }
    if (link_empty(&cn->calls))
        conn_lost(cn, KK_ECLOSED); /* nothing left to finish here */
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *user)
{
    struct conn *cn = user;
    struct call *call;

    switch (frame->hd.type) {
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK) && !cn->ready)
            conn_ready(cn);
        return 0;
    case NGHTTP2_GOAWAY:
        conn_goaway(cn, frame->goaway.last_stream_id, frame->goaway.error_code);
        return 0;
    case NGHTTP2_HEADERS:
    case NGHTTP2_DATA:
        break;
    default:
        return 0;
    }
    call = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (!call)
        return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_RESPONSE &&
        !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && call->resp.http_status == 200) {
        if (call->kind == CALL_SUB && call->sub)
            sub_notify(call->sub, true, 0);
    }
    /* The server finished a bidi stream while our side is open: close ours
     * so the stream completes with the trailers we have. */
    if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && call->keep_open && !call->canceled) {
        call->keep_open = false;
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
    }
    return 0;
}

/* A bidi stream is usable once its HEADERS are out: grpc-js answers with
 * HEADERS only when it first writes, which for a poll stream is after our
 * first request. */
static int on_frame_send(nghttp2_session *h2, const nghttp2_frame *frame, void *user)
{
    struct conn *cn = user;
    struct call *call;

    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    call = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (!call)
        return 0;
    if (cn->c->o.message_credit && !call->opened) {
        /* Streams start with a zero window under message credit. */
        call->opened = true;
        if (call->kind == CALL_SUB)
            credit_window(call);
        else if (!call->canceled)
            nghttp2_submit_window_update(h2, NGHTTP2_FLAG_NONE, frame->hd.stream_id, STREAM_WINDOW);
    }
    if (call->kind == CALL_DOWN && call->down && !call->canceled)
        down_notify(call->down, true, 0);
    return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t id, uint32_t error_code, void *user)
{
    struct call *call = nghttp2_session_get_stream_user_data(h2, id);

    if (call)
        call_finish(call, error_code);
    return 0;
}

/* ------------------------------------------------------------ I/O, flush */

static void conn_flush(struct conn *cn)
{
    struct kk_kmq_client *c = cn->c;
    const uint8_t *data;
    ssize_t n;
    uv_buf_t b;
    int rc = 0;

    /* mem_send runs stream-close callbacks, and user code there may ask
     * for a flush or close the client: never re-enter. */
    if (!cn->h2 || cn->closing || cn->flushing)
        return;
    cn->flushing = true;
    enter(c);
    kk_buf_reset(&cn->wbuf);
    for (;;) {
        n = nghttp2_session_mem_send(cn->h2, &data);
        if (n < 0) {
            rc = KK_EH2;
            break;
        }
        if (n == 0 || cn->closing)
            break;
        if (cn->wbuf.len && cn->wbuf.len + (size_t)n > WBUF_CHUNK) {
            b = uv_buf_init(cn->wbuf.base, (unsigned)cn->wbuf.len);
            rc = kk_stream_write(cn->stream, &b, 1);
            kk_buf_reset(&cn->wbuf);
            if (rc < 0)
                break;
        }
        rc = kk_buf_append(&cn->wbuf, data, (size_t)n);
        if (rc < 0) { /* a single chunk larger than the write buffer: send it as is */
            b = uv_buf_init((char *)data, (unsigned)n);
            rc = kk_stream_write(cn->stream, &b, 1);
            if (rc < 0)
                break;
        }
    }
    if (rc == 0 && cn->wbuf.len && !cn->closing) {
        b = uv_buf_init(cn->wbuf.base, (unsigned)cn->wbuf.len);
        rc = kk_stream_write(cn->stream, &b, 1);
    }
    kk_buf_reset(&cn->wbuf);
    cn->flushing = false;
    if (rc < 0)
        conn_lost(cn, rc);
    leave(c);
}

static void drain_resumed(struct kk_kmq_client *c)
{
    struct link *l;

    c->drain_pending = false;
    enter(c);
    /* Restart the walk after each delivery: a callback may unsubscribe any
     * subscription.  Only resumed ones are flagged, so this stays short. */
    for (l = c->subs.next; l != &c->subs; l = l->next) {
        struct kk_kmq_sub *s = CONTAINER(l, struct kk_kmq_sub, link);
        struct call *call = s->call;
        int rc;

        if (!s->needs_drain || s->paused || !call)
            continue;
        s->needs_drain = false;
        rc = kk_grpc_dec_drain(&call->dec, on_sub_msg, call);
        if (rc < 0)
            call_cancel(call, rc);
        else
            sub_credit(call);
        if (c->closing)
            break;
        l = &c->subs;
    }
    leave(c);
}

static void on_idle(uv_idle_t *h)
{
    struct kk_kmq_client *c = h->data;
    struct link *l, *next;

    uv_idle_stop(h);
    if (c->drain_pending)
        drain_resumed(c);
    for (l = c->conns.next; l != &c->conns; l = next) {
        next = l->next;
        conn_flush(CONTAINER(l, struct conn, link));
    }
}

static void kick(struct kk_kmq_client *c)
{
    if (!c->closing)
        uv_idle_start(&c->idle, on_idle);
}

static void on_read(struct kk_stream *st, const char *data, ssize_t n)
{
    struct conn *cn = kk_stream_user(st);
    struct kk_kmq_client *c = cn->c;
    ssize_t rv;

    if (cn->closing)
        return;
    if (n < 0) {
        conn_lost(cn, n == UV_EOF ? KK_ECLOSED : (int)n);
        return;
    }
    cn->last_rx = uv_now(c->loop);
    cn->ping_out = false; /* anything received proves the peer alive */
    enter(c);
    cn->flushing = true; /* nghttp2 must not be re-entered from its callbacks */
    rv = nghttp2_session_mem_recv(cn->h2, (const uint8_t *)data, (size_t)n);
    cn->flushing = false;
    leave(c);
    if (cn->closing)
        return;
    if (rv < 0) {
        KK_ERROR(c->scope, "kubemq: HTTP/2 error from %s:%u: %s", c->host, c->o.port,
                 nghttp2_strerror((int)rv));
        conn_flush(cn); /* nghttp2 queued a GOAWAY */
        conn_lost(cn, KK_EH2);
        return;
    }
    conn_flush(cn);
}

static void on_ping_connect(void *arg, int status, int gs, const char *gm, void *reply)
{
    struct kk_kmq_client *c = arg;
    Kubemq__PingResult *p = reply;

    if (status == 0 && p)
        KK_INFO(c->scope, "kubemq: connected to %s:%u (broker host %s, version %s)", c->host, c->o.port,
                p->host, p->version);
    else if (status != KK_ECANCELED)
        KK_WARN(c->scope, "kubemq: ping %s:%u failed: %s %s", c->host, c->o.port,
                status == KK_EGRPC ? kk_grpc_status_name(gs) : kk_strerror(status), gm ? gm : "");
    kk_kmq_free(reply);
}

static int unary_on(struct conn *cn, const char *method, const ProtobufCMessage *msg,
                    const ProtobufCMessageDescriptor *reply_desc, kk_kmq_unary_cb cb, void *arg);

static int session_new(struct conn *cn)
{
    nghttp2_session_callbacks *cbs = NULL;
    nghttp2_option *opt = NULL;
    nghttp2_settings_entry iv[3] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, cn->c->o.message_credit ? 0 : STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 64u << 10},
    };
    int rc = KK_ENOMEM;

    if (nghttp2_session_callbacks_new(&cbs) || nghttp2_option_new(&opt))
        goto out;
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    if (nghttp2_session_client_new3(&cn->h2, cbs, cn, opt, &cn->c->h2mem.mem))
        goto out;
    rc = KK_EH2;
    if (nghttp2_submit_settings(cn->h2, NGHTTP2_FLAG_NONE, iv, 3) ||
        nghttp2_session_set_local_window_size(cn->h2, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW))
        goto out;
    rc = 0;
out:
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    return rc;
}

static void on_connect(struct kk_stream *st, int status)
{
    struct conn *cn = kk_stream_user(st);
    struct kk_kmq_client *c = cn->c;
    Kubemq__Empty empty = KUBEMQ__EMPTY__INIT;
    const char *alpn;
    int rc = status;

    if (cn->closing)
        return;
    if (rc < 0)
        goto out;
    if (c->o.tls) {
        alpn = kk_stream_alpn(st);
        if (!alpn || strcmp(alpn, "h2") != 0) {
            KK_ERROR(c->scope, "kubemq: %s:%u did not negotiate HTTP/2 (ALPN %s)", c->host, c->o.port,
                     alpn ? alpn : "none");
            rc = KK_EH2;
            goto out;
        }
    }
    rc = session_new(cn);
    if (rc < 0)
        goto out;
    cn->last_rx = uv_now(c->loop);
    keepalive_arm(c);
    /* Ping once per connection: logs which broker we reached. */
    unary_on(cn, "Ping", &empty.base, &kubemq__ping_result__descriptor, on_ping_connect, c);
    conn_flush(cn);
out:
    if (rc < 0)
        conn_lost(cn, rc);
}

static void on_stream_closed(struct kk_stream *st)
{
    struct conn *cn = kk_stream_user(st);
    struct kk_kmq_client *c = cn->c;

    if (cn->h2)
        nghttp2_session_del(cn->h2);
    link_del(&cn->link);
    kk_buf_free(&cn->wbuf);
    free(cn);
    /* The stream may still touch the TLS context after this callback, so
     * the client is freed from a later close callback, not from here. */
    if (c->teardown && link_empty(&c->conns))
        uv_close((uv_handle_t *)&c->idle, on_handle_closed);
}

/* Fails every call of the connection and closes it.  Idempotent. */
static void conn_lost(struct conn *cn, int err)
{
    struct kk_kmq_client *c = cn->c;

    if (cn->closing)
        return;
    cn->closing = true;
    cn->ready = false; /* its streams wait for the next READY */
    enter(c);
    while (!link_empty(&cn->calls)) {
        struct call *call = CONTAINER(cn->calls.next, struct call, link);

        if (!call->err)
            call->err = c->closing ? KK_ECANCELED : err;
        call_finish(call, NGHTTP2_NO_ERROR);
    }
    leave(c);
    if (cn->stream)
        kk_stream_close(cn->stream);
    if (c->cur == cn) {
        c->cur = NULL;
        note_conn_end(c, cn);
        schedule_reconnect(c, err);
    }
}

static void start_connect(struct kk_kmq_client *c)
{
    static const struct kk_stream_cbs cbs = {on_connect, on_read, on_stream_closed};
    struct conn *cn;
    int rc;

    if (c->closing)
        return;
    cn = calloc(1, sizeof(*cn));
    if (!cn) {
        schedule_reconnect(c, KK_ENOMEM);
        return;
    }
    cn->c = c;
    link_init(&cn->calls);
    kk_buf_init(&cn->wbuf, WBUF_CHUNK);
    rc = kk_stream_connect(c->loop, c->host, c->o.port, c->tls, c->o.connect_timeout_ms, &cbs, cn,
                           &cn->stream);
    if (rc < 0) {
        free(cn);
        schedule_reconnect(c, rc);
        return;
    }
    link_add(&c->conns, &cn->link);
    c->cur = cn;
}

/* ---------------------------------------------------------------- timers */

static void on_deadline(uv_timer_t *t)
{
    struct kk_kmq_client *c = t->data;
    uint64_t now = uv_now(c->loop);

    while (!link_empty(&c->deadlines)) {
        struct call *call = CONTAINER(c->deadlines.next, struct call, dl_link);

        if (call->deadline > now)
            break;
        if (!call->conn) { /* parked: never reached a connection again */
            parked_finish(c, call, KK_ETIMEOUT);
            continue;
        }
        link_del(&call->dl_link);
        call_cancel(call, KK_ETIMEOUT);
    }
    if (!link_empty(&c->deadlines)) {
        struct call *head = CONTAINER(c->deadlines.next, struct call, dl_link);

        uv_timer_start(&c->deadline_timer, on_deadline, head->deadline - now, 0);
    }
}

/* When a connection next needs attention: its PING is overdue, or it has
 * been idle long enough for one. */
static uint64_t keepalive_due(const struct kk_kmq_client *c, const struct conn *cn)
{
    return cn->ping_out ? cn->ping_at + c->o.keepalive_timeout_ms : cn->last_rx + c->o.keepalive_idle_ms;
}

static void on_keepalive(uv_timer_t *t)
{
    struct kk_kmq_client *c = t->data;
    uint64_t now = uv_now(c->loop);
    struct link *l, *next;

    for (l = c->conns.next; l != &c->conns; l = next) {
        struct conn *cn = CONTAINER(l, struct conn, link);

        next = l->next;
        if (!cn->h2 || cn->closing || keepalive_due(c, cn) > now)
            continue;
        if (cn->ping_out) {
            /* Nothing at all came back: a dead peer or a black-holed path
             * that TCP would only notice after many minutes. */
            KK_WARN(c->scope, "kubemq: %s:%u: no answer to PING in %u ms; closing the connection", c->host,
                    c->o.port, c->o.keepalive_timeout_ms);
            conn_lost(cn, KK_ETIMEOUT);
            continue;
        }
        if (nghttp2_submit_ping(cn->h2, NGHTTP2_FLAG_NONE, NULL) == 0) {
            cn->ping_out = true;
            cn->ping_at = now;
            kick(c);
        }
    }
    keepalive_arm(c);
}

/* One timer for every connection, set for the earliest due time; reads only
 * move last_rx, and a timer that fires early just re-arms itself. */
static void keepalive_arm(struct kk_kmq_client *c)
{
    uint64_t now = uv_now(c->loop), next = UINT64_MAX;
    struct link *l;

    if (c->closing)
        return;
    for (l = c->conns.next; l != &c->conns; l = l->next) {
        struct conn *cn = CONTAINER(l, struct conn, link);
        uint64_t due;

        if (!cn->h2 || cn->closing)
            continue;
        due = keepalive_due(c, cn);
        if (due < next)
            next = due;
    }
    if (next == UINT64_MAX)
        uv_timer_stop(&c->keepalive_timer);
    else
        uv_timer_start(&c->keepalive_timer, on_keepalive, next > now ? next - now : 0, 0);
}

/* ------------------------------------------------------------ public API */

/* An explicit option wins; KK_TEST_KEEPALIVE_MS lets tests shorten both
 * intervals of clients built by code they do not control (sources). */
static void keepalive_defaults(struct kk_kmq_opts *o)
{
    const char *env = getenv("KK_TEST_KEEPALIVE_MS");
    long v = env ? strtol(env, NULL, 10) : 0;

    if (v > 0 && v <= 3600000) {
        if (!o->keepalive_idle_ms)
            o->keepalive_idle_ms = (uint32_t)v;
        if (!o->keepalive_timeout_ms)
            o->keepalive_timeout_ms = (uint32_t)v;
    }
    if (!o->keepalive_idle_ms)
        o->keepalive_idle_ms = KEEPALIVE_MS;
    if (!o->keepalive_timeout_ms)
        o->keepalive_timeout_ms = KEEPALIVE_TIMEOUT_MS;
}

int kk_kmq_client_new(uv_loop_t *loop, const struct kk_kmq_opts *opts,
                      void (*on_state)(void *user, enum kk_kmq_state st, int err), void *user,
                      struct kk_kmq_client **out)
{
    struct kk_kmq_client *c;
    struct kk_tls_opts topts;
    char errbuf[256];
    int rc = KK_ENOMEM;

    if (!opts->host || !*opts->host || !opts->port)
        return KK_EINVAL;
    c = calloc(1, sizeof(*c));
    if (!c)
        return KK_ENOMEM;
    c->loop = loop;
    c->o = *opts;
    kk_h2mem_init(&c->h2mem);
    c->on_state = on_state;
    c->user = user;
    if (!c->o.reconnect_interval_ms)
        c->o.reconnect_interval_ms = 500;
    if (!c->o.connect_timeout_ms)
        c->o.connect_timeout_ms = 5000;
    if (!c->o.max_message_bytes)
        c->o.max_message_bytes = 100u << 20;
    if (!c->o.call_timeout_ms)
        c->o.call_timeout_ms = 30000;
    keepalive_defaults(&c->o);
    link_init(&c->conns);
    link_init(&c->subs);
    link_init(&c->downs);
    link_init(&c->deadlines);
    link_init(&c->zombies);
    link_init(&c->parked);
    c->host = strdup(opts->host);
    c->scope = strdup(opts->log_scope ? opts->log_scope : "kubemq");
    if (!c->host || !c->scope)
        goto out;
    if (opts->auth_token && *opts->auth_token && !(c->token = strdup(opts->auth_token)))
        goto out;
    c->o.host = c->host;
    c->o.log_scope = c->scope;
    c->o.auth_token = c->token;
    c->o.tls_ctx = NULL; /* c->tls holds it */
    snprintf(c->authority, sizeof(c->authority), "%s:%u", c->host, c->o.port);
    if (c->o.tls && opts->tls_ctx) {
        c->tls = opts->tls_ctx; /* shared; the owner keeps it alive past our close */
    } else if (c->o.tls) {
        topts = opts->tls_opts;
        topts.alpn = "h2";
        if (!topts.server_name)
            topts.server_name = c->host;
        rc = kk_tls_ctx_new(&topts, &c->tls, errbuf, sizeof(errbuf));
        if (rc < 0) {
            KK_ERROR(c->scope, "kubemq: TLS setup: %s", errbuf);
            goto out;
        }
        c->tls_owned = true;
    }
    uv_idle_init(loop, &c->idle);
    uv_timer_init(loop, &c->reconnect_timer);
    uv_timer_init(loop, &c->deadline_timer);
    uv_timer_init(loop, &c->keepalive_timer);
    uv_timer_init(loop, &c->resub_timer);
    c->idle.data = c->reconnect_timer.data = c->deadline_timer.data = c->keepalive_timer.data =
        c->resub_timer.data = c;
    c->handles = 5;
    c->state = KK_KMQ_CONNECTING;
    start_connect(c);
    *out = c;
    return 0;
out:
    free(c->host);
    free(c->scope);
    free(c->token);
    free(c);
    return rc;
}

enum kk_kmq_state kk_kmq_client_state(const struct kk_kmq_client *c)
{
    return c->state;
}

static void client_finish(struct kk_kmq_client *c)
{
    void (*done)(void *arg) = c->done;
    void *arg = c->done_arg;

    if (c->handles > 0 || !link_empty(&c->conns))
        return;
    while (!link_empty(&c->subs)) {
        struct kk_kmq_sub *s = CONTAINER(c->subs.next, struct kk_kmq_sub, link);

        link_del(&s->link);
        sub_free(s);
    }
    while (!link_empty(&c->downs)) {
        struct kk_kmq_downstream *d = CONTAINER(c->downs.next, struct kk_kmq_downstream, link);

        link_del(&d->link);
        free(d);
    }
    while (c->n_free) {
        struct call *call = c->free_calls[--c->n_free];

        kk_buf_free(&call->out);
        kk_grpc_dec_free(&call->dec);
        free(call);
    }
    if (c->tls && c->tls_owned)
        kk_tls_ctx_free(c->tls);
    kk_h2mem_free(&c->h2mem);
    free(c->host);
    free(c->scope);
    free(c->token);
    free(c);
    if (done)
        done(arg);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct kk_kmq_client *c = h->data;

    c->handles--;
    client_finish(c);
}

/* Teardown runs from the loop, never inside nghttp2 or user callbacks: what
 * those callbacks queued (a last settle or response) is flushed first. */
static void on_close_idle(uv_idle_t *h)
{
    struct kk_kmq_client *c = h->data;
    struct link *l, *next;

    uv_idle_stop(h);
    c->teardown = true;
    parked_fail(c, KK_ECANCELED);
    for (l = c->conns.next; l != &c->conns; l = next) {
        struct conn *cn = CONTAINER(l, struct conn, link);

        next = l->next;
        conn_flush(cn);
        conn_lost(cn, KK_ECANCELED);
    }
    if (link_empty(&c->conns))
        uv_close((uv_handle_t *)&c->idle, on_handle_closed);
    uv_close((uv_handle_t *)&c->reconnect_timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->deadline_timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->keepalive_timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->resub_timer, on_handle_closed);
}

void kk_kmq_client_close(struct kk_kmq_client *c, void (*done)(void *arg), void *arg)
{
    if (c->closing)
        return;
    c->closing = true;
    c->done = done;
    c->done_arg = arg;
    c->cur = NULL;
    uv_timer_stop(&c->reconnect_timer);
    uv_timer_stop(&c->resub_timer);
    uv_idle_stop(&c->idle); /* uv_idle_start keeps the old callback of an active handle */
    uv_idle_start(&c->idle, on_close_idle);
}

void kk_kmq_free(void *msg)
{
    kk_pb_free(msg);
}

/* Deadlines are kept sorted; with one timeout for every call, new ones go
 * at the tail, so the walk back is O(1). */
static void deadline_add(struct kk_kmq_client *c, struct call *call)
{
    struct link *l;

    call->deadline = uv_now(c->loop) + c->o.call_timeout_ms;
    for (l = c->deadlines.prev; l != &c->deadlines; l = l->prev)
        if (CONTAINER(l, struct call, dl_link)->deadline <= call->deadline)
            break;
    link_add(l->next, &call->dl_link);
    if (c->deadlines.next == &call->dl_link)
        uv_timer_start(&c->deadline_timer, on_deadline, c->o.call_timeout_ms, 0);
}

static int unary_on(struct conn *cn, const char *method, const ProtobufCMessage *msg,
                    const ProtobufCMessageDescriptor *reply_desc, kk_kmq_unary_cb cb, void *arg)
{
    struct kk_kmq_client *c = cn->c;
    struct call *call = call_get(c);
    int rc;

    if (!call)
        return KK_ENOMEM;
    call->counted = true;
    c->live_unary++;
    call->kind = CALL_UNARY;
    call->cb = cb;
    call->cb_arg = arg;
    call->reply_desc = reply_desc;
    rc = call_start(cn, call, method, msg, c->o.call_timeout_ms);
    if (rc < 0) {
        call_free(c, call);
        return rc;
    }
    deadline_add(c, call);
    return 0;
}

/* No READY connection (connecting, reconnecting, or just after a GOAWAY):
 * the request is framed now and waits on the parked list for the next READY
 * connection (parked_resend), within its deadline.  A reply to a query or
 * command produced during a reconnect thus still reaches its sender. */
static int unary_park(struct kk_kmq_client *c, const char *method, const ProtobufCMessage *msg,
                      const ProtobufCMessageDescriptor *reply_desc, kk_kmq_unary_cb cb, void *arg)
{
    size_t size = protobuf_c_message_get_packed_size(msg);
    struct call *call;
    uint8_t *p;

    if (size > c->o.max_message_bytes)
        return KK_ETOOBIG;
    if (c->n_parked >= PARKED_MAX_CALLS || c->parked_bytes + KK_GRPC_HDR_LEN + size > PARKED_MAX_BYTES)
        return KK_EBUSY;
    call = call_get(c);
    if (!call)
        return KK_ENOMEM;
    call->counted = true;
    c->live_unary++;
    p = (uint8_t *)kk_buf_reserve(&call->out, KK_GRPC_HDR_LEN + size);
    if (!p) {
        call_free(c, call);
        return KK_ENOMEM;
    }
    kk_grpc_frame_hdr(p, (uint32_t)size);
    protobuf_c_message_pack(msg, p + KK_GRPC_HDR_LEN);
    kk_buf_commit(&call->out, KK_GRPC_HDR_LEN + size);
    call->kind = CALL_UNARY;
    call->method = method;
    call->cb = cb;
    call->cb_arg = arg;
    call->reply_desc = reply_desc;
    link_add(&c->parked, &call->link);
    parked_account(c, call);
    deadline_add(c, call);
    return 0;
}

static int unary(struct kk_kmq_client *c, const char *method, const ProtobufCMessage *msg,
                 const ProtobufCMessageDescriptor *reply_desc, kk_kmq_unary_cb cb, void *arg)
{
    if (c->closing)
        return KK_ESHUTDOWN;
    /* Every unary call holds its request until the broker answers: a broker
     * that stops answering while keeping the connection must not make them
     * pile up without bound (the deadline alone bounds them only in time). */
    if (c->live_unary >= LIVE_UNARY_MAX)
        return KK_EBUSY;
    if (c->cur && c->cur->ready && c->state == KK_KMQ_READY)
        return unary_on(c->cur, method, msg, reply_desc, cb, arg);
    if (c->state == KK_KMQ_FAILED)
        return KK_ECLOSED;
    return unary_park(c, method, msg, reply_desc, cb, arg);
}

int kk_kmq_ping(struct kk_kmq_client *c, kk_kmq_unary_cb cb, void *arg)
{
    Kubemq__Empty empty = KUBEMQ__EMPTY__INIT;

    return unary(c, "Ping", &empty.base, &kubemq__ping_result__descriptor, cb, arg);
}

int kk_kmq_send_response(struct kk_kmq_client *c, const Kubemq__Response *r, kk_kmq_unary_cb cb, void *arg)
{
    return unary(c, "SendResponse", &r->base, NULL, cb, arg);
}

int kk_kmq_send_event(struct kk_kmq_client *c, const Kubemq__Event *e, kk_kmq_unary_cb cb, void *arg)
{
    return unary(c, "SendEvent", &e->base, &kubemq__result__descriptor, cb, arg);
}

int kk_kmq_send_queue_message(struct kk_kmq_client *c, const Kubemq__QueueMessage *m, kk_kmq_unary_cb cb,
                              void *arg)
{
    return unary(c, "SendQueueMessage", &m->base, &kubemq__send_queue_message_result__descriptor, cb, arg);
}

int kk_kmq_subscribe(struct kk_kmq_client *c, const Kubemq__Subscribe *sub, const struct kk_kmq_sub_cbs *cbs,
                     void *user, struct kk_kmq_sub **out)
{
    struct kk_kmq_sub *s;
    size_t size;
    uint8_t *tmp;

    if (c->closing)
        return KK_ESHUTDOWN;
    if (!cbs || !cbs->on_message)
        return KK_EINVAL;
    s = calloc(1, sizeof(*s));
    if (!s)
        return KK_ENOMEM;
    /* Deep copy through the wire form: the copy owns every string. */
    size = protobuf_c_message_get_packed_size(&sub->base);
    tmp = malloc(size ? size : 1);
    if (!tmp) {
        free(s);
        return KK_ENOMEM;
    }
    protobuf_c_message_pack(&sub->base, tmp);
    s->req = kubemq__subscribe__unpack(NULL, size, tmp);
    free(tmp);
    if (!s->req) {
        free(s);
        return KK_ENOMEM;
    }
    s->c = c;
    s->cbs = *cbs;
    s->user = user;
    link_add(&c->subs, &s->link);
    if (c->cur && c->cur->ready && sub_open(s, c->cur) < 0)
        schedule_resub(c, s->fails++);
    *out = s;
    return 0;
}

void kk_kmq_sub_pause(struct kk_kmq_sub *s)
{
    s->paused = true;
}

void kk_kmq_sub_resume(struct kk_kmq_sub *s)
{
    struct kk_kmq_client *c = s->c;

    if (!s->paused)
        return;
    s->paused = false;
    if (s->call) {
        struct call *call = s->call;

        /* Held bytes are acknowledged as the drain delivers them (sub_credit);
         * under message credit the window frozen by the pause moves on. */
        credit_window(call);
        if (kk_grpc_dec_pending(&call->dec)) {
            s->needs_drain = true;
            c->drain_pending = true;
        } else {
            sub_credit(call);
        }
    }
    kick(c);
}

void kk_kmq_sub_add_credit(struct kk_kmq_sub *s, uint32_t n)
{
    if (!n || !s->c->o.message_credit)
        return;
    s->credit = n > UINT32_MAX - s->credit ? UINT32_MAX : s->credit + n;
    if (s->call) {
        credit_window(s->call);
        kick(s->c);
    }
}

uint32_t kk_kmq_sub_outstanding(const struct kk_kmq_sub *s)
{
    return s->credit + s->reserved;
}

size_t kk_kmq_sub_buffered(const struct kk_kmq_sub *s)
{
    return s->call ? kk_grpc_dec_pending(&s->call->dec) : 0;
}

void kk_kmq_unsubscribe(struct kk_kmq_sub *s)
{
    link_del(&s->link);
    if (s->call) {
        s->call->sub = NULL;
        call_cancel(s->call, KK_ECANCELED);
        s->call = NULL;
    }
    if (s->in_cb)
        s->dead = true;
    else
        sub_free(s);
}

int kk_kmq_downstream_open(struct kk_kmq_client *c, const struct kk_kmq_downstream_cbs *cbs, void *user,
                           struct kk_kmq_downstream **out)
{
    struct kk_kmq_downstream *d;

    if (c->closing)
        return KK_ESHUTDOWN;
    if (!cbs || !cbs->on_response)
        return KK_EINVAL;
    d = calloc(1, sizeof(*d));
    if (!d)
        return KK_ENOMEM;
    d->c = c;
    d->cbs = *cbs;
    d->user = user;
    link_add(&c->downs, &d->link);
    if (c->cur && c->cur->ready && down_open(d, c->cur) < 0)
        schedule_resub(c, d->fails++);
    *out = d;
    return 0;
}

int kk_kmq_downstream_send(struct kk_kmq_downstream *d, const Kubemq__QueuesDownstreamRequest *req)
{
    struct call *call = d->call;
    int rc;

    if (!call || call->canceled || !call->conn->h2)
        return KK_ECLOSED;
    rc = call_append(call, &req->base);
    if (rc < 0)
        return rc;
    nghttp2_session_resume_data(call->conn->h2, call->id);
    kick(d->c);
    return 0;
}

void kk_kmq_downstream_close(struct kk_kmq_downstream *d)
{
    struct call *call = d->call;

    link_del(&d->link);
    if (call) {
        /* Half-close after the queued requests (settles in flight still
         * reach the broker); the broker then ends the stream and returns
         * unsettled messages to the queue. */
        call->down = NULL;
        call->keep_open = false;
        if (call->conn->h2 && !call->canceled)
            nghttp2_session_resume_data(call->conn->h2, call->id);
        kick(d->c);
        d->call = NULL;
    }
    if (d->in_cb)
        d->dead = true;
    else
        free(d);
}

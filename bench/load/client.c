/* `client` mode: load a real KubeMQ broker (and the gateway behind it) as a
 * KubeMQ client: unary SendRequest (query/command), SendEvent (events,
 * events-store) or SendQueueMessage (queue) over one h2c connection,
 * closed loop (--inflight) or open loop (--rate).  Latency is call start
 * (or intended start) to the reply message. */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h2.h"
#include "kk/clock.h"
#include "kk/err.h"
#include "kubemq.pb-c.h"
#include "load.h"

#define RING (1u << 16)

enum ckind { C_QUERY, C_COMMAND, C_EVENTS, C_EVENTS_STORE, C_QUEUE };

struct cpend {
    uint64_t t_us;
    uint8_t live;
};

struct client {
    const struct load_opts *o;
    enum ckind kind;
    struct h2conn conn;
    bool connected, conn_closed, stopping, gen_done;
    uv_timer_t tick, progress;
    uv_signal_t sig_int, sig_term;
    char *body;
    size_t body_len;
    struct cpend *ring;
    uint64_t next_seq, tail, limit, t0_us, stop_gen_ms, deadline_ms;
    struct load_stats st;
    int rc;
};

static uint64_t now_us(void)
{
    return uv_hrtime() / 1000u;
}
static size_t pack_req(const void *m, uint8_t *d)
{
    return kubemq__request__pack(m, d);
}
static size_t pack_ev(const void *m, uint8_t *d)
{
    return kubemq__event__pack(m, d);
}
static size_t pack_qm(const void *m, uint8_t *d)
{
    return kubemq__queue_message__pack(m, d);
}

static void done(struct client *c, uint64_t seq, int err)
{
    struct cpend *p = &c->ring[seq & (RING - 1)];
    if (seq < c->tail || seq >= c->next_seq || !p->live)
        return;
    p->live = 0;
    if (err) {
        c->st.errors++;
        c->st.err[err]++;
    } else {
        uint64_t t = now_us();
        c->st.ok++;
        hist_record(&c->st.lat, t > p->t_us ? t - p->t_us : 0);
    }
    while (c->tail < c->next_seq && !c->ring[c->tail & (RING - 1)].live)
        c->tail++;
}

static void on_message(void *user, struct h2stream *st, const uint8_t *msg, size_t len)
{
    struct client *c = user;
    uint64_t seq = (uint64_t)(uintptr_t)st->user;
    int err = 0;
    switch (c->kind) {
    case C_QUERY:
    case C_COMMAND: {
        Kubemq__Response *r = kubemq__response__unpack(NULL, len, msg);
        if (!r)
            err = LERR_BAD_REPLY;
        else if (r->error && r->error[0])
            err = c->kind == C_COMMAND ? LERR_NOT_EXECUTED : LERR_IS_ERROR;
        else if (c->kind == C_COMMAND && !r->executed)
            err = LERR_NOT_EXECUTED;
        else if (c->kind == C_QUERY &&
                 (!r->body.data || !memmem(r->body.data, r->body.len, "\"is_error\":false", 16)))
            err = LERR_IS_ERROR;
        if (r)
            kubemq__response__free_unpacked(r, NULL);
        break;
    }
    case C_EVENTS:
    case C_EVENTS_STORE: {
        Kubemq__Result *r = kubemq__result__unpack(NULL, len, msg);
        err = !r ? LERR_BAD_REPLY : (!r->sent || (r->error && r->error[0])) ? LERR_IS_ERROR : 0;
        if (r)
            kubemq__result__free_unpacked(r, NULL);
        break;
    }
    case C_QUEUE: {
        Kubemq__SendQueueMessageResult *r = kubemq__send_queue_message_result__unpack(NULL, len, msg);
        err = !r ? LERR_BAD_REPLY : r->iserror ? LERR_IS_ERROR : 0;
        if (r)
            kubemq__send_queue_message_result__free_unpacked(r, NULL);
        break;
    }
    }
    st->user = (void *)(uintptr_t)UINT64_MAX; /* answered */
    done(c, seq, err);
}

static void on_stream_close(void *user, struct h2stream *st, uint32_t code)
{
    struct client *c = user;
    uint64_t seq = (uint64_t)(uintptr_t)st->user;
    if (seq != UINT64_MAX)
        done(c, seq, code ? LERR_TRANSPORT : st->grpc_status > 0 ? LERR_GRPC : LERR_BAD_REPLY);
}

static void on_conn_close(void *user, struct h2conn *conn)
{
    struct client *c = user;
    c->conn_closed = true;
}

static const struct h2_cbs cbs = {NULL, on_message, NULL, on_stream_close, on_conn_close};

static int send_one(struct client *c, uint64_t when)
{
    uint64_t seq = c->next_seq;
    char id[24];
    snprintf(id, sizeof(id), "%" PRIu64, seq);
    ProtobufCBinaryData body = {c->body_len, (uint8_t *)c->body};
    const char *path;
    struct h2stream *st;
    int rv;
    if (c->kind == C_QUERY || c->kind == C_COMMAND) {
        path = "/kubemq.kubemq/SendRequest";
        Kubemq__Request r = KUBEMQ__REQUEST__INIT;
        r.requestid = id;
        r.requesttypedata = c->kind == C_QUERY ? KUBEMQ__REQUEST__REQUEST_TYPE__Query
                                               : KUBEMQ__REQUEST__REQUEST_TYPE__Command;
        r.clientid = "kubemq-kinesis-load";
        r.channel = (char *)c->o->channel;
        r.body = body;
        r.timeout = (int32_t)c->o->timeout_ms;
        st = h2_client_open(&c->conn, path, c->o->timeout_ms, true, (void *)(uintptr_t)seq);
        if (!st)
            return KK_ECLOSED;
        rv = h2_queue_msg(st, &r, kubemq__request__get_packed_size(&r), pack_req);
    } else if (c->kind == C_QUEUE) {
        Kubemq__QueueMessage m = KUBEMQ__QUEUE_MESSAGE__INIT;
        m.messageid = id;
        m.clientid = "kubemq-kinesis-load";
        m.channel = (char *)c->o->channel;
        m.body = body;
        st = h2_client_open(&c->conn, "/kubemq.kubemq/SendQueueMessage", c->o->timeout_ms, true,
                            (void *)(uintptr_t)seq);
        if (!st)
            return KK_ECLOSED;
        rv = h2_queue_msg(st, &m, kubemq__queue_message__get_packed_size(&m), pack_qm);
    } else {
        Kubemq__Event e = KUBEMQ__EVENT__INIT;
        e.eventid = id;
        e.clientid = "kubemq-kinesis-load";
        e.channel = (char *)c->o->channel;
        e.body = body;
        e.store = c->kind == C_EVENTS_STORE;
        st = h2_client_open(&c->conn, "/kubemq.kubemq/SendEvent", c->o->timeout_ms, true,
                            (void *)(uintptr_t)seq);
        if (!st)
            return KK_ECLOSED;
        rv = h2_queue_msg(st, &e, kubemq__event__get_packed_size(&e), pack_ev);
    }
    c->ring[seq & (RING - 1)] = (struct cpend){when, 1};
    c->next_seq++;
    c->st.sent++;
    if (rv != 0)
        done(c, seq, LERR_TRANSPORT);
    return 0;
}

static void finish(struct client *c);

static void generate(struct client *c)
{
    if (!c->connected || c->gen_done || c->stopping)
        return;
    uint64_t nowms = kk_mono_ms();
    if ((c->limit && c->next_seq >= c->limit) || (c->stop_gen_ms && nowms >= c->stop_gen_ms)) {
        c->gen_done = true;
        return;
    }
    uint64_t t = now_us();
    for (unsigned budget = 4096; budget; budget--) {
        if ((c->limit && c->next_seq >= c->limit) || c->next_seq - c->tail >= RING - 1)
            break;
        uint64_t when = t;
        if (c->o->rate > 0) {
            when = c->t0_us + (uint64_t)((double)c->next_seq * 1e6 / c->o->rate);
            if (when > t)
                break;
        } else if (c->next_seq - c->tail >= c->o->inflight) {
            break;
        }
        if (send_one(c, when) != 0)
            break;
    }
    h2_flush(&c->conn);
}

static void on_ready(struct h2conn *conn, int status)
{
    struct client *c = conn->user;
    if (status != 0) {
        fprintf(stderr, "connect %s: %s\n", c->o->address, uv_strerror(status));
        c->rc = 3;
        finish(c);
        return;
    }
    c->connected = true;
    c->t0_us = now_us();
    c->st.t_start_ms = kk_mono_ms();
    if (c->o->duration_s > 0)
        c->stop_gen_ms = c->st.t_start_ms + (uint64_t)(c->o->duration_s * 1000);
    generate(c);
}

static void on_closed(uv_handle_t *h)
{
    (void)h;
}

static void finish(struct client *c)
{
    if (c->stopping)
        return;
    c->stopping = true;
    c->st.t_end_ms = kk_mono_ms();
    for (uint64_t s = c->tail; s < c->next_seq; s++)
        if (c->ring[s & (RING - 1)].live) {
            c->ring[s & (RING - 1)].live = 0;
            c->st.errors++;
            c->st.err[LERR_TIMEOUT]++;
        }
    uv_close((uv_handle_t *)&c->tick, on_closed);
    uv_close((uv_handle_t *)&c->progress, on_closed);
    uv_close((uv_handle_t *)&c->sig_int, on_closed);
    uv_close((uv_handle_t *)&c->sig_term, on_closed);
    if (!c->conn_closed)
        h2_close(&c->conn);
}

static void on_tick(uv_timer_t *t)
{
    struct client *c = t->data;
    if (c->conn_closed && !c->stopping) {
        fprintf(stderr, "connection to %s lost\n", c->o->address);
        c->rc = c->connected ? 1 : 3;
        finish(c);
        return;
    }
    uint64_t nowms = kk_mono_ms();
    generate(c);
    if (c->gen_done && c->next_seq == c->tail)
        finish(c);
    else if (c->gen_done && !c->deadline_ms)
        c->deadline_ms = nowms + c->o->timeout_ms + 1000;
    else if (c->deadline_ms && nowms >= c->deadline_ms)
        finish(c);
}

static void on_progress(uv_timer_t *t)
{
    struct client *c = t->data;
    if (c->connected)
        report_progress(c->o, &c->st, kk_mono_ms());
}

static void on_signal(uv_signal_t *s, int signum)
{
    finish(s->data);
}

int run_client(const struct load_opts *o)
{
    struct client *c = calloc(1, sizeof(*c));
    int rc = 0;
    if (!c)
        return 2;
    c->o = o;
    static const char *const kinds[] = {"query", "command", "events", "events-store", "queue"};
    c->kind = (enum ckind)99;
    for (int i = 0; i < 5; i++)
        if (strcmp(o->kind, kinds[i]) == 0)
            c->kind = (enum ckind)i;
    char host[256];
    const char *colon = o->address ? strrchr(o->address, ':') : NULL;
    if ((int)c->kind == 99 || !colon || (size_t)(colon - o->address) >= sizeof(host)) {
        fprintf(stderr,
                "client needs --address host:port and --kind query|command|events|events-store|queue\n");
        free(c);
        return 2;
    }
    memcpy(host, o->address, (size_t)(colon - o->address));
    host[colon - o->address] = 0;
    uint16_t port = (uint16_t)atoi(colon + 1);

    hist_init(&c->st.lat);
    c->ring = calloc(RING, sizeof(*c->ring));
    if (!c->ring || build_request_body(o, 0, &c->body, &c->body_len) != 0) {
        rc = 2;
        goto out;
    }
    c->limit = o->requests;
    if (!c->limit && o->duration_s <= 0)
        c->limit = 1000;
    c->st.cpu_start_s = o->pid > 0 ? proc_cpu_s(o->pid) : -1;

    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_timer_init(&loop, &c->tick);
    c->tick.data = c;
    uv_timer_init(&loop, &c->progress);
    c->progress.data = c;
    uv_signal_init(&loop, &c->sig_int);
    c->sig_int.data = c;
    uv_signal_init(&loop, &c->sig_term);
    c->sig_term.data = c;
    uv_timer_start(&c->tick, on_tick, 1, 1);
    uv_timer_start(&c->progress, on_progress, 1000, 1000);
    uv_signal_start(&c->sig_int, on_signal, SIGINT);
    uv_signal_start(&c->sig_term, on_signal, SIGTERM);
    int rv = h2_connect(&loop, &c->conn, host, port, &cbs, c, on_ready);
    if (rv != 0) {
        fprintf(stderr, "connect %s: %s\n", o->address, uv_strerror(rv));
        c->rc = 3;
        c->conn_closed = true;
        finish(c);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0)
        fprintf(stderr, "warning: loop not closed cleanly\n");
    h2_pool_free();
    if (c->connected && report_final(o, &c->st, NULL) != 0 && !c->rc)
        c->rc = 1;
    rc = c->rc ? c->rc : (c->st.errors ? 1 : 0);
out:
    free(c->body);
    free(c->ring);
    free(c);
    return rc;
}

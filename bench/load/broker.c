/* `broker` mode: a KubeMQ broker for the gateway under test.
 *
 * The gateway subscribes (SubscribeToRequests, SubscribeToEvents or
 * QueuesDownstream); we push generated requests to it, closed loop
 * (--inflight) or open loop (--rate, latency from the intended send time),
 * and time each one until its SendResponse (or queue settle) arrives.
 * Pending requests live in a ring indexed by sequence number, so matching a
 * reply and finding the oldest outstanding request are O(1).
 */
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

#define RING (1u << 16)        /* max outstanding requests */
#define SUB_OUT_CAP (8u << 20) /* bytes queued per subscription before we wait */
#define MAX_SUBS 64
#define MAX_TXN 4096

enum kind { K_QUERY, K_COMMAND, K_EVENTS, K_EVENTS_STORE, K_QUEUE };

struct pend {
    uint64_t t_us; /* send (closed loop) or intended send (open loop) time */
    uint8_t live;
};

struct txn { /* one queue poll answer, settled by AckAll/AckRange/NAck* */
    uint64_t first_seq;
    uint32_t n;
    uint8_t used;
};

struct broker {
    uv_loop_t *loop;
    const struct load_opts *o;
    struct load_opts oc; /* o points here; pid filled in from --pid-file */
    enum kind kind;
    uv_tcp_t listener;
    uv_timer_t tick, progress;
    uv_signal_t sig_int, sig_term;
    struct h2conn *conns;
    struct h2stream *subs[MAX_SUBS];
    unsigned n_subs, rr;
    struct h2stream *poll_st; /* queue: stream with a pending Get */
    char poll_reqid[64];
    int32_t poll_max;
    uint64_t poll_deadline_ms;
    /* generation */
    char **bodies;
    size_t *body_len;
    uint32_t n_bodies;
    uint64_t next_seq, tail, limit;
    struct hist send_lag; /* open loop: actual - intended send time, us (the broker's own lateness) */
    uint64_t q_next; /* queue: next seq to deliver (q_next..next_seq are ready) */
    struct pend *ring;
    struct txn txns[MAX_TXN];
    uint64_t next_txn;
    uint64_t t0_us, stop_gen_ms, deadline_ms, wait_until_ms;
    /* --warmup: replies to requests below count_from are not counted (UINT64_MAX while warming up) */
    uint64_t warm_end_ms, count_from;
    bool subscribed, stopping, generating_done, closed;
    struct load_stats st;
    int rc;
};

static uint64_t now_us(void)
{
    return uv_hrtime() / 1000u;
}

static size_t pack_request(const void *m, uint8_t *d)
{
    return kubemq__request__pack(m, d);
}
static size_t pack_event(const void *m, uint8_t *d)
{
    return kubemq__event_receive__pack(m, d);
}
static size_t pack_ping(const void *m, uint8_t *d)
{
    return kubemq__ping_result__pack(m, d);
}
static size_t pack_result(const void *m, uint8_t *d)
{
    return kubemq__result__pack(m, d);
}
static size_t pack_qres(const void *m, uint8_t *d)
{
    return kubemq__send_queue_message_result__pack(m, d);
}
static size_t pack_ds(const void *m, uint8_t *d)
{
    return kubemq__queues_downstream_response__pack(m, d);
}

static uint64_t outstanding(const struct broker *b)
{
    return b->next_seq - b->tail;
}

static void advance_tail(struct broker *b)
{
    while (b->tail < b->next_seq && !b->ring[b->tail & (RING - 1)].live)
        b->tail++;
}

static void complete(struct broker *b, uint64_t seq, int err)
{
    if (seq >= b->next_seq || seq < b->tail || !b->ring[seq & (RING - 1)].live) {
        b->st.errors++;
        b->st.err[LERR_BAD_REPLY]++;
        return;
    }
    struct pend *p = &b->ring[seq & (RING - 1)];
    p->live = 0;
    if (seq < b->count_from) {
        /* sent during the warm-up */
    } else if (err < 0) {
        b->st.errors++;
        b->st.err[-err - 1]++;
    } else {
        uint64_t t = now_us();
        b->st.ok++;
        if (b->kind != K_EVENTS && b->kind != K_EVENTS_STORE) /* no reply, no latency */
            hist_record(&b->st.lat, t > p->t_us ? t - p->t_us : 0);
    }
    advance_tail(b);
}

/* ---- request generation --------------------------------------------------------- */
static int build_bodies(struct broker *b)
{
    b->n_bodies = b->o->partition_keys ? b->o->partition_keys : 1;
    b->bodies = calloc(b->n_bodies, sizeof(char *));
    b->body_len = calloc(b->n_bodies, sizeof(size_t));
    if (!b->bodies || !b->body_len)
        return KK_ENOMEM;
    for (uint32_t k = 0; k < b->n_bodies; k++) {
        int rc = build_request_body(b->o, k, &b->bodies[k], &b->body_len[k]);
        if (rc)
            return rc;
    }
    return 0;
}

static int push_one(struct broker *b, uint64_t seq, uint64_t t_us)
{
    char id[24];
    snprintf(id, sizeof(id), "%" PRIu64, seq);
    uint32_t k = (uint32_t)(seq % b->n_bodies);
    ProtobufCBinaryData body = {b->body_len[k], (uint8_t *)b->bodies[k]};
    int rv = 0;
    if (b->kind == K_QUEUE) {
        /* queued here; delivered by the next Get */
    } else if (b->kind == K_QUERY || b->kind == K_COMMAND) {
        Kubemq__Request r = KUBEMQ__REQUEST__INIT;
        r.requestid = id;
        r.requesttypedata = b->kind == K_QUERY ? KUBEMQ__REQUEST__REQUEST_TYPE__Query
                                               : KUBEMQ__REQUEST__REQUEST_TYPE__Command;
        r.clientid = "kubemq-kinesis-load";
        r.channel = (char *)b->o->channel;
        r.body = body;
        r.replychannel = "_load.reply";
        r.timeout = (int32_t)b->o->timeout_ms;
        struct h2stream *st = b->subs[b->rr++ % b->n_subs];
        rv = h2_queue_msg(st, &r, kubemq__request__get_packed_size(&r), pack_request);
        if (rv == 0)
            h2_server_respond(st);
    } else {
        Kubemq__EventReceive e = KUBEMQ__EVENT_RECEIVE__INIT;
        e.eventid = id;
        e.channel = (char *)b->o->channel;
        e.body = body;
        e.timestamp = kk_wall_ms() * 1000000;
        if (b->kind == K_EVENTS_STORE)
            e.sequence = seq + 1;
        struct h2stream *st = b->subs[b->rr++ % b->n_subs];
        rv = h2_queue_msg(st, &e, kubemq__event_receive__get_packed_size(&e), pack_event);
        if (rv == 0)
            h2_server_respond(st);
    }
    if (rv != 0)
        return rv;
    b->ring[seq & (RING - 1)] = (struct pend){t_us, 1};
    b->next_seq++;
    b->st.sent++;
    if (b->kind == K_EVENTS || b->kind == K_EVENTS_STORE)
        complete(b, seq, 0); /* no reply exists: done once handed to the stream */
    return 0;
}

static bool subs_full(const struct broker *b)
{
    for (unsigned i = 0; i < b->n_subs; i++)
        if (h2_out_pending(b->subs[i]) < SUB_OUT_CAP)
            return false;
    return true;
}

static void serve_poll(struct broker *b);

/* The run starts at the first subscription: CPU is counted from here. */
static void run_started(struct broker *b)
{
    b->subscribed = true;
    b->t0_us = now_us();
    b->st.t_start_ms = kk_mono_ms();
    uint64_t warm_ms = (uint64_t)(b->o->warmup_s * 1000);
    if (warm_ms) {
        b->warm_end_ms = b->st.t_start_ms + warm_ms;
        b->count_from = UINT64_MAX;
    }
    if (b->o->duration_s > 0)
        b->stop_gen_ms = b->st.t_start_ms + warm_ms + (uint64_t)(b->o->duration_s * 1000);
    if (b->oc.pid_file && b->oc.pid <= 0)
        b->oc.pid = read_pid_file(b->oc.pid_file);
    b->st.cpu_start_s = b->oc.pid > 0 ? proc_cpu_s(b->oc.pid) : -1;
}

/* End of --warmup (connections set up, TLS handshakes done): the counts,
 * latencies, elapsed time and gateway CPU start over from here; requests
 * still outstanding from the warm-up are not counted when they complete. */
static void end_warmup(struct broker *b, uint64_t nowms)
{
    b->warm_end_ms = 0;
    b->count_from = b->next_seq;
    b->st.sent = b->st.ok = b->st.errors = 0;
    memset(b->st.err, 0, sizeof(b->st.err));
    hist_init(&b->st.lat);
    hist_init(&b->send_lag);
    b->st.t_start_ms = nowms;
    b->st.cpu_start_s = b->oc.pid > 0 ? proc_cpu_s(b->oc.pid) : -1;
}

static void generate(struct broker *b)
{
    if (!b->subscribed || b->stopping)
        return;
    uint64_t nowms = kk_mono_ms();
    if (b->warm_end_ms && nowms >= b->warm_end_ms)
        end_warmup(b, nowms);
    if (!b->generating_done &&
        ((b->limit && b->next_seq >= b->limit) || (b->stop_gen_ms && nowms >= b->stop_gen_ms)))
        b->generating_done = true;
    uint64_t t = now_us();
    uint64_t budget = b->generating_done || (b->kind != K_QUEUE && b->n_subs == 0) ? 0 : 4096;
    while (budget--) { /* bounded per turn: keep the loop responsive */
        if (b->limit && b->next_seq >= b->limit)
            break;
        if (outstanding(b) >= RING - 1)
            break;
        uint64_t when;
        if (b->o->rate > 0) {
            when = b->t0_us + (uint64_t)((double)b->next_seq * 1e6 / b->o->rate);
            if (when > t)
                break;
        } else {
            uint64_t cap = b->kind == K_EVENTS || b->kind == K_EVENTS_STORE ? RING - 1 : b->o->inflight;
            if (outstanding(b) >= cap)
                break;
            when = t;
        }
        if (b->kind != K_QUEUE && subs_full(b))
            break;
        if (push_one(b, b->next_seq, when) != 0)
            break;
        if (b->o->rate > 0 && b->next_seq > b->count_from)
            hist_record(&b->send_lag, t - when);
    }
    if (b->kind == K_QUEUE)
        serve_poll(b); /* also after generation ended: the rest is still to deliver */
    for (struct h2conn *c = b->conns; c; c = c->next)
        h2_flush(c);
}

/* Events have no reply: they are done once written to the gateway. */
static bool subs_drained(const struct broker *b)
{
    for (unsigned i = 0; i < b->n_subs; i++)
        if (h2_out_pending(b->subs[i]))
            return false;
    return true;
}

/* ---- queue: QueuesDownstream ---------------------------------------------------------- */
static void answer_poll(struct broker *b, uint32_t n)
{
    struct h2stream *st = b->poll_st;
    b->poll_st = NULL;
    Kubemq__QueuesDownstreamResponse r = KUBEMQ__QUEUES_DOWNSTREAM_RESPONSE__INIT;
    char txid[32];
    uint64_t tn = b->next_txn++;
    snprintf(txid, sizeof(txid), "t%" PRIu64, tn);
    r.transactionid = txid;
    r.refrequestid = b->poll_reqid;
    r.requesttypedata = KUBEMQ__QUEUES_DOWNSTREAM_REQUEST_TYPE__Get;
    Kubemq__QueueMessage *msgs = calloc(n ? n : 1, sizeof(*msgs));
    Kubemq__QueueMessage **pm = calloc(n ? n : 1, sizeof(*pm));
    Kubemq__QueueMessageAttributes *attrs = calloc(n ? n : 1, sizeof(*attrs));
    char(*ids)[24] = calloc(n ? n : 1, sizeof(*ids));
    if (!msgs || !pm || !attrs || !ids)
        goto out;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t seq = b->q_next + i;
        kubemq__queue_message__init(&msgs[i]);
        kubemq__queue_message_attributes__init(&attrs[i]);
        snprintf(ids[i], sizeof(ids[i]), "%" PRIu64, seq);
        uint32_t k = (uint32_t)(seq % b->n_bodies);
        msgs[i].messageid = ids[i];
        msgs[i].channel = (char *)b->o->channel;
        msgs[i].body = (ProtobufCBinaryData){b->body_len[k], (uint8_t *)b->bodies[k]};
        attrs[i].sequence = seq + 1; /* queue sequences start at 1 */
        attrs[i].receivecount = 1;
        msgs[i].attributes = &attrs[i];
        pm[i] = &msgs[i];
    }
    r.n_messages = n;
    r.messages = pm;
    struct txn *tx = &b->txns[tn % MAX_TXN];
    *tx = (struct txn){b->q_next, n, 1};
    b->q_next += n;
    if (h2_queue_msg(st, &r, kubemq__queues_downstream_response__get_packed_size(&r), pack_ds) == 0)
        h2_server_respond(st);
out:
    free(msgs);
    free(pm);
    free(attrs);
    free(ids);
}

static void serve_poll(struct broker *b)
{
    if (!b->poll_st)
        return;
    uint64_t ready = b->next_seq - b->q_next;
    if (ready > 0) {
        answer_poll(b, (uint32_t)(ready < (uint64_t)b->poll_max ? ready : (uint64_t)b->poll_max));
    } else if (kk_mono_ms() >= b->poll_deadline_ms) {
        answer_poll(b, 0);
    }
}

static struct txn *find_txn(struct broker *b, const char *id)
{
    if (!id || id[0] != 't')
        return NULL;
    uint64_t tn = strtoull(id + 1, NULL, 10);
    if (tn >= b->next_txn)
        return NULL;
    struct txn *tx = &b->txns[tn % MAX_TXN];
    return tx->used ? tx : NULL;
}

static void on_downstream_req(struct broker *b, struct h2stream *st, Kubemq__QueuesDownstreamRequest *r)
{
    switch (r->requesttypedata) {
    case KUBEMQ__QUEUES_DOWNSTREAM_REQUEST_TYPE__Get:
        b->poll_st = st;
        snprintf(b->poll_reqid, sizeof(b->poll_reqid), "%s", r->requestid ? r->requestid : "");
        b->poll_max = r->maxitems > 0 ? r->maxitems : 1;
        b->poll_deadline_ms = kk_mono_ms() + (uint64_t)(r->waittimeout > 0 ? r->waittimeout : 1000);
        if (!b->subscribed)
            run_started(b);
        generate(b);
        break;
    case KUBEMQ__QUEUES_DOWNSTREAM_REQUEST_TYPE__AckAll:
    case KUBEMQ__QUEUES_DOWNSTREAM_REQUEST_TYPE__NAckAll:
    case KUBEMQ__QUEUES_DOWNSTREAM_REQUEST_TYPE__ReQueueAll: {
        struct txn *tx = find_txn(b, r->reftransactionid);
        if (!tx)
            break;
        int err = r->requesttypedata == KUBEMQ__QUEUES_DOWNSTREAM_REQUEST_TYPE__AckAll ? 0 : -(LERR_NACK + 1);
        for (uint32_t i = 0; i < tx->n; i++)
            if (b->ring[(tx->first_seq + i) & (RING - 1)].live)
                complete(b, tx->first_seq + i, err);
        tx->used = 0;
        break;
    }
    case KUBEMQ__QUEUES_DOWNSTREAM_REQUEST_TYPE__AckRange:
    case KUBEMQ__QUEUES_DOWNSTREAM_REQUEST_TYPE__NAckRange:
    case KUBEMQ__QUEUES_DOWNSTREAM_REQUEST_TYPE__ReQueueRange: {
        int err =
            r->requesttypedata == KUBEMQ__QUEUES_DOWNSTREAM_REQUEST_TYPE__AckRange ? 0 : -(LERR_NACK + 1);
        for (size_t i = 0; i < r->n_sequencerange; i++)
            if (r->sequencerange[i] >= 1)
                complete(b, (uint64_t)r->sequencerange[i] - 1, err);
        break;
    }
    default:
        break;
    }
    generate(b);
}

/* ---- gRPC methods ------------------------------------------------------------------------ */
static void unary_reply(struct h2stream *st, const void *msg, size_t len,
                        size_t (*pack)(const void *, uint8_t *))
{
    h2_queue_msg(st, msg, len, pack);
    h2_server_finish(st, 0);
}

static void on_sub_response(struct broker *b, const struct resp_view *r)
{
    uint64_t seq = UINT64_MAX;
    if (parse_seq(r->request_id, r->request_id_len, &seq) != 0)
        seq = UINT64_MAX;
    int err = 0;
    if (b->kind == K_COMMAND) {
        if (!r->executed)
            err = -(LERR_NOT_EXECUTED + 1);
    } else {
        /* The reply body is the Response JSON; its byte layout is fixed. */
        if (r->error_len)
            err = -(LERR_IS_ERROR + 1);
        else if (!r->body || !memmem(r->body, r->body_len, "\"is_error\":false", 16))
            err = -(LERR_IS_ERROR + 1);
    }
    complete(b, seq, err);
}

static void on_stream_open(void *user, struct h2stream *st)
{
    (void)user;
    (void)st;
}

static void on_message(void *user, struct h2stream *st, const uint8_t *msg, size_t len)
{
    struct broker *b = user;
    const char *m = strncmp(st->path, "/kubemq.kubemq/", 15) == 0 ? st->path + 15 : "";
    if (strcmp(m, "SendResponse") == 0) {
        struct resp_view r;
        if (pb_scan_response(msg, len, &r) == 0) {
            on_sub_response(b, &r);
        } else {
            b->st.errors++;
            b->st.err[LERR_BAD_REPLY]++;
        }
        unary_reply(st, NULL, 0, NULL);
        generate(b);
    } else if (strcmp(m, "SubscribeToRequests") == 0 || strcmp(m, "SubscribeToEvents") == 0) {
        if (b->n_subs < MAX_SUBS) {
            b->subs[b->n_subs++] = st;
            st->user = b;
            h2_server_respond(st); /* headers now; requests follow */
            if (!b->subscribed) {
                run_started(b);
                if (!b->o->quiet)
                    fprintf(stderr, "gateway subscribed (%s); sending\n", m);
            }
            generate(b);
        } else {
            h2_server_finish(st, 8);
        }
    } else if (strcmp(m, "QueuesDownstream") == 0) {
        st->user = b;
        h2_server_respond(st);
        Kubemq__QueuesDownstreamRequest *r = kubemq__queues_downstream_request__unpack(NULL, len, msg);
        if (r) {
            on_downstream_req(b, st, r);
            kubemq__queues_downstream_request__free_unpacked(r, NULL);
        }
    } else if (strcmp(m, "Ping") == 0) {
        Kubemq__PingResult p = KUBEMQ__PING_RESULT__INIT;
        p.host = "kubemq-kinesis-load";
        p.version = "0.1.0";
        p.serverstarttime = kk_wall_ms() / 1000;
        unary_reply(st, &p, kubemq__ping_result__get_packed_size(&p), pack_ping);
    } else if (strcmp(m, "SendEvent") == 0) {
        Kubemq__Result r = KUBEMQ__RESULT__INIT;
        r.sent = 1;
        unary_reply(st, &r, kubemq__result__get_packed_size(&r), pack_result);
    } else if (strcmp(m, "SendQueueMessage") == 0) {
        Kubemq__SendQueueMessageResult r = KUBEMQ__SEND_QUEUE_MESSAGE_RESULT__INIT;
        r.sentat = kk_wall_ms() * 1000000;
        unary_reply(st, &r, kubemq__send_queue_message_result__get_packed_size(&r), pack_qres);
    } else {
        h2_server_finish(st, 12); /* UNIMPLEMENTED */
    }
}

static void on_remote_end(void *user, struct h2stream *st)
{
    /* Unary calls with an empty body (Ping: Empty is 5 zero bytes, handled as a message). */
}

static void on_stream_close(void *user, struct h2stream *st, uint32_t code)
{
    struct broker *b = user;
    for (unsigned i = 0; i < b->n_subs; i++)
        if (b->subs[i] == st) {
            b->subs[i] = b->subs[--b->n_subs];
            if (!b->stopping && !b->o->quiet)
                fprintf(stderr, "a subscription closed (%u left)\n", b->n_subs);
            break;
        }
    if (b->poll_st == st)
        b->poll_st = NULL;
}

static void on_conn_close(void *user, struct h2conn *c)
{
    struct broker *b = user;
    for (struct h2conn **pp = &b->conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
}

static const struct h2_cbs cbs = {on_stream_open, on_message, on_remote_end, on_stream_close, on_conn_close};

static void on_connection(uv_stream_t *l, int status)
{
    struct broker *b = l->data;
    if (status != 0 || b->stopping)
        return;
    struct h2conn *c;
    if (h2_accept(l, &cbs, b, &c) == 0) {
        c->next = b->conns;
        b->conns = c;
    }
}

/* ---- lifecycle -------------------------------------------------------------------------------- */
static void on_closed(uv_handle_t *h)
{
    (void)h;
}

static void shutdown_all(struct broker *b)
{
    if (b->closed)
        return;
    b->closed = true;
    b->stopping = true;
    if (!b->st.t_end_ms)
        b->st.t_end_ms = kk_mono_ms();
    uv_timer_stop(&b->tick);
    uv_timer_stop(&b->progress);
    uv_close((uv_handle_t *)&b->tick, on_closed);
    uv_close((uv_handle_t *)&b->progress, on_closed);
    uv_close((uv_handle_t *)&b->sig_int, on_closed);
    uv_close((uv_handle_t *)&b->sig_term, on_closed);
    uv_close((uv_handle_t *)&b->listener, on_closed);
    while (b->conns) {
        struct h2conn *c = b->conns;
        b->conns = c->next;
        /* Close gracefully is not needed: the run is over. */
        h2_close(c);
    }
}

static void finish_run(struct broker *b)
{
    if (b->stopping)
        return;
    b->st.t_end_ms = kk_mono_ms();
    /* Whatever is still outstanding never got a reply. */
    for (uint64_t s = b->tail; s < b->next_seq; s++)
        if (b->ring[s & (RING - 1)].live) {
            b->ring[s & (RING - 1)].live = 0;
            if (s >= b->count_from) {
                b->st.errors++;
                b->st.err[LERR_TIMEOUT]++;
            }
        }
    if (b->o->rate > 0 && b->send_lag.count)
        fprintf(stderr,
                "kubemq-kinesis-load broker: send lag (actual - intended send time, counted in the latency) "
                "p50 %.3f p99 %.3f p99.9 %.3f max %.3f ms\n",
                hist_quantile(&b->send_lag, 0.5) / 1e3, hist_quantile(&b->send_lag, 0.99) / 1e3,
                hist_quantile(&b->send_lag, 0.999) / 1e3, b->send_lag.max / 1e3);
    shutdown_all(b);
}

static void on_tick(uv_timer_t *t)
{
    struct broker *b = t->data;
    uint64_t nowms = kk_mono_ms();
    if (!b->subscribed) {
        if (nowms >= b->wait_until_ms) {
            fprintf(stderr, "kubemq-kinesis-load broker: no subscription within %.1f s\n",
                    b->o->wait_subscribe_s);
            b->rc = 3;
            shutdown_all(b);
        }
        return;
    }
    /* Timeouts: the oldest outstanding request is at the tail. */
    uint64_t lim_us = (uint64_t)b->o->timeout_ms * 1000u;
    uint64_t tn = now_us();
    while (b->tail < b->next_seq) {
        struct pend *p = &b->ring[b->tail & (RING - 1)];
        if (p->live) {
            if (tn - p->t_us < lim_us)
                break;
            p->live = 0;
            if (b->tail >= b->count_from) {
                b->st.errors++;
                b->st.err[LERR_TIMEOUT]++;
            }
        }
        b->tail++;
    }
    generate(b);
    if (b->generating_done && outstanding(b) == 0 && subs_drained(b))
        finish_run(b);
    else if (b->generating_done && b->deadline_ms == 0)
        b->deadline_ms = nowms + b->o->timeout_ms;
    else if (b->deadline_ms && nowms >= b->deadline_ms)
        finish_run(b);
}

static void on_progress(uv_timer_t *t)
{
    struct broker *b = t->data;
    if (b->subscribed)
        report_progress(b->o, &b->st, kk_mono_ms());
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct broker *b = s->data;
    if (!b->o->quiet)
        fprintf(stderr, "\nsignal %d: stopping\n", signum);
    b->rc = b->subscribed ? b->rc : 3;
    finish_run(b);
}

int run_broker(const struct load_opts *o)
{
    struct broker *b = calloc(1, sizeof(*b));
    uv_loop_t loop;
    int rv;
    if (!b)
        return 2;
    b->oc = *o;
    b->o = &b->oc;
    o = b->o;
    if (strcmp(o->kind, "query") == 0)
        b->kind = K_QUERY;
    else if (strcmp(o->kind, "command") == 0)
        b->kind = K_COMMAND;
    else if (strcmp(o->kind, "events") == 0)
        b->kind = K_EVENTS;
    else if (strcmp(o->kind, "events-store") == 0)
        b->kind = K_EVENTS_STORE;
    else if (strcmp(o->kind, "queue") == 0)
        b->kind = K_QUEUE;
    else {
        fprintf(stderr, "unknown --kind %s\n", o->kind);
        free(b);
        return 2;
    }
    hist_init(&b->st.lat);
    hist_init(&b->send_lag);
    b->ring = calloc(RING, sizeof(*b->ring));
    if (!b->ring || build_bodies(b) != 0) {
        rv = 2;
        goto out_free;
    }
    b->limit = o->requests;
    if (!b->limit && o->duration_s <= 0)
        b->limit = 1000;
    uv_loop_init(&loop);
    b->loop = &loop;
    uv_tcp_init(&loop, &b->listener);
    b->listener.data = b;
    struct sockaddr_storage ss;
    if (uv_ip4_addr(o->host, o->port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(o->host, o->port, (struct sockaddr_in6 *)&ss) != 0) {
        fprintf(stderr, "bad --host %s\n", o->host);
        rv = 2;
        uv_close((uv_handle_t *)&b->listener, on_closed);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        goto out_free;
    }
    rv = uv_tcp_bind(&b->listener, (struct sockaddr *)&ss, 0);
    if (rv == 0)
        rv = uv_listen((uv_stream_t *)&b->listener, 128, on_connection);
    if (rv != 0) {
        fprintf(stderr, "listen %s:%u: %s\n", o->host, o->port, uv_strerror(rv));
        uv_close((uv_handle_t *)&b->listener, on_closed);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        rv = 2;
        goto out_free;
    }
    struct sockaddr_storage bound;
    int blen = sizeof(bound);
    uv_tcp_getsockname(&b->listener, (struct sockaddr *)&bound, &blen);
    uint16_t port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    printf("{\"port\":%u}\n", port);
    fflush(stdout);
    write_port_file(o->port_file, port);

    b->wait_until_ms = kk_mono_ms() + (uint64_t)(o->wait_subscribe_s * 1000);
    uv_timer_init(&loop, &b->tick);
    b->tick.data = b;
    uv_timer_start(&b->tick, on_tick, 1, 1);
    uv_timer_init(&loop, &b->progress);
    b->progress.data = b;
    uv_timer_start(&b->progress, on_progress, 1000, 1000);
    uv_signal_init(&loop, &b->sig_int);
    b->sig_int.data = b;
    uv_signal_start(&b->sig_int, on_signal, SIGINT);
    uv_signal_init(&loop, &b->sig_term);
    b->sig_term.data = b;
    uv_signal_start(&b->sig_term, on_signal, SIGTERM);

    uv_run(&loop, UV_RUN_DEFAULT);
    int lc = uv_loop_close(&loop);
    if (lc != 0)
        fprintf(stderr, "warning: loop not closed cleanly: %s\n", uv_strerror(lc));
    h2_pool_free();

    if (b->rc == 0 || b->subscribed) {
        char extra[96];
        snprintf(extra, sizeof(extra), "\"subscribed\":%s,\"warmup_s\":%.3f",
                 b->subscribed ? "true" : "false", o->warmup_s);
        if (report_final(o, &b->st, extra) != 0 && b->rc == 0)
            b->rc = 1;
    }
    rv = b->rc ? b->rc : (b->st.errors ? 1 : 0);
out_free:
    for (uint32_t k = 0; b->bodies && k < b->n_bodies; k++)
        free(b->bodies[k]);
    free(b->bodies);
    free(b->body_len);
    free(b->ring);
    free(b);
    return rv;
}

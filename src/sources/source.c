/* KubeMQ sources: options, connections, flow control and lifecycle shared by
 * the five kinds.  What each kind does with a message lives in rpc.c
 * (query, command), events.c (events, events-store) and queue.c. */
#include "sources.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kk/buf.h"
#include "kk/clock.h"
#include "kk/err.h"
#include "kk/log.h"
#include "kk/prom.h"
#include "kk/rand.h"

static int parse_address(const char *addr, char *host, size_t hostlen, uint16_t *port)
{
    const char *colon = strrchr(addr, ':');
    const char *h = addr;
    size_t hl;
    if (!colon)
        return KK_EINVAL;
    if (addr[0] == '[') { /* [v6]:port */
        const char *close = strchr(addr, ']');
        if (!close || close + 1 != colon)
            return KK_EINVAL;
        h = addr + 1;
        hl = (size_t)(close - h);
    } else {
        hl = (size_t)(colon - addr);
    }
    if (hl == 0 || hl >= hostlen)
        return KK_EINVAL;
    char *end;
    errno = 0;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (errno || *end || p == 0 || p > 65535)
        return KK_EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (uint16_t)p;
    return 0;
}

/* start_from: new | first | last | sequence:N | time:<RFC3339> | delta:<seconds> */
static int parse_start_from(const char *v, int *type, int64_t *value)
{
    *value = 0;
    if (!v || !*v || strcmp(v, "new") == 0) {
        *type = KUBEMQ__SUBSCRIBE__EVENTS_STORE_TYPE__StartNewOnly;
        return 0;
    }
    if (strcmp(v, "first") == 0) {
        *type = KUBEMQ__SUBSCRIBE__EVENTS_STORE_TYPE__StartFromFirst;
        return 0;
    }
    if (strcmp(v, "last") == 0) {
        *type = KUBEMQ__SUBSCRIBE__EVENTS_STORE_TYPE__StartFromLast;
        return 0;
    }
    char *end;
    if (strncmp(v, "sequence:", 9) == 0) {
        long long n = strtoll(v + 9, &end, 10);
        if (*end || n < 1)
            return KK_EINVAL;
        *type = KUBEMQ__SUBSCRIBE__EVENTS_STORE_TYPE__StartAtSequence;
        *value = n;
        return 0;
    }
    if (strncmp(v, "delta:", 6) == 0) {
        long long n = strtoll(v + 6, &end, 10);
        if (*end || n < 1)
            return KK_EINVAL;
        *type = KUBEMQ__SUBSCRIBE__EVENTS_STORE_TYPE__StartAtTimeDelta;
        *value = n;
        return 0;
    }
    if (strncmp(v, "time:", 5) == 0) {
        int64_t ns;
        if (kk_parse_rfc3339(v + 5, &ns) != 0 || ns <= 0)
            return KK_EINVAL;
        *type = KUBEMQ__SUBSCRIBE__EVENTS_STORE_TYPE__StartAtTime;
        *value = ns;
        return 0;
    }
    return KK_EINVAL;
}

static int parse_opts(struct kk_src *s, const struct kk_props *p, char *err, size_t errlen)
{
    struct src_opts *o = &s->o;
    const char *addr = kk_props_str(p, "address", s->kind == KK_SOURCE_QUEUE ? "localhost:50000" : NULL);
    if (!addr) {
        snprintf(err, errlen, "error parsing address value, value of key address cannot be empty");
        return KK_ECONFIG;
    }
    if (parse_address(addr, o->host, sizeof(o->host), &o->port) != 0) {
        snprintf(err, errlen, "error parsing address value, no valid host:port in '%s'", addr);
        return KK_ECONFIG;
    }
    o->channel = kk_props_get(p, "channel");
    if (!o->channel || !*o->channel) {
        snprintf(err, errlen, "error parsing channel value, value of key channel cannot be empty");
        return KK_ECONFIG;
    }
    o->client_id = kk_props_str(p, "client_id", NULL);
    o->auth_token = kk_props_str(p, "auth_token", NULL);
    o->group = kk_props_str(p, "group", "");
    o->response_channel = kk_props_str(p, "response_channel", "");
    o->n_sources = (unsigned)kk_props_int(p, "sources", 1);
    if (o->n_sources < 1)
        o->n_sources = 1;
    const char *fc = kk_props_str(p, "flow_control", KK_FLOW_CONTROL_DEFAULT);
    if (strcmp(fc, "exact") != 0 && strcmp(fc, "window") != 0) {
        snprintf(err, errlen, "error parsing flow_control value, want exact or window");
        return KK_ECONFIG;
    }
    o->exact_flow = strcmp(fc, "exact") == 0 && s->kind != KK_SOURCE_QUEUE;
    o->auto_reconnect = kk_props_bool(p, "auto_reconnect", true);
    o->reconnect_interval_ms = (uint32_t)(kk_props_int(p, "reconnect_interval_seconds", 0) * 1000);
    o->max_reconnects = (uint32_t)kk_props_int(p, "max_reconnects", 0);
    o->connect_timeout_ms = (uint32_t)kk_props_int(p, "connect_timeout_ms", 5000);
    o->tls = kk_props_bool(p, "tls", false);
    o->tls_opts.ca_file = kk_props_str(p, "tls_ca_file", NULL);
    o->tls_opts.cert_file = kk_props_str(p, "tls_cert_file", NULL);
    o->tls_opts.key_file = kk_props_str(p, "tls_key_file", NULL);
    o->tls_opts.server_name = kk_props_str(p, "tls_server_name", NULL);
    o->tls_opts.insecure_skip_verify = kk_props_bool(p, "tls_insecure_skip_verify", false);
    o->tls_opts.alpn = "h2";
    if (parse_start_from(kk_props_get(p, "start_from"), &o->store_type, &o->store_value) != 0) {
        snprintf(err, errlen, "error parsing start_from value");
        return KK_ECONFIG;
    }
    o->batch_size = (int32_t)kk_props_int(p, "batch_size", 1);
    o->wait_timeout_ms = (int32_t)kk_props_int(p, "wait_timeout", 5) * 1000;
    return 0;
}

/* ---- flow control ----------------------------------------------------------- */

static void pause_all(struct kk_src *s)
{
    if (s->paused)
        return;
    s->paused = true;
    for (unsigned i = 0; i < s->n_conns; i++)
        if (s->conns[i].sub)
            kk_kmq_sub_pause(s->conns[i].sub);
}

static void resume_all(struct kk_src *s)
{
    if (!s->paused)
        return;
    s->paused = false;
    for (unsigned i = 0; i < s->n_conns; i++)
        if (s->conns[i].sub)
            kk_kmq_sub_resume(s->conns[i].sub);
}

/* flow_control exact: hands the free slots out as message credit, so that
 * credit + announced messages + requests in flight stay within the cap
 * (requests made through the HTTP API take slots too: then less is
 * granted).  The free slots are water-filled: the subscriptions holding
 * least are raised to one level, so none idles at zero while others hold the
 * whole cap (sources <= concurrency is checked at load).  A connection that
 * gave up (FAILED, final) neither counts nor gets any; one that is
 * reconnecting keeps its share for the new stream. */
static void grant_credit(struct kk_src *s)
{
    unsigned free_slots, live = 0, i;
    uint64_t out = 0, give, lo = UINT64_MAX, hi, sum;

    if (!s->o.exact_flow || s->stopped || s->starting)
        return;
    free_slots = kk_binding_free_slots(s->b);
    for (i = 0; i < s->n_conns; i++) {
        struct src_conn *c = &s->conns[i];
        c->grant = 0;
        if (!c->sub || c->failed_err)
            continue;
        c->held = kk_kmq_sub_outstanding(c->sub);
        out += c->held;
        if (c->held < lo)
            lo = c->held;
        live++;
    }
    if (!live || out >= free_slots)
        return;
    give = free_slots - out;
    if (live == 1) { /* the common case: all of it to the one subscription */
        for (i = 0; i < s->n_conns; i++)
            if (s->conns[i].sub && !s->conns[i].failed_err)
                kk_kmq_sub_add_credit(s->conns[i].sub, (uint32_t)give);
        return;
    }
    /* The highest level T with sum(max(0, T - held)) <= give, in [lo, lo + give]. */
    hi = lo + give;
    while (lo < hi) {
        uint64_t t = lo + (hi - lo + 1) / 2;
        sum = 0;
        for (i = 0; i < s->n_conns; i++) {
            struct src_conn *c = &s->conns[i];
            if (c->sub && !c->failed_err && c->held < t)
                sum += t - c->held;
        }
        if (sum <= give)
            lo = t;
        else
            hi = t - 1;
    }
    for (i = 0; i < s->n_conns; i++) {
        struct src_conn *c = &s->conns[i];
        if (c->sub && !c->failed_err && c->held < lo) {
            c->grant = (uint32_t)(lo - c->held);
            give -= c->grant;
        }
    }
    /* What is left (fewer than the subscriptions at the level) goes one
     * each, starting where the last grant stopped. */
    for (unsigned k = 0; k < s->n_conns && give; k++) {
        struct src_conn *c = &s->conns[(s->grant_next + k) % s->n_conns];
        if (c->sub && !c->failed_err && c->held + c->grant == lo) {
            c->grant++;
            give--;
            s->grant_next = (unsigned)(c - s->conns + 1) % s->n_conns;
        }
    }
    for (i = 0; i < s->n_conns; i++)
        if (s->conns[i].grant)
            kk_kmq_sub_add_credit(s->conns[i].sub, s->conns[i].grant);
}

/* The last slot was taken (by this source or an HTTP API request): the
 * broker must hold the rest. */
static void src_on_full(struct kk_source *base)
{
    struct kk_src *s = (struct kk_src *)base;
    if (s->kind != KK_SOURCE_QUEUE) /* the queue polls for free slots only */
        pause_all(s);
}

static void src_on_capacity(struct kk_source *base)
{
    struct kk_src *s = (struct kk_src *)base;
    if (s->stopped)
        return;
    if (s->kind == KK_SOURCE_QUEUE) {
        kk__src_queue_poll_all(s);
    } else if (kk_binding_free_slots(s->b) > 0) {
        resume_all(s);
        grant_credit(s);
    }
}

/* ---- replies and publishing ------------------------------------------------- */

void kk__src_unary_done(void *arg, int status, int grpc_status, const char *grpc_message, void *reply)
{
    struct kk_src *s = arg;
    if (reply)
        kk_kmq_free(reply);
    if (status == 0)
        return;
    if (status == KK_ECANCELED && s->closing) {
        /* The client close cancels replies still in flight: expected on stop. */
        s->replies_canceled++;
        KK_DEBUG(s->bname, "reply to kubemq cancelled by shutdown");
        return;
    }
    s->replies_failed++;
    KK_ERROR(s->bname, "error sending reply to kubemq: %s%s%s", kk_strerror(status),
             grpc_message && *grpc_message ? ": " : "", grpc_message ? grpc_message : "");
}

static void on_published(void *arg, int status, int grpc_status, const char *grpc_message, void *reply)
{
    struct kk_src *s = arg;
    bool ok = status == 0;
    if (ok && reply && s->kind != KK_SOURCE_QUEUE) {
        /* events-store answers Sent=false with an error in-band */
        Kubemq__Result *r = reply;
        if (!r->sent && s->kind == KK_SOURCE_EVENTS_STORE) {
            ok = false;
            KK_ERROR(s->bname, "error sending event response: %s", r->error ? r->error : "not sent");
        }
    } else if (ok && reply && s->kind == KK_SOURCE_QUEUE) {
        Kubemq__SendQueueMessageResult *r = reply;
        if (r->iserror) {
            ok = false;
            KK_ERROR(s->bname, "error sending queue response: %s", r->error ? r->error : "");
        }
    } else if (!ok) {
        KK_ERROR(s->bname, "error sending response to %s: %s%s%s", s->o.response_channel, kk_strerror(status),
                 grpc_message && *grpc_message ? ": " : "", grpc_message ? grpc_message : "");
    }
    if (reply)
        kk_kmq_free(reply);
    if (ok)
        s->published++;
    else
        s->publish_failed++;
}

/* Publishes the Response JSON to response_channel: an event, an events-store
 * message or a queue message, matching the source kind (connector §4.5-4.6). */
void kk__src_publish(struct src_conn *c, const char *body, size_t len)
{
    struct kk_src *s = c->src;
    if (!*s->o.response_channel)
        return;
    char id[37];
    kk_uuid4(id);
    int rv;
    if (s->kind == KK_SOURCE_QUEUE) {
        Kubemq__QueueMessage m = KUBEMQ__QUEUE_MESSAGE__INIT;
        m.messageid = id;
        m.clientid = c->client_id;
        m.channel = (char *)s->o.response_channel;
        m.body.data = (uint8_t *)body;
        m.body.len = len;
        rv = kk_kmq_send_queue_message(c->client, &m, on_published, s);
    } else {
        Kubemq__Event e = KUBEMQ__EVENT__INIT;
        e.eventid = id;
        e.clientid = c->client_id;
        e.channel = (char *)s->o.response_channel;
        e.body.data = (uint8_t *)body;
        e.body.len = len;
        e.store = s->kind == KK_SOURCE_EVENTS_STORE;
        rv = kk_kmq_send_event(c->client, &e, on_published, s);
    }
    if (rv != 0) {
        s->publish_failed++;
        KK_ERROR(s->bname, "error sending response to %s: %s", s->o.response_channel, kk_strerror(rv));
    }
}

/* ---- connections -------------------------------------------------------------- */

static void sub_on_state(void *user, bool subscribed, int err)
{
    struct src_conn *c = user;
    c->live = subscribed;
    if (subscribed)
        KK_INFO(c->src->bname, "subscribed to %s (connection %u)", c->src->o.channel, c->index);
    else if (!c->src->stopped)
        KK_WARN(c->src->bname, "subscription to %s lost (connection %u): %s", c->src->o.channel, c->index,
                kk_strerror(err));
}

static int open_intake(struct src_conn *c)
{
    struct kk_src *s = c->src;
    if (s->stopped || c->sub || c->ds)
        return 0;
    if (s->kind == KK_SOURCE_QUEUE)
        return kk__src_queue_open(c);

    Kubemq__Subscribe sub = KUBEMQ__SUBSCRIBE__INIT;
    sub.clientid = c->client_id;
    sub.channel = (char *)s->o.channel;
    sub.group = (char *)s->o.group;
    static const struct kk_kmq_sub_cbs rpc_cbs = {kk__src_rpc_on_message, sub_on_state};
    static const struct kk_kmq_sub_cbs ev_cbs = {kk__src_events_on_message, sub_on_state};
    const struct kk_kmq_sub_cbs *cbs = &ev_cbs;
    switch (s->kind) {
    case KK_SOURCE_QUERY:
        sub.subscribetypedata = KUBEMQ__SUBSCRIBE__SUBSCRIBE_TYPE__Queries;
        cbs = &rpc_cbs;
        break;
    case KK_SOURCE_COMMAND:
        sub.subscribetypedata = KUBEMQ__SUBSCRIBE__SUBSCRIBE_TYPE__Commands;
        cbs = &rpc_cbs;
        break;
    case KK_SOURCE_EVENTS:
        sub.subscribetypedata = KUBEMQ__SUBSCRIBE__SUBSCRIBE_TYPE__Events;
        break;
    case KK_SOURCE_EVENTS_STORE:
        sub.subscribetypedata = KUBEMQ__SUBSCRIBE__SUBSCRIBE_TYPE__EventsStore;
        sub.eventsstoretypedata = (Kubemq__Subscribe__EventsStoreType)s->o.store_type;
        sub.eventsstoretypevalue = s->o.store_value;
        break;
    default:
        return KK_EINVAL;
    }
    int rv = kk_kmq_subscribe(c->client, &sub, cbs, c, &c->sub);
    if (rv != 0) {
        c->sub = NULL;
        return rv;
    }
    if (s->paused)
        kk_kmq_sub_pause(c->sub);
    grant_credit(s);
    return 0;
}

static void client_on_state(void *user, enum kk_kmq_state st, int err)
{
    struct src_conn *c = user;
    struct kk_src *s = c->src;
    switch (st) {
    case KK_KMQ_READY:
        c->failed_err = 0;
        KK_INFO(s->bname, "connected to kubemq %s:%u (connection %u)", s->o.host, s->o.port, c->index);
        if (open_intake(c) != 0)
            KK_ERROR(s->bname, "cannot subscribe to %s", s->o.channel);
        break;
    case KK_KMQ_RECONNECTING:
        s->reconnects++;
        c->live = false;
        KK_WARN(s->bname, "kubemq connection %u lost (%s), reconnecting", c->index, kk_strerror(err));
        break;
    case KK_KMQ_FAILED:
        c->live = false;
        c->failed_err = err ? err : KK_ECLOSED;
        KK_ERROR(s->bname, "kubemq connection %u failed: %s", c->index, kk_strerror(err));
        grant_credit(s); /* its share goes to the others */
        break;
    case KK_KMQ_CONNECTING:
        break;
    }
}

static int src_start(struct kk_source *base)
{
    struct kk_src *s = (struct kk_src *)base;
    if (s->started)
        return 0;
    s->started = true;
    if (s->o.tls && !s->tls_ctx) {
        /* One context (CA bundle parsed once) for all N clients; freed after
         * the last of them closed (finish_close). */
        struct kk_tls_opts topts = s->o.tls_opts;
        char errbuf[256];
        topts.alpn = "h2";
        if (!topts.server_name)
            topts.server_name = s->o.host;
        int rv = kk_tls_ctx_new(&topts, &s->tls_ctx, errbuf, sizeof(errbuf));
        if (rv < 0) {
            KK_ERROR(s->bname, "kubemq: TLS setup: %s", errbuf);
            return rv;
        }
    }
    for (unsigned i = 0; i < s->n_conns; i++) {
        struct src_conn *c = &s->conns[i];
        struct kk_kmq_opts ko = {
            .host = s->o.host,
            .port = s->o.port,
            .tls = s->o.tls,
            .tls_opts = s->o.tls_opts,
            .tls_ctx = s->tls_ctx,
            .auth_token = s->o.auth_token,
            .auto_reconnect = s->o.auto_reconnect,
            .reconnect_interval_ms = s->o.reconnect_interval_ms,
            .max_reconnects = s->o.max_reconnects,
            .connect_timeout_ms = s->o.connect_timeout_ms,
            .message_credit = s->o.exact_flow,
            .log_scope = s->bname,
        };
        int rv = kk_kmq_client_new(s->loop, &ko, client_on_state, c, &c->client);
        if (rv != 0) {
            KK_ERROR(s->bname, "cannot create kubemq client: %s", kk_strerror(rv));
            return rv;
        }
        s->open_clients++;
        /* Subscribing before READY registers the stream; the client opens it
         * once connected.  If it refuses now, READY retries.  Credit goes
         * out once all of them exist, so each gets its share. */
        s->starting = true;
        (void)open_intake(c);
        s->starting = false;
    }
    grant_credit(s);
    return 0;
}

static void src_stop_intake(struct kk_source *base)
{
    struct kk_src *s = (struct kk_src *)base;
    if (s->stopped)
        return;
    s->stopped = true;
    for (unsigned i = 0; i < s->n_conns; i++) {
        struct src_conn *c = &s->conns[i];
        if (c->sub) {
            kk_kmq_unsubscribe(c->sub);
            c->sub = NULL;
            c->live = false;
        }
    }
    if (s->kind == KK_SOURCE_QUEUE)
        kk__src_queue_stop(s);
    KK_INFO(s->bname, "stopped taking messages from %s", s->o.channel);
}

static bool src_ready(struct kk_source *base, const char **why)
{
    struct kk_src *s = (struct kk_src *)base;
    static char reason[512];
    if (!s->started) {
        *why = "source not started";
        return false;
    }
    for (unsigned i = 0; i < s->n_conns; i++) {
        struct src_conn *c = &s->conns[i];
        if (c->failed_err) {
            snprintf(reason, sizeof(reason),
                     "kubemq connection %u to %s:%u failed permanently (auto_reconnect off or max_reconnects "
                     "reached): %s",
                     c->index, s->o.host, s->o.port, kk_strerror(c->failed_err));
            *why = reason;
            return false;
        }
        if (!c->live) {
            snprintf(reason, sizeof(reason), "source connection %u to %s:%u not subscribed to %s", c->index,
                     s->o.host, s->o.port, s->o.channel);
            *why = reason;
            return false;
        }
    }
    *why = NULL;
    return true;
}

/* One sample: name{binding="<escaped>"[,result="<result>"]} value. */
static void metric(struct kk_buf *out, const char *name, const char *binding, const char *result, uint64_t v)
{
    kk_buf_append_str(out, name);
    kk_buf_append_str(out, "{binding=\"");
    kk_prom_label(out, binding);
    if (result) {
        kk_buf_append_str(out, "\",result=\"");
        kk_buf_append_str(out, result);
    }
    kk_buf_printf(out, "\"} %" PRIu64 "\n", v);
}

static void src_metrics(struct kk_source *base, const char *binding, struct kk_buf *out)
{
    struct kk_src *s = (struct kk_src *)base;
    metric(out, "kubemq_kinesis_source_messages_total", binding, NULL, s->received);
    metric(out, "kubemq_kinesis_source_dropped_total", binding, NULL, s->dropped);
    metric(out, "kubemq_kinesis_broker_reconnects_total", binding, NULL, s->reconnects);
    metric(out, "kubemq_kinesis_source_reply_errors_total", binding, NULL, s->replies_failed);
    metric(out, "kubemq_kinesis_source_replies_cancelled_total", binding, NULL, s->replies_canceled);
    metric(out, "kubemq_kinesis_source_published_total", binding, "ok", s->published);
    metric(out, "kubemq_kinesis_source_published_total", binding, "error", s->publish_failed);
    if (s->kind == KK_SOURCE_QUEUE) {
        metric(out, "kubemq_kinesis_queue_settled_total", binding, "ack", s->acked);
        metric(out, "kubemq_kinesis_queue_settled_total", binding, "nack", s->nacked);
    }
}

static void finish_close(struct kk_src *s)
{
    void (*done)(void *) = s->close_done;
    void *arg = s->close_arg;
    kk__src_rpc_free_pool(s);
    if (s->tls_ctx)
        kk_tls_ctx_free(s->tls_ctx);
    free(s->conns);
    free(s);
    if (done)
        done(arg);
}

static void on_nack_timer_closed(uv_handle_t *h)
{
    struct kk_src *s = h->data;
    s->nack_timer_open = false;
    if (s->open_clients == 0)
        finish_close(s);
}

static void on_client_closed(void *arg)
{
    struct src_conn *c = arg;
    struct kk_src *s = c->src;
    c->closed = true;
    c->client = NULL;
    if (--s->open_clients == 0 && !s->nack_timer_open)
        finish_close(s);
}

static void src_close(struct kk_source *base, void (*done)(void *arg), void *arg)
{
    struct kk_src *s = (struct kk_src *)base;
    src_stop_intake(base);
    s->closing = true;
    s->close_done = done;
    s->close_arg = arg;
    if (s->nack_timer_open)
        uv_close((uv_handle_t *)&s->nack_timer, on_nack_timer_closed);
    unsigned n = 0;
    for (unsigned i = 0; i < s->n_conns; i++) {
        struct src_conn *c = &s->conns[i];
        if (c->ds) {
            kk_kmq_downstream_close(c->ds);
            c->ds = NULL;
        }
        if (c->client) {
            n++;
            kk_kmq_client_close(c->client, on_client_closed, c);
        }
    }
    if (n == 0 && s->open_clients == 0 && !s->nack_timer_open)
        finish_close(s);
}

static const struct kk_source_vtbl src_vtbl = {
    .kind = "kubemq",
    .start = src_start,
    .stop_intake = src_stop_intake,
    .on_capacity = src_on_capacity,
    .on_full = src_on_full,
    .ready = src_ready,
    .metrics = src_metrics,
    .close = src_close,
};

int kk_source_create(uv_loop_t *loop, struct kk_binding *b, const struct kk_spec *spec, struct kk_source **out,
                     char *err, size_t errlen)
{
    if (spec->kind < 0 || spec->kind >= KK_SOURCE__COUNT) {
        snprintf(err, errlen, "invalid kind %s for source", spec->kind_text ? spec->kind_text : "?");
        return KK_ECONFIG;
    }
    struct kk_src *s = calloc(1, sizeof(*s));
    if (!s)
        return KK_ENOMEM;
    s->base.vt = &src_vtbl;
    s->loop = loop;
    s->b = b;
    s->bname = kk_binding_name(b);
    s->kind = (enum kk_source_kind)spec->kind;
    int rv = parse_opts(s, &spec->props, err, errlen);
    if (rv != 0) {
        free(s);
        return rv;
    }
    /* N subscribers of one channel without a group would each get every
     * message; a generated group makes the broker load-balance them. */
    if (s->o.n_sources > 1 && !*s->o.group && s->kind != KK_SOURCE_QUEUE) {
        kk_uuid4(s->group_buf);
        s->o.group = s->group_buf;
    }
    s->n_conns = s->o.n_sources;
    s->conns = calloc(s->n_conns, sizeof(*s->conns));
    if (!s->conns) {
        free(s);
        return KK_ENOMEM;
    }
    char generated[37];
    const char *base_id = s->o.client_id;
    if (!base_id) {
        kk_uuid4(generated);
        base_id = generated;
    }
    for (unsigned i = 0; i < s->n_conns; i++) {
        struct src_conn *c = &s->conns[i];
        c->src = s;
        c->index = i;
        /* events-store needs a unique ClientID per subscription (protocol §4.3). */
        if (s->n_conns == 1)
            snprintf(c->client_id, sizeof(c->client_id), "%s", base_id);
        else
            snprintf(c->client_id, sizeof(c->client_id), "%s-%u", base_id, i);
    }
    if (s->kind == KK_SOURCE_QUEUE) {
        uv_timer_init(loop, &s->nack_timer);
        s->nack_timer.data = s;
        s->nack_timer_open = true;
    }
    *out = &s->base;
    return 0;
}

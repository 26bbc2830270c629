/* kmq-probe: drives the KubeMQ client (src/kubemq) against a broker for
 * tests/integration/kubemq_client.test.mjs.  One JSON object per stdout
 * line; logs go to stderr.
 *
 *   kmq-probe --port P [--host H] [--tls --ca FILE [--server-name N]] [--token T]
 *             [--reconnect-ms N] [--max-reconnects N] [--timeout-ms N] [--client-id ID]
 *             [--max-message BYTES] [--call-timeout-ms N] [--keepalive-ms N]
 *             [--keepalive-timeout-ms N] [--linger-ms N] [--no-reconnect] CMD ...
 *   --linger-ms: after FAILED, keep the loop running this long (to show
 *   nothing more happens) before closing.
 *   CMD: ping
 *        send-event --channel C --count N [--persist]
 *        respond --channel C --count N [--commands] [--pause-after K --pause-ms M]
 *                [--reply-delay-ms D]   (the first request is answered D ms late)
 *   --credit K [--credit-step-ms M] (respond, events): message credit
 *   (opts.message_credit): K messages at first, then every M ms
 *   {"event":"credit","got":..,"outstanding":..} and K more.
 *        events --channel C --count N [--store first|last|new|seq:N] [--group G]
 *        queue --channel Q --count N [--max-items N]
 *
 * Exit: 0 when the count was reached, 3 on the overall timeout, 4 when the
 * client gave up (FAILED), 2 on usage errors.  The loop is always closed at
 * the end and {"event":"closed","loop_close":rc} reports uv_loop_close.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kk/err.h"
#include "kk/kubemq.h"
#include "kk/log.h"

struct probe {
    uv_loop_t loop;
    struct kk_kmq_client *c;
    struct kk_kmq_sub *sub;
    struct kk_kmq_downstream *down;
    uv_timer_t timeout, pause, linger, delay, step;
    long credit, credit_step_ms;
    long linger_ms;
    const char *cmd, *channel, *group, *store, *client_id;
    bool commands, store_events;
    long count, got, answered, pause_after, pause_ms, max_items;
    int exit_code;
    bool finishing;
    unsigned reqno;
    /* --reply-delay-ms: the first request's reply, held back */
    long reply_delay_ms;
    bool held;
    char held_id[128], held_reply[256];
    uint8_t held_body[256];
    size_t held_len;
};

static void print_str(const char *key, const uint8_t *p, size_t n)
{
    printf("\"%s\":\"", key);
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '"' || p[i] == '\\')
            printf("\\%c", p[i]);
        else if (p[i] < 0x20 || p[i] >= 0x7f)
            printf("\\u%04x", p[i]);
        else
            putchar(p[i]);
    }
    putchar('"');
}

static void on_closed(void *arg)
{
    (void)arg;
}

static void finish(struct probe *p, int code)
{
    if (p->finishing)
        return;
    p->finishing = true;
    p->exit_code = code;
    printf("{\"event\":\"done\",\"got\":%ld,\"answered\":%ld,\"code\":%d}\n", p->got, p->answered, code);
    if (p->sub)
        kk_kmq_unsubscribe(p->sub);
    if (p->down)
        kk_kmq_downstream_close(p->down);
    p->sub = NULL;
    p->down = NULL;
    uv_close((uv_handle_t *)&p->timeout, NULL);
    uv_close((uv_handle_t *)&p->pause, NULL);
    uv_close((uv_handle_t *)&p->linger, NULL);
    uv_close((uv_handle_t *)&p->delay, NULL);
    uv_close((uv_handle_t *)&p->step, NULL);
    kk_kmq_client_close(p->c, on_closed, p);
}

static void check_done(struct probe *p)
{
    long n = strcmp(p->cmd, "respond") == 0 ? p->answered : p->got;

    if (n >= p->count)
        finish(p, 0);
}

static void on_timeout(uv_timer_t *t)
{
    finish(t->data, 3);
}

static const char *state_name(enum kk_kmq_state st)
{
    switch (st) {
    case KK_KMQ_CONNECTING:
        return "CONNECTING";
    case KK_KMQ_READY:
        return "READY";
    case KK_KMQ_RECONNECTING:
        return "RECONNECTING";
    case KK_KMQ_FAILED:
        return "FAILED";
    }
    return "?";
}

static void start_cmd(struct probe *p);

static void on_linger(uv_timer_t *t)
{
    finish(t->data, 4);
}

static void on_state(void *user, enum kk_kmq_state st, int err)
{
    struct probe *p = user;
    static bool started;

    printf("{\"event\":\"state\",\"state\":\"%s\",\"err\":\"%s\"}\n", state_name(st), kk_errname(err));
    if (st == KK_KMQ_FAILED && p->linger_ms > 0 && !p->finishing)
        uv_timer_start(&p->linger, on_linger, (uint64_t)p->linger_ms, 0);
    else if (st == KK_KMQ_FAILED)
        finish(p, 4);
    else if (st == KK_KMQ_READY && !started) {
        started = true;
        start_cmd(p);
    }
}

/* ---- unary ---- */

static void on_ping(void *arg, int status, int gs, const char *gm, void *reply)
{
    struct probe *p = arg;
    Kubemq__PingResult *r = reply;

    if (status == 0) {
        printf("{\"event\":\"ping\",");
        print_str("host", (const uint8_t *)r->host, strlen(r->host));
        putchar(',');
        print_str("version", (const uint8_t *)r->version, strlen(r->version));
        printf("}\n");
        p->got++;
    } else {
        printf("{\"event\":\"error\",\"op\":\"ping\",\"err\":\"%s\",\"grpc_status\":%d,", kk_errname(status),
               gs);
        print_str("message", (const uint8_t *)gm, strlen(gm));
        printf("}\n");
        finish(p, 1);
    }
    kk_kmq_free(reply);
    check_done(p);
}

static void send_next_event(struct probe *p);

static void on_event_sent(void *arg, int status, int gs, const char *gm, void *reply)
{
    struct probe *p = arg;
    Kubemq__Result *r = reply;

    if (status == 0 && r && r->sent) {
        p->got++;
        printf("{\"event\":\"sent\",\"n\":%ld}\n", p->got);
        kk_kmq_free(reply);
        if (p->got < p->count)
            send_next_event(p);
        check_done(p);
        return;
    }
    printf("{\"event\":\"error\",\"op\":\"send-event\",\"err\":\"%s\",\"grpc_status\":%d,",
           kk_errname(status), gs);
    print_str("message", (const uint8_t *)(gm ? gm : ""), gm ? strlen(gm) : 0);
    printf("}\n");
    kk_kmq_free(reply);
    finish(p, 1);
}

static void send_next_event(struct probe *p)
{
    Kubemq__Event e = KUBEMQ__EVENT__INIT;
    char body[64];
    int n = snprintf(body, sizeof(body), "event-%ld", p->got + 1);
    int rc;

    e.clientid = (char *)p->client_id;
    e.channel = (char *)p->channel;
    e.body.data = (uint8_t *)body;
    e.body.len = (size_t)n;
    e.store = p->store_events;
    rc = kk_kmq_send_event(p->c, &e, on_event_sent, p);
    if (rc < 0) {
        printf("{\"event\":\"error\",\"op\":\"send-event\",\"err\":\"%s\",\"grpc_status\":-1}\n",
               kk_errname(rc));
        finish(p, 1);
    }
}

/* ---- subscriptions ---- */

static void on_sub_state(void *user, bool up, int err)
{
    printf("{\"event\":\"%s\",\"err\":\"%s\"}\n", up ? "subscribed" : "lost", kk_errname(err));
}

static void on_responded(void *arg, int status, int gs, const char *gm, void *reply)
{
    struct probe *p = arg;

    if (status == 0)
        p->answered++;
    else
        printf("{\"event\":\"error\",\"op\":\"send-response\",\"err\":\"%s\",\"grpc_status\":%d}\n",
               kk_errname(status), gs);
    check_done(p);
}

static void on_pause_end(uv_timer_t *t)
{
    struct probe *p = t->data;

    if (!p->sub)
        return;
    printf("{\"event\":\"resume\",\"buffered\":%zu,\"got\":%ld}\n", kk_kmq_sub_buffered(p->sub), p->got);
    kk_kmq_sub_resume(p->sub);
}

static void send_reply(struct probe *p, const char *id, const char *reply, const uint8_t *body, size_t n)
{
    Kubemq__Response resp = KUBEMQ__RESPONSE__INIT;
    int rc;

    resp.clientid = (char *)p->client_id;
    resp.requestid = (char *)id;
    resp.replychannel = (char *)reply;
    resp.body.data = (uint8_t *)body;
    resp.body.len = n;
    resp.executed = true;
    rc = kk_kmq_send_response(p->c, &resp, on_responded, p);
    if (rc < 0)
        printf("{\"event\":\"error\",\"op\":\"send-response\",\"err\":\"%s\",\"grpc_status\":-1}\n",
               kk_errname(rc));
}

/* The held reply goes out now, whatever the connection state. */
static void on_delay(uv_timer_t *t)
{
    struct probe *p = t->data;

    printf("{\"event\":\"replying\",\"state\":\"%s\"}\n", state_name(kk_kmq_client_state(p->c)));
    send_reply(p, p->held_id, p->held_reply, p->held_body, p->held_len);
}

static void on_request(void *user, void *msg)
{
    struct probe *p = user;
    Kubemq__Request *r = msg;
    uint8_t body[256];
    size_t n = r->body.len < 200 ? r->body.len : 200;

    p->got++;
    printf("{\"event\":\"request\",\"n\":%ld,\"body_len\":%zu,", p->got, r->body.len);
    print_str("body", r->body.data, n);
    putchar(',');
    print_str("reply", (const uint8_t *)r->replychannel, strlen(r->replychannel));
    printf("}\n");
    memcpy(body, "re:", 3);
    memcpy(body + 3, r->body.data, n);
    if (p->reply_delay_ms > 0 && !p->held) {
        p->held = true;
        snprintf(p->held_id, sizeof(p->held_id), "%s", r->requestid);
        snprintf(p->held_reply, sizeof(p->held_reply), "%s", r->replychannel);
        memcpy(p->held_body, body, n + 3);
        p->held_len = n + 3;
        uv_timer_start(&p->delay, on_delay, (uint64_t)p->reply_delay_ms, 0);
    } else {
        send_reply(p, r->requestid, r->replychannel, body, n + 3);
    }
    kk_kmq_free(msg);
    if (p->pause_after && p->got == p->pause_after) {
        printf("{\"event\":\"pause\",\"got\":%ld}\n", p->got);
        kk_kmq_sub_pause(p->sub);
        uv_timer_start(&p->pause, on_pause_end, (uint64_t)p->pause_ms, 0);
    }
}

static void on_event(void *user, void *msg)
{
    struct probe *p = user;
    Kubemq__EventReceive *e = msg;

    p->got++;
    printf("{\"event\":\"msg\",\"n\":%ld,\"seq\":%llu,", p->got, (unsigned long long)e->sequence);
    print_str("body", e->body.data, e->body.len < 200 ? e->body.len : 200);
    printf("}\n");
    kk_kmq_free(msg);
    check_done(p);
}

/* ---- queue downstream ---- */

static void queue_get(struct probe *p)
{
    Kubemq__QueuesDownstreamRequest r = KUBEMQ__QUEUES_DOWNSTREAM_REQUEST__INIT;
    char id[32];
    int rc;

    snprintf(id, sizeof(id), "get-%u", ++p->reqno);
    r.requestid = id;
    r.clientid = (char *)p->client_id;
    r.requesttypedata = KUBEMQ__QUEUES_DOWNSTREAM_REQUEST_TYPE__Get;
    r.channel = (char *)p->channel;
    r.maxitems = (int32_t)p->max_items;
    r.waittimeout = 1000;
    r.autoack = false;
    rc = kk_kmq_downstream_send(p->down, &r);
    if (rc < 0)
        printf("{\"event\":\"error\",\"op\":\"get\",\"err\":\"%s\"}\n", kk_errname(rc));
}

static void on_down_state(void *user, bool open, int err)
{
    struct probe *p = user;

    printf("{\"event\":\"%s\",\"err\":\"%s\"}\n", open ? "subscribed" : "lost", kk_errname(err));
    if (open)
        queue_get(p);
}

static void on_down_response(void *user, Kubemq__QueuesDownstreamResponse *resp)
{
    struct probe *p = user;
    Kubemq__QueuesDownstreamRequest ack = KUBEMQ__QUEUES_DOWNSTREAM_REQUEST__INIT;
    int64_t seqs[64];
    size_t n = 0;
    char id[32];

    if (resp->iserror)
        printf("{\"event\":\"queue-error\",\"type\":%d,\"error\":\"%s\"}\n", resp->requesttypedata,
               resp->error);
    for (size_t i = 0; i < resp->n_messages; i++) {
        Kubemq__QueueMessage *m = resp->messages[i];
        uint64_t seq = m->attributes ? m->attributes->sequence : 0;

        p->got++;
        printf("{\"event\":\"msg\",\"n\":%ld,\"seq\":%llu,", p->got, (unsigned long long)seq);
        print_str("body", m->body.data, m->body.len < 200 ? m->body.len : 200);
        printf("}\n");
        if (n < 64)
            seqs[n++] = (int64_t)seq;
    }
    if (resp->requesttypedata == KUBEMQ__QUEUES_DOWNSTREAM_REQUEST_TYPE__Get && !p->finishing) {
        if (n) {
            snprintf(id, sizeof(id), "ack-%u", ++p->reqno);
            ack.requestid = id;
            ack.clientid = (char *)p->client_id;
            ack.requesttypedata = KUBEMQ__QUEUES_DOWNSTREAM_REQUEST_TYPE__AckRange;
            ack.channel = (char *)p->channel;
            ack.reftransactionid = resp->transactionid;
            ack.n_sequencerange = n;
            ack.sequencerange = seqs;
            kk_kmq_downstream_send(p->down, &ack);
            printf("{\"event\":\"acked\",\"n\":%zu}\n", n);
        }
        if (p->got < p->count)
            queue_get(p);
    }
    kk_kmq_free(resp);
    check_done(p);
}

static void on_step(uv_timer_t *t)
{
    struct probe *p = t->data;

    if (!p->sub)
        return;
    printf("{\"event\":\"credit\",\"got\":%ld,\"outstanding\":%u}\n", p->got, kk_kmq_sub_outstanding(p->sub));
    kk_kmq_sub_add_credit(p->sub, (uint32_t)p->credit);
}

static void start_cmd(struct probe *p)
{
    int rc = 0;

    if (strcmp(p->cmd, "ping") == 0) {
        rc = kk_kmq_ping(p->c, on_ping, p);
    } else if (strcmp(p->cmd, "send-event") == 0) {
        send_next_event(p);
    } else if (strcmp(p->cmd, "respond") == 0 || strcmp(p->cmd, "events") == 0) {
        Kubemq__Subscribe s = KUBEMQ__SUBSCRIBE__INIT;
        struct kk_kmq_sub_cbs cbs = {on_event, on_sub_state};

        s.clientid = (char *)p->client_id;
        s.channel = (char *)p->channel;
        s.group = (char *)(p->group ? p->group : "");
        if (p->cmd[0] == 'r') {
            cbs.on_message = on_request;
            s.subscribetypedata = p->commands ? KUBEMQ__SUBSCRIBE__SUBSCRIBE_TYPE__Commands
                                              : KUBEMQ__SUBSCRIBE__SUBSCRIBE_TYPE__Queries;
        } else if (p->store) {
            s.subscribetypedata = KUBEMQ__SUBSCRIBE__SUBSCRIBE_TYPE__EventsStore;
            if (strcmp(p->store, "first") == 0)
                s.eventsstoretypedata = KUBEMQ__SUBSCRIBE__EVENTS_STORE_TYPE__StartFromFirst;
            else if (strcmp(p->store, "last") == 0)
                s.eventsstoretypedata = KUBEMQ__SUBSCRIBE__EVENTS_STORE_TYPE__StartFromLast;
            else if (strncmp(p->store, "seq:", 4) == 0) {
                s.eventsstoretypedata = KUBEMQ__SUBSCRIBE__EVENTS_STORE_TYPE__StartAtSequence;
                s.eventsstoretypevalue = atoll(p->store + 4);
            } else
                s.eventsstoretypedata = KUBEMQ__SUBSCRIBE__EVENTS_STORE_TYPE__StartNewOnly;
        } else {
            s.subscribetypedata = KUBEMQ__SUBSCRIBE__SUBSCRIBE_TYPE__Events;
        }
        rc = kk_kmq_subscribe(p->c, &s, &cbs, p, &p->sub);
        if (rc == 0 && p->credit > 0) {
            kk_kmq_sub_add_credit(p->sub, (uint32_t)p->credit);
            if (p->credit_step_ms > 0)
                uv_timer_start(&p->step, on_step, (uint64_t)p->credit_step_ms, (uint64_t)p->credit_step_ms);
        }
    } else if (strcmp(p->cmd, "queue") == 0) {
        struct kk_kmq_downstream_cbs cbs = {on_down_response, on_down_state};

        rc = kk_kmq_downstream_open(p->c, &cbs, p, &p->down);
    } else {
        rc = KK_EINVAL;
    }
    if (rc < 0) {
        printf("{\"event\":\"error\",\"op\":\"%s\",\"err\":\"%s\"}\n", p->cmd, kk_errname(rc));
        finish(p, 1);
    }
}

int main(int argc, char **argv)
{
    struct probe p = {.count = 1, .max_items = 10, .client_id = "kmq-probe"};
    struct kk_kmq_opts o = {.host = "127.0.0.1", .auto_reconnect = true, .reconnect_interval_ms = 200};
    long timeout_ms = 20000;
    int rc;

    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name) (strcmp(a, name) == 0 && v && ++i)
        if (OPT("--host"))
            o.host = v;
        else if (OPT("--port"))
            o.port = (uint16_t)atoi(v);
        else if (strcmp(a, "--tls") == 0)
            o.tls = true;
        else if (OPT("--ca"))
            o.tls_opts.ca_file = v;
        else if (OPT("--server-name"))
            o.tls_opts.server_name = v;
        else if (OPT("--token"))
            o.auth_token = v;
        else if (OPT("--reconnect-ms"))
            o.reconnect_interval_ms = (uint32_t)atoi(v);
        else if (OPT("--max-reconnects"))
            o.max_reconnects = (uint32_t)atoi(v);
        else if (OPT("--timeout-ms"))
            timeout_ms = atol(v);
        else if (OPT("--client-id"))
            p.client_id = v;
        else if (OPT("--max-message"))
            o.max_message_bytes = (size_t)atol(v);
        else if (OPT("--call-timeout-ms"))
            o.call_timeout_ms = (uint32_t)atoi(v);
        else if (OPT("--keepalive-ms"))
            o.keepalive_idle_ms = (uint32_t)atoi(v);
        else if (OPT("--keepalive-timeout-ms"))
            o.keepalive_timeout_ms = (uint32_t)atoi(v);
        else if (OPT("--linger-ms"))
            p.linger_ms = atol(v);
        else if (OPT("--channel"))
            p.channel = v;
        else if (OPT("--group"))
            p.group = v;
        else if (OPT("--count"))
            p.count = atol(v);
        else if (OPT("--pause-after"))
            p.pause_after = atol(v);
        else if (OPT("--pause-ms"))
            p.pause_ms = atol(v);
        else if (OPT("--reply-delay-ms"))
            p.reply_delay_ms = atol(v);
        else if (OPT("--credit"))
            p.credit = atol(v), o.message_credit = true;
        else if (OPT("--credit-step-ms"))
            p.credit_step_ms = atol(v);
        else if (OPT("--max-items"))
            p.max_items = atol(v);
        else if (OPT("--store"))
            p.store = v;
        else if (strcmp(a, "--no-reconnect") == 0)
            o.auto_reconnect = false;
        else if (strcmp(a, "--persist") == 0)
            p.store_events = true;
        else if (strcmp(a, "--commands") == 0)
            p.commands = true;
        else if (strcmp(a, "--debug") == 0)
            kk_log_set_level(KK_LOG_DEBUG);
        else if (a[0] != '-' && !p.cmd)
            p.cmd = a;
        else {
            fprintf(stderr, "kmq-probe: bad argument %s\n", a);
            return 2;
        }
#undef OPT
    }
    if (!p.cmd || !o.port || (strcmp(p.cmd, "ping") != 0 && !p.channel)) {
        fprintf(stderr, "kmq-probe: usage: see tests/tools/kmq_probe.c\n");
        return 2;
    }
    uv_loop_init(&p.loop);
    uv_timer_init(&p.loop, &p.timeout);
    uv_timer_init(&p.loop, &p.pause);
    uv_timer_init(&p.loop, &p.linger);
    uv_timer_init(&p.loop, &p.delay);
    uv_timer_init(&p.loop, &p.step);
    p.timeout.data = p.pause.data = p.linger.data = p.delay.data = p.step.data = &p;
    uv_timer_start(&p.timeout, on_timeout, (uint64_t)timeout_ms, 0);
    rc = kk_kmq_client_new(&p.loop, &o, on_state, &p, &p.c);
    if (rc < 0) {
        printf("{\"event\":\"error\",\"op\":\"new\",\"err\":\"%s\"}\n", kk_errname(rc));
        uv_close((uv_handle_t *)&p.timeout, NULL);
        uv_close((uv_handle_t *)&p.pause, NULL);
        uv_close((uv_handle_t *)&p.linger, NULL);
        uv_close((uv_handle_t *)&p.delay, NULL);
        uv_close((uv_handle_t *)&p.step, NULL);
        p.exit_code = 1;
    }
    uv_run(&p.loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(&p.loop);
    printf("{\"event\":\"closed\",\"loop_close\":%d}\n", rc);
    return rc ? 5 : p.exit_code;
}

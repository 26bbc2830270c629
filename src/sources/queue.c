/* kubemq.queue over QueuesDownstream (connector-behaviour.md §4.6,
 * kubemq-protocol.md §4.8): transactional polls with AutoAck off, then
 * AckRange for messages whose request succeeded and NAckRange for the rest,
 * so delivery is at least once and nothing is acked before the target
 * finished.  A poll asks for no more messages than the binding has free
 * slots (minus what other connections' polls may still bring). */
#include "sources.h"

#include <stdlib.h>
#include <string.h>

#include "kk/clock.h"
#include "kk/err.h"
#include "kk/log.h"
#include "kk/rand.h"

/* How long a nack is held before it is sent (kubemq-targets sleeps 1 s
 * after a NAck). */
#define NACK_DELAY_MS 1000
/* Pause after a poll the broker answered with an error. */
#define POLL_ERROR_PAUSE_MS 1000

struct q_txn;

struct q_item {
    struct q_txn *t;
    int64_t seq;
};

/* One polled batch: settled in one AckRange + one NAckRange when its last
 * message is done.  One allocation: items, ack/nack arrays, transaction id. */
struct q_txn {
    struct src_conn *c;
    struct q_txn *next;  /* in the held-nack FIFO */
    uint64_t due_ms;
    unsigned total, done, n_ack, n_nack;
    int64_t *ack, *nack;
    char *txid;
    struct q_item items[];
};

static void send_settle(struct src_conn *c, Kubemq__QueuesDownstreamRequestType type, const char *txid,
                        int64_t *seqs, size_t n)
{
    Kubemq__QueuesDownstreamRequest r = KUBEMQ__QUEUES_DOWNSTREAM_REQUEST__INIT;
    char id[37];
    kk_uuid4(id);
    r.requestid = id;
    r.clientid = c->client_id;
    r.requesttypedata = type;
    r.channel = (char *)c->src->o.channel;
    r.reftransactionid = (char *)txid;
    r.n_sequencerange = n;
    r.sequencerange = seqs;
    int rv = c->ds ? kk_kmq_downstream_send(c->ds, &r) : KK_ECLOSED;
    if (rv != 0)
        KK_WARN(c->src->bname, "cannot settle transaction %s (%s); the broker returns its messages to the queue",
                txid, kk_strerror(rv));
}

static void on_queue_timer(uv_timer_t *t);

/* Arms the queue timer for the earliest of the next held nack and the end
 * of a poll pause. */
static void arm_timer(struct kk_src *s)
{
    if (!s->nack_timer_open)
        return;
    uint64_t next = UINT64_MAX;
    if (s->nack_head)
        next = s->nack_head->due_ms;
    if (s->poll_paused && s->poll_resume_ms < next)
        next = s->poll_resume_ms;
    if (next == UINT64_MAX) {
        uv_timer_stop(&s->nack_timer);
        return;
    }
    uint64_t now = kk_mono_ms();
    uv_timer_start(&s->nack_timer, on_queue_timer, next > now ? next - now : 0, 0);
}

static void send_nacks(struct q_txn *t)
{
    send_settle(t->c, KUBEMQ__QUEUES_DOWNSTREAM_REQUEST_TYPE__NAckRange, t->txid, t->nack, t->n_nack);
    free(t);
}

/* Sends every held nack due by now (all of them when now is UINT64_MAX). */
static void flush_nacks(struct kk_src *s, uint64_t now)
{
    while (s->nack_head && s->nack_head->due_ms <= now) {
        struct q_txn *t = s->nack_head;
        s->nack_head = t->next;
        if (!s->nack_head)
            s->nack_tail = NULL;
        send_nacks(t);
    }
}

static void on_queue_timer(uv_timer_t *timer)
{
    struct kk_src *s = timer->data;
    uint64_t now = kk_mono_ms();
    flush_nacks(s, now);
    if (s->poll_paused && now >= s->poll_resume_ms)
        s->poll_paused = false;
    arm_timer(s);
    kk__src_queue_poll_all(s);
}

static void pause_polls(struct kk_src *s)
{
    if (s->stopped || s->poll_paused)
        return;
    s->poll_paused = true;
    s->poll_resume_ms = kk_mono_ms() + POLL_ERROR_PAUSE_MS;
    arm_timer(s);
}

static void settle(struct q_txn *t)
{
    struct src_conn *c = t->c;
    struct kk_src *s = c->src;
    if (t->n_ack)
        send_settle(c, KUBEMQ__QUEUES_DOWNSTREAM_REQUEST_TYPE__AckRange, t->txid, t->ack, t->n_ack);
    s->acked += t->n_ack;
    s->nacked += t->n_nack;
    if (!t->n_nack) {
        free(t);
        return;
    }
    if (s->stopped || !s->nack_timer_open) {
        send_nacks(t); /* draining: hand messages back at once */
        return;
    }
    /* Hold the nack: the broker redelivers a nacked message at once, and a
     * target that keeps failing must not turn that into a hot loop. */
    t->due_ms = kk_mono_ms() + NACK_DELAY_MS;
    t->next = NULL;
    if (s->nack_tail)
        s->nack_tail->next = t;
    else
        s->nack_head = t;
    s->nack_tail = t;
    if (s->nack_head == t)
        arm_timer(s);
}

static void item_done(struct q_item *it, bool ok)
{
    struct q_txn *t = it->t;
    if (ok)
        t->ack[t->n_ack++] = it->seq;
    else
        t->nack[t->n_nack++] = it->seq;
    if (++t->done == t->total)
        settle(t);
}

static void on_reply(void *ctx, const struct kk_outcome *out)
{
    struct q_item *it = ctx;
    struct src_conn *c = it->t->c;
    if (out->is_error)
        KK_WARN(c->src->bname, "error processing request from queue, %s, sending back to the queue", out->error);
    else if (out->partial)
        KK_WARN(c->src->bname, "request from queue only partly processed, sending back to the queue");
    kk__src_publish(c, out->response_json, out->response_len);
    item_done(it, !out->is_error && !out->partial);
}

static void handle_messages(struct src_conn *c, Kubemq__QueuesDownstreamResponse *resp)
{
    struct kk_src *s = c->src;
    size_t n = resp->n_messages;
    size_t idl = strlen(resp->transactionid ? resp->transactionid : "") + 1;
    struct q_txn *t = malloc(sizeof(*t) + n * sizeof(struct q_item) + 2 * n * sizeof(int64_t) + idl);
    if (!t) {
        KK_ERROR(s->bname, "out of memory: %zu queue messages left unsettled", n);
        return; /* the broker returns them when the stream ends or they time out */
    }
    memset(t, 0, sizeof(*t));
    t->c = c;
    t->total = (unsigned)n;
    t->ack = (int64_t *)(t->items + n);
    t->nack = t->ack + n;
    t->txid = memcpy(t->nack + n, resp->transactionid ? resp->transactionid : "", idl);

    for (size_t i = 0; i < n; i++) {
        Kubemq__QueueMessage *m = resp->messages[i];
        struct q_item *it = &t->items[i];
        it->t = t;
        it->seq = m->attributes ? (int64_t)m->attributes->sequence : 0;
        s->received++;
        int rv = s->stopped ? KK_ESHUTDOWN
                            : kk_binding_submit(s->b, (const char *)m->body.data, m->body.len, 0, on_reply, it);
        if (rv != 0) {
            KK_DEBUG(s->bname, "queue message %lld returned to the queue: %s", (long long)it->seq, kk_strerror(rv));
            item_done(it, false); /* may free t on the last item */
        }
    }
}

static void ds_on_response(void *user, Kubemq__QueuesDownstreamResponse *resp)
{
    struct src_conn *c = user;
    struct kk_src *s = c->src;
    if (resp->requesttypedata == KUBEMQ__QUEUES_DOWNSTREAM_REQUEST_TYPE__Get) {
        if (c->poll_outstanding && resp->refrequestid && strcmp(resp->refrequestid, c->poll_id) == 0) {
            c->poll_outstanding = false;
            s->reserved -= c->poll_items;
            c->poll_items = 0;
        }
        if (resp->iserror) {
            KK_WARN(s->bname, "queue poll on %s failed: %s", s->o.channel, resp->error ? resp->error : "");
            pause_polls(s);
        } else if (resp->n_messages) {
            handle_messages(c, resp);
        }
    } else if (resp->requesttypedata == KUBEMQ__QUEUES_DOWNSTREAM_REQUEST_TYPE__CloseByServer) {
        KK_WARN(s->bname, "broker closed the queue stream: %s", resp->error ? resp->error : "");
    } else if (resp->iserror) {
        KK_WARN(s->bname, "queue settle failed: %s", resp->error ? resp->error : "");
    }
    kk_kmq_free(resp);
    kk__src_queue_poll_all(s);
}

static void ds_on_state(void *user, bool open, int err)
{
    struct src_conn *c = user;
    struct kk_src *s = c->src;
    c->live = open;
    if (!open) {
        if (c->poll_outstanding) {
            c->poll_outstanding = false;
            s->reserved -= c->poll_items;
            c->poll_items = 0;
        }
        if (!s->stopped)
            KK_WARN(s->bname, "queue stream for %s lost: %s", s->o.channel, kk_strerror(err));
        return;
    }
    KK_INFO(s->bname, "polling queue %s (connection %u)", s->o.channel, c->index);
    kk__src_queue_poll_all(s);
}

int kk__src_queue_open(struct src_conn *c)
{
    static const struct kk_kmq_downstream_cbs cbs = {ds_on_response, ds_on_state};
    int rv = kk_kmq_downstream_open(c->client, &cbs, c, &c->ds);
    if (rv != 0)
        c->ds = NULL;
    return rv;
}

static void poll_one(struct src_conn *c)
{
    struct kk_src *s = c->src;
    if (s->stopped || !c->ds || !c->live || c->poll_outstanding || s->poll_paused)
        return;
    int32_t avail = (int32_t)kk_binding_free_slots(s->b) - s->reserved;
    if (avail <= 0)
        return;
    int32_t n = avail < s->o.batch_size ? avail : s->o.batch_size;

    Kubemq__QueuesDownstreamRequest r = KUBEMQ__QUEUES_DOWNSTREAM_REQUEST__INIT;
    kk_uuid4(c->poll_id);
    r.requestid = c->poll_id;
    r.clientid = c->client_id;
    r.requesttypedata = KUBEMQ__QUEUES_DOWNSTREAM_REQUEST_TYPE__Get;
    r.channel = (char *)s->o.channel;
    r.maxitems = n;
    r.waittimeout = s->o.wait_timeout_ms;
    r.autoack = 0;
    int rv = kk_kmq_downstream_send(c->ds, &r);
    if (rv != 0) {
        KK_WARN(s->bname, "queue poll on %s not sent: %s", s->o.channel, kk_strerror(rv));
        return;
    }
    c->poll_outstanding = true;
    c->poll_items = n;
    s->reserved += n;
}

void kk__src_queue_poll_all(struct kk_src *s)
{
    for (unsigned i = 0; i < s->n_conns; i++)
        poll_one(&s->conns[i]);
}

void kk__src_queue_stop(struct kk_src *s)
{
    /* Held nacks go out now so their messages return to the queue for
     * another consumer.  Outstanding polls may still bring messages:
     * handle_messages nacks them at once because s->stopped is set.
     * In-flight ones settle as they end. */
    flush_nacks(s, UINT64_MAX);
    s->poll_paused = false;
    if (s->nack_timer_open)
        uv_timer_stop(&s->nack_timer);
}

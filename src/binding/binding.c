/* A binding and the state machine of every request in flight through it.
 * Design note: DESIGN.md next to this file (states, timers, drain).
 *
 * Everything runs on the loop thread.  Two handles per binding:
 *   - timer: one for all requests; the next due time is the minimum of a
 *     min-heap of per-request wake times (retry delays, deadlines), the rate
 *     limiter's next token and the drain deadline.  No per-event scan.
 *   - idle: "later in this loop turn" work: replies decided inside
 *     kk_binding_submit (which must never call back), on_capacity, close.
 */
#include "kk/binding_ctl.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kk/backoff.h"
#include "kk/clock.h"
#include "kk/err.h"
#include "kk/log.h"
#include "kk/request.h"
#include "kk/tbucket.h"

#define REPLY_MAX ((size_t)64 << 20) /* Response JSON of one request (base64 of <= 48 MiB) */
#define ERRS_MAX ((size_t)64 << 10)  /* accumulated "All attempts fail" text */
#define FREE_MAX 1024                /* recycled request structs kept per binding (~250 B each) */
#define NOT_IN_HEAP SIZE_MAX

static const char shutdown_text[] = "shutting down: request not completed within shutdown_timeout_seconds";
static const char deadline_text[] = "context deadline exceeded";

const double kk_lat_bounds_s[KK_LAT_NBUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                 0.1,    0.25,  0.5,    1,     2.5,  5,     10};

enum req_state {
    REQ_RECEIVED,    /* inside kk_binding_submit: the body is about to be decoded */
    REQ_DECODED,     /* decoded and metadata merged: the next attempt may start */
    REQ_WAIT_RATE,   /* queued in the rate FIFO for a token (binding timer) */
    REQ_WAIT_TARGET, /* the target has the call: waiting for call->done */
    REQ_WAIT_RETRY,  /* waiting for the retry delay to pass (binding timer) */
    REQ_REPLYING,    /* outcome decided: waiting to hand the reply to the source */
    REQ_DONE,        /* replied: the request goes back to the free list */
};

static const char *const state_name[] = {
    [REQ_RECEIVED] = "RECEIVED",
    [REQ_DECODED] = "DECODED",
    [REQ_WAIT_RATE] = "WAIT_RATE",
    [REQ_WAIT_TARGET] = "WAIT_TARGET",
    [REQ_WAIT_RETRY] = "WAIT_RETRY",
    [REQ_REPLYING] = "REPLYING",
    [REQ_DONE] = "DONE",
};

/* What a step of the driver tells the driver. */
enum step {
    STEP_AGAIN, /* state changed: run the next step now */
    STEP_WAIT,  /* waiting for an event (timer, target, idle) */
    STEP_GONE,  /* the request ended and was recycled: do not touch it */
};

enum queue { Q_NONE, Q_RATE, Q_REPLY };

struct req {
    struct kk_binding *b;
    uint64_t id;
    enum req_state state;
    struct req *live_prev, *live_next; /* every live request, for the drain */
    struct req *q_prev, *q_next;       /* rate FIFO or deferred replies */
    enum queue queue;
    size_t heap_idx;      /* NOT_IN_HEAP unless waiting on the timer */
    uint64_t wake_ms;     /* heap key */
    uint64_t deadline_ms; /* from the source; 0 = none */
    uint64_t start_ms;
    kk_reply_cb cb;
    void *ctx;
    const char *body; /* only during kk_binding_submit */
    size_t body_len;
    struct kk_request rq;
    bool have_rq;
    bool called; /* the target saw this call: release() is due */
    bool token;  /* the rate limiter granted a token */
    bool is_error;
    bool invalid;
    unsigned attempt;      /* attempts made so far */
    struct kk_result *res; /* the target's success result, valid during call->done */
    struct kk_target_call call;
    struct kk_buf errs; /* error text; allocated on the error path only */
};

struct kk_binding {
    uv_loop_t *loop;
    const struct kk_binding_cfg *cfg;
    struct kk_target *target;
    struct kk_source *source;

    /* middleware (connector-behaviour.md §5) */
    unsigned retry_attempts;
    uint64_t retry_cap_ms;
    uint64_t retry_jitter_ms;
    enum kk_retry_type retry_type;
    bool rate_limited;
    struct kk_tbucket tb;
    struct kk_kv *md; /* the `metadata` property, sorted; one allocation with its strings */
    size_t n_md;
    bool raw; /* source do_not_parse_payload */
    unsigned concurrency;

    /* requests */
    unsigned live;
    uint64_t next_id;
    struct req *live_head;
    struct req **heap; /* capacity = concurrency */
    size_t heap_n;
    struct req *rate_head, *rate_tail;
    uint64_t rate_due;
    struct req *reply_head, *reply_tail;
    struct req *free_list;
    unsigned n_free;
    int in_submit;
    bool cap_pending;

    uv_timer_t timer;
    uint64_t timer_due; /* 0 when stopped */
    uv_idle_t idle;
    bool idle_on;

    /* drain and close */
    bool draining, drain_expired, closing, close_requested;
    uint64_t drain_deadline;
    void (*close_done)(void *arg);
    void *close_arg;
    int open_handles;

    struct kk_buf reply; /* Response JSON, reused by every reply */
    struct kk_binding_stats st;
};

static void req_run(struct req *r);
static void arm_timer(struct kk_binding *b);

/* ---- small containers ---------------------------------------------------- */

static void heap_swap(struct kk_binding *b, size_t i, size_t j)
{
    struct req *t = b->heap[i];
    b->heap[i] = b->heap[j];
    b->heap[j] = t;
    b->heap[i]->heap_idx = i;
    b->heap[j]->heap_idx = j;
}

static void heap_up(struct kk_binding *b, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (b->heap[p]->wake_ms <= b->heap[i]->wake_ms)
            break;
        heap_swap(b, i, p);
        i = p;
    }
}

static void heap_down(struct kk_binding *b, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < b->heap_n && b->heap[l]->wake_ms < b->heap[m]->wake_ms)
            m = l;
        if (l + 1 < b->heap_n && b->heap[l + 1]->wake_ms < b->heap[m]->wake_ms)
            m = l + 1;
        if (m == i)
            break;
        heap_swap(b, i, m);
        i = m;
    }
}

/* Capacity is the concurrency cap, and each live request is in the heap at
 * most once, so a push never overflows. */
static void heap_push(struct req *r, uint64_t wake_ms)
{
    struct kk_binding *b = r->b;
    r->wake_ms = wake_ms;
    r->heap_idx = b->heap_n;
    b->heap[b->heap_n++] = r;
    heap_up(b, r->heap_idx);
    arm_timer(b);
}

static void heap_remove(struct req *r)
{
    struct kk_binding *b = r->b;
    size_t i = r->heap_idx;
    if (i == NOT_IN_HEAP)
        return;
    r->heap_idx = NOT_IN_HEAP;
    b->heap_n--;
    if (i == b->heap_n)
        return;
    b->heap[i] = b->heap[b->heap_n];
    b->heap[i]->heap_idx = i;
    heap_up(b, i);
    heap_down(b, b->heap[i]->heap_idx);
}

static void q_push(struct req *r, enum queue q)
{
    struct kk_binding *b = r->b;
    struct req **head = q == Q_RATE ? &b->rate_head : &b->reply_head;
    struct req **tail = q == Q_RATE ? &b->rate_tail : &b->reply_tail;
    r->queue = q;
    r->q_next = NULL;
    r->q_prev = *tail;
    if (*tail)
        (*tail)->q_next = r;
    else
        *head = r;
    *tail = r;
}

static void q_remove(struct req *r)
{
    struct kk_binding *b = r->b;
    if (r->queue == Q_NONE)
        return;
    struct req **head = r->queue == Q_RATE ? &b->rate_head : &b->reply_head;
    struct req **tail = r->queue == Q_RATE ? &b->rate_tail : &b->reply_tail;
    if (r->q_prev)
        r->q_prev->q_next = r->q_next;
    else
        *head = r->q_next;
    if (r->q_next)
        r->q_next->q_prev = r->q_prev;
    else
        *tail = r->q_prev;
    r->q_prev = r->q_next = NULL;
    r->queue = Q_NONE;
}

static void idle_kick(struct kk_binding *b);

/* ---- timer --------------------------------------------------------------- */

static void on_timer(uv_timer_t *h);

static void arm_timer(struct kk_binding *b)
{
    if (b->closing)
        return;
    uint64_t due = UINT64_MAX;
    if (b->heap_n)
        due = b->heap[0]->wake_ms;
    if (b->rate_head && b->rate_due < due)
        due = b->rate_due;
    if (b->draining && b->drain_deadline && !b->drain_expired && b->drain_deadline < due)
        due = b->drain_deadline;
    if (due == UINT64_MAX) {
        if (b->timer_due) {
            uv_timer_stop(&b->timer);
            b->timer_due = 0;
        }
        return;
    }
    if (due == b->timer_due)
        return;
    uint64_t now = kk_mono_ms();
    b->timer_due = due;
    uv_timer_start(&b->timer, on_timer, due > now ? due - now : 0, 0);
}

static void fail_all_on_drain(struct kk_binding *b)
{
    /* Once, at the drain deadline: every waiting request fails now. */
    struct req *next;
    for (struct req *r = b->live_head; r; r = next) {
        next = r->live_next;
        if (r->state != REQ_REPLYING && r->state != REQ_DONE)
            req_run(r);
    }
}

static void pump_rate(struct kk_binding *b, uint64_t now)
{
    while (b->rate_head) {
        uint64_t wait = kk_tbucket_take(&b->tb, now);
        if (wait) {
            b->rate_due = now + wait;
            return;
        }
        struct req *r = b->rate_head;
        q_remove(r);
        r->token = true;
        req_run(r);
    }
}

static void on_timer(uv_timer_t *h)
{
    struct kk_binding *b = h->data;
    uint64_t now = kk_mono_ms();
    b->timer_due = 0;
    if (b->draining && b->drain_deadline && !b->drain_expired && now >= b->drain_deadline) {
        b->drain_expired = true;
        KK_WARN(b->cfg->name, "drain deadline passed with %u request(s) in flight: failing them", b->live);
        fail_all_on_drain(b);
    }
    if (b->rate_head && now >= b->rate_due)
        pump_rate(b, now);
    while (b->heap_n && b->heap[0]->wake_ms <= now) {
        struct req *r = b->heap[0];
        heap_remove(r);
        req_run(r);
    }
    arm_timer(b);
}

/* ---- the request state machine -------------------------------------------- */

static void req_set_state(struct req *r, enum req_state s)
{
    if (r->state == s)
        return;
    KK_DEBUG(r->b->cfg->name, "request %" PRIu64 ": %s -> %s", r->id, state_name[r->state], state_name[s]);
    r->state = s;
}

static const char *errs_cstr(struct req *r)
{
    /* The text stays NUL-terminated without counting the NUL. */
    if (!r->errs.base)
        return "";
    return r->errs.base;
}

static void errs_terminate(struct req *r)
{
    char *p = kk_buf_reserve(&r->errs, 1);
    if (p)
        *p = '\0';
    else if (r->errs.len)
        r->errs.base[--r->errs.len] = '\0';
}

static void errs_set(struct req *r, const char *prefix, const char *text)
{
    if (!r->errs.max)
        kk_buf_init(&r->errs, ERRS_MAX);
    kk_buf_reset(&r->errs);
    kk_buf_append_str(&r->errs, prefix);
    kk_buf_append_str(&r->errs, text);
    errs_terminate(r);
}

/* Adds "#<attempt>: <text>" under kubemq-targets' "All attempts fail:". */
static void errs_add_attempt(struct req *r, unsigned attempt_no, const char *text)
{
    if (!r->errs.max)
        kk_buf_init(&r->errs, ERRS_MAX);
    if (r->errs.len == 0)
        kk_buf_append_str(&r->errs, "All attempts fail:");
    size_t keep = r->errs.len;
    if (kk_buf_printf(&r->errs, "\n#%u: %s", attempt_no, text) < 0)
        r->errs.len = keep; /* over the bound: keep the attempts listed so far */
    errs_terminate(r);
}

/* Ends the current wait with an error: leaves queues and heap, cancels a
 * target call in progress. */
static void req_abort(struct req *r, bool shutdown)
{
    struct kk_binding *b = r->b;
    heap_remove(r);
    q_remove(r);
    if (r->state == REQ_WAIT_TARGET)
        b->target->vt->cancel(b->target, &r->call);
    if (shutdown)
        errs_set(r, "", shutdown_text);
    else
        errs_add_attempt(r, r->attempt + 1, deadline_text);
    r->is_error = true;
    req_set_state(r, REQ_REPLYING);
}

static enum step step_decode(struct req *r)
{
    struct kk_binding *b = r->b;
    char perr[256] = "";
    /* Parse and merge the binding's metadata in one allocation, the data
     * decoded once (no parse-then-merge copy). */
    int rv = kk_request_decode(&r->rq, r->body, r->body_len, b->raw, b->md, b->n_md, perr, sizeof(perr));
    r->body = NULL;
    if (rv < 0) {
        errs_set(r, "invalid request format, ", perr[0] ? perr : kk_strerror(rv));
        r->is_error = r->invalid = true;
        req_set_state(r, REQ_REPLYING);
        return STEP_AGAIN;
    }
    r->have_rq = true;
    req_set_state(r, REQ_DECODED);
    return STEP_AGAIN;
}

static enum step start_attempt(struct req *r)
{
    struct kk_binding *b = r->b;
    r->called = true;
    r->call.req = &r->rq;
    r->call.deadline_ms = r->deadline_ms;
    r->call.attempt = r->attempt;
    r->call.max_attempts = b->retry_attempts;
    req_set_state(r, REQ_WAIT_TARGET);
    if (r->deadline_ms)
        heap_push(r, r->deadline_ms);
    int rv = b->target->vt->submit(b->target, &r->call);
    if (rv < 0) {
        /* The contract says errors come through done; be safe anyway. */
        heap_remove(r);
        errs_add_attempt(r, ++r->attempt, kk_strerror(rv));
        r->is_error = true;
        req_set_state(r, REQ_REPLYING);
        return STEP_AGAIN;
    }
    return STEP_WAIT;
}

/* DECODED: one attempt begins by taking a rate-limit token (every attempt
 * takes one, as the Go middleware chain does). Waiters queue in FIFO order
 * so one token wakes one request. */
static enum step step_attempt(struct req *r)
{
    struct kk_binding *b = r->b;
    if (b->rate_limited) {
        if (!b->rate_head) {
            uint64_t now = kk_mono_ms();
            uint64_t wait = kk_tbucket_take(&b->tb, now);
            if (!wait)
                return start_attempt(r);
            b->rate_due = now + wait;
        }
        r->token = false;
        q_push(r, Q_RATE);
        req_set_state(r, REQ_WAIT_RATE);
        if (r->deadline_ms)
            heap_push(r, r->deadline_ms);
        arm_timer(b);
        return STEP_WAIT;
    }
    return start_attempt(r);
}

static enum step step_wait_rate(struct req *r)
{
    if (!r->token)
        return STEP_WAIT;
    r->token = false;
    heap_remove(r);
    return start_attempt(r);
}

static enum step step_wait_retry(struct req *r)
{
    if (r->heap_idx != NOT_IN_HEAP)
        return STEP_WAIT; /* not due yet */
    req_set_state(r, REQ_DECODED);
    return STEP_AGAIN;
}

static void observe(struct kk_binding *b, struct req *r, size_t resp_len)
{
    struct kk_binding_stats *st = &b->st;
    st->requests_count++;
    st->requests_volume += r->have_rq ? r->rq.data_len : 0;
    if (r->is_error) {
        st->errors_count++;
    } else {
        st->responses_count++;
        st->responses_volume += resp_len;
    }
    double s = (double)(kk_mono_ms() - r->start_ms) / 1000.0;
    size_t i = 0;
    while (i < KK_LAT_NBUCKETS && s > kk_lat_bounds_s[i])
        i++;
    st->lat_bucket[i]++;
    st->lat_count++;
    st->lat_sum_s += s;
}

static enum step step_reply(struct req *r)
{
    struct kk_binding *b = r->b;
    if (b->in_submit) {
        /* Never call back from inside kk_binding_submit. */
        q_push(r, Q_REPLY);
        idle_kick(b);
        return STEP_WAIT;
    }
    struct kk_outcome o = {0};
    kk_buf_reset(&b->reply);
    size_t resp_len = 0;
    if (!r->is_error) {
        struct kk_result *res = r->res;
        struct kk_kv md[1 + sizeof(res->md) / sizeof(res->md[0])];
        size_t n = 0;
        md[n++] = (struct kk_kv){"result", "ok"};
        for (size_t i = 0; i < res->n_md && i < sizeof(res->md) / sizeof(res->md[0]); i++)
            md[n++] = res->md[i];
        const uint8_t *data = NULL;
        if (res->has_data) {
            data = res->data.base ? (const uint8_t *)res->data.base : (const uint8_t *)"";
            resp_len = res->data.len;
        }
        int rv = kk_response_json(&b->reply, md, n, data, resp_len, false, "");
        if (rv < 0) {
            kk_buf_reset(&b->reply);
            errs_add_attempt(r, r->attempt, "response too large");
            r->is_error = true;
        }
        o.partial = res->partial;
        r->res = NULL;
    }
    if (r->is_error) {
        o.is_error = true;
        o.error = errs_cstr(r);
        o.invalid_request = r->invalid;
        o.partial = false;
        if (kk_response_json(&b->reply, NULL, 0, NULL, 0, true, o.error) < 0) {
            kk_buf_reset(&b->reply);
            kk_response_json(&b->reply, NULL, 0, NULL, 0, true, "error text too large");
        }
    } else {
        o.error = "";
    }
    /* NUL after the JSON (not counted) so sources may treat it as a string. */
    char *nul = kk_buf_reserve(&b->reply, 1);
    if (nul)
        *nul = '\0';
    o.response_json = b->reply.base ? b->reply.base : "";
    o.response_len = b->reply.len;
    if (!r->invalid)
        observe(b, r, resp_len);
    else
        b->st.invalid++;
    r->cb(r->ctx, &o);
    req_set_state(r, REQ_DONE);
    return STEP_AGAIN;
}

static enum step step_done(struct req *r)
{
    struct kk_binding *b = r->b;
    if (r->called)
        b->target->vt->release(b->target, &r->call);
    if (r->have_rq)
        kk_request_free(&r->rq);
    kk_buf_free(&r->errs);
    if (r->live_prev)
        r->live_prev->live_next = r->live_next;
    else
        b->live_head = r->live_next;
    if (r->live_next)
        r->live_next->live_prev = r->live_prev;
    b->live--;
    if (b->n_free < FREE_MAX) {
        r->q_next = b->free_list;
        b->free_list = r;
        b->n_free++;
    } else {
        free(r);
    }
    b->cap_pending = true;
    idle_kick(b);
    return STEP_GONE;
}

static bool is_waiting(enum req_state s)
{
    return s == REQ_DECODED || s == REQ_WAIT_RATE || s == REQ_WAIT_TARGET || s == REQ_WAIT_RETRY;
}

/* The driver: runs steps while they make progress.  Deadlines (the request's
 * and the drain's) are checked here and nowhere else. */
static void req_run(struct req *r)
{
    enum step st;
    do {
        if (is_waiting(r->state)) {
            if (r->b->drain_expired)
                req_abort(r, true);
            else if (r->deadline_ms && kk_mono_ms() >= r->deadline_ms)
                req_abort(r, false);
        }
        switch (r->state) {
        case REQ_RECEIVED:
            st = step_decode(r);
            break;
        case REQ_DECODED:
            st = step_attempt(r);
            break;
        case REQ_WAIT_RATE:
            st = step_wait_rate(r);
            break;
        case REQ_WAIT_TARGET:
            st = STEP_WAIT; /* on_target_done moves on */
            break;
        case REQ_WAIT_RETRY:
            st = step_wait_retry(r);
            break;
        case REQ_REPLYING:
            st = step_reply(r);
            break;
        case REQ_DONE:
        default:
            st = step_done(r);
            break;
        }
    } while (st == STEP_AGAIN);
}

static void on_target_done(struct kk_target_call *call, struct kk_result *res)
{
    struct req *r = call->user;
    struct kk_binding *b = r->b;
    if (r->state != REQ_WAIT_TARGET) {
        KK_ERROR(b->cfg->name, "request %" PRIu64 ": target answered in state %s", r->id,
                 state_name[r->state]);
        return;
    }
    heap_remove(r); /* its deadline entry */
    r->attempt++;
    if (res->err == 0) {
        r->res = res;
        req_set_state(r, REQ_REPLYING);
        req_run(r);
        return;
    }
    const char *text = res->error && res->error[0] ? res->error : kk_strerror(res->err);
    errs_add_attempt(r, r->attempt, text);
    KK_DEBUG(b->cfg->name, "retry %u failed, error: %s", r->attempt - 1, text);
    if (res->retryable && r->attempt < b->retry_attempts && !b->drain_expired) {
        uint64_t delay = kk_retry_delay(b->retry_type, r->attempt - 1, b->retry_cap_ms, b->retry_jitter_ms);
        uint64_t at = kk_mono_ms() + delay;
        if (!r->deadline_ms || at < r->deadline_ms) {
            b->st.retries++;
            req_set_state(r, REQ_WAIT_RETRY);
            heap_push(r, at);
            return;
        }
    }
    r->is_error = true;
    req_set_state(r, REQ_REPLYING);
    req_run(r);
}

/* ---- idle: deferred replies, capacity, close ---------------------------- */

static void begin_close(struct kk_binding *b);

static void on_idle(uv_idle_t *h)
{
    struct kk_binding *b = h->data;
    /* Detach first: replies may lead to new submits, which wait for the next turn. */
    struct req *list = b->reply_head;
    b->reply_head = b->reply_tail = NULL;
    while (list) {
        struct req *r = list;
        list = r->q_next;
        r->q_next = r->q_prev = NULL;
        r->queue = Q_NONE;
        req_run(r);
    }
    if (b->cap_pending) {
        b->cap_pending = false;
        if (b->source && !b->draining && b->live < b->concurrency && b->source->vt->on_capacity)
            b->source->vt->on_capacity(b->source);
    }
    if (!b->reply_head && !b->cap_pending) {
        uv_idle_stop(&b->idle);
        b->idle_on = false;
    }
    if (b->close_requested && b->live == 0 && !b->closing)
        begin_close(b);
}

static void idle_kick(struct kk_binding *b)
{
    if (b->idle_on || b->closing)
        return;
    b->idle_on = true;
    uv_idle_start(&b->idle, on_idle);
}

/* ---- public: sources ------------------------------------------------------ */

static struct req *req_alloc(struct kk_binding *b)
{
    struct req *r = b->free_list;
    if (r) {
        b->free_list = r->q_next;
        b->n_free--;
    } else {
        r = malloc(sizeof(*r));
        if (!r)
            return NULL;
    }
    memset(r, 0, sizeof(*r));
    return r;
}

int kk_binding_submit(struct kk_binding *b, const char *body, size_t len, uint64_t deadline_ms,
                      kk_reply_cb cb, void *ctx)
{
    if (b->draining || !b->target)
        return KK_ESHUTDOWN;
    if (b->live >= b->concurrency)
        return KK_EBUSY;
    struct req *r = req_alloc(b);
    if (!r)
        return KK_ENOMEM;
    r->b = b;
    r->id = ++b->next_id;
    r->heap_idx = NOT_IN_HEAP;
    r->deadline_ms = deadline_ms;
    r->start_ms = kk_mono_ms();
    r->cb = cb;
    r->ctx = ctx;
    r->body = body ? body : "";
    r->body_len = len;
    r->call.done = on_target_done;
    r->call.user = r;
    r->live_next = b->live_head;
    if (b->live_head)
        b->live_head->live_prev = r;
    b->live_head = r;
    b->live++;
    r->state = REQ_RECEIVED;
    if (b->live >= b->concurrency && b->source && b->source->vt->on_full)
        b->source->vt->on_full(b->source); /* before the source delivers another */
    KK_DEBUG(b->cfg->name, "request %" PRIu64 ": -> RECEIVED (%zu bytes)", r->id, len);
    b->in_submit++;
    req_run(r);
    b->in_submit--;
    return 0;
}

unsigned kk_binding_free_slots(const struct kk_binding *b)
{
    return b->live >= b->concurrency ? 0 : b->concurrency - b->live;
}

const char *kk_binding_name(const struct kk_binding *b)
{
    return b->cfg->name;
}
const struct kk_binding_cfg *kk_binding_config(const struct kk_binding *b)
{
    return b->cfg;
}
uv_loop_t *kk_binding_loop(const struct kk_binding *b)
{
    return b->loop;
}

/* ---- public: owner ---------------------------------------------------------- */

/* Integer property in [min, max]; absent or empty gives def. */
static int prop_int(const struct kk_props *p, const char *key, int64_t def, int64_t min, int64_t max,
                    int64_t *out)
{
    const char *v = kk_props_get(p, key);
    if (!v || !*v) {
        *out = def;
        return 0;
    }
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || *end || x < min || x > max)
        return KK_ECONFIG;
    *out = x;
    return 0;
}

static int kv_cmp(const void *a, const void *b)
{
    return strcmp(((const struct kk_kv *)a)->key, ((const struct kk_kv *)b)->key);
}

/* The `metadata` property: a JSON object of strings.  Like kubemq-targets,
 * anything else gives an empty map silently. */
static int parse_metadata(struct kk_binding *b, const char *text)
{
    int rv = 0;
    cJSON *root = text && *text ? cJSON_Parse(text) : NULL;
    if (!cJSON_IsObject(root))
        goto out;
    size_t n = 0, bytes = 0;
    for (cJSON *it = root->child; it; it = it->next) {
        if (!cJSON_IsString(it) || !it->string)
            goto out;
        n++;
        bytes += strlen(it->string) + strlen(it->valuestring) + 2;
    }
    if (!n)
        goto out;
    b->md = malloc(n * sizeof(*b->md) + bytes);
    if (!b->md) {
        rv = KK_ENOMEM;
        goto out;
    }
    char *p = (char *)(b->md + n);
    for (cJSON *it = root->child; it; it = it->next) {
        size_t kl = strlen(it->string) + 1, vl = strlen(it->valuestring) + 1;
        struct kk_kv *kv = &b->md[b->n_md++];
        kv->key = memcpy(p, it->string, kl);
        p += kl;
        kv->value = memcpy(p, it->valuestring, vl);
        p += vl;
    }
    qsort(b->md, b->n_md, sizeof(*b->md), kv_cmp);
out:
    cJSON_Delete(root);
    return rv;
}

static int parse_middleware(struct kk_binding *b, char *err, size_t errlen)
{
    const struct kk_props *p = &b->cfg->props;
    int64_t v;
    if (prop_int(p, "retry_attempts", 1, 1, INT32_MAX, &v) < 0) {
        snprintf(err, errlen, "error parsing retry options, invalid retry attempts value");
        return KK_ECONFIG;
    }
    b->retry_attempts = (unsigned)v;
    if (prop_int(p, "retry_delay_milliseconds", 100, 0, INT32_MAX, &v) < 0) {
        snprintf(err, errlen, "error parsing retry options, invalid retry delay value");
        return KK_ECONFIG;
    }
    b->retry_cap_ms = (uint64_t)v;
    if (prop_int(p, "retry_max_jitter_milliseconds", 100, 1, INT32_MAX, &v) < 0) {
        snprintf(err, errlen, "error parsing retry options, invalid retry max jitter value");
        return KK_ECONFIG;
    }
    b->retry_jitter_ms = (uint64_t)v;
    const char *type = kk_props_str(p, "retry_delay_type", "");
    if (!*type || !strcmp(type, "back-off"))
        b->retry_type = KK_RETRY_BACKOFF;
    else if (!strcmp(type, "fixed"))
        b->retry_type = KK_RETRY_FIXED;
    else if (!strcmp(type, "random"))
        b->retry_type = KK_RETRY_RANDOM;
    else {
        snprintf(err, errlen, "error parsing retry options, invalid retry delay type value");
        return KK_ECONFIG;
    }
    const char *rate_key = kk_props_get(p, "rate_per_seconds") ? "rate_per_seconds" : "rate_per_second";
    if (prop_int(p, rate_key, 0, 0, INT32_MAX, &v) < 0) {
        snprintf(err, errlen, "error parsing rate limiter options, invalid %s value", rate_key);
        return KK_ECONFIG;
    }
    b->rate_limited = v > 0;
    /* burst 1: evenly spaced attempts, like ratelimit.WithoutSlack */
    kk_tbucket_init(&b->tb, (double)v, 1, kk_mono_ms());
    if (prop_int(&b->cfg->source.props, "concurrency", 256, 1, 1 << 20, &v) < 0) {
        snprintf(err, errlen, "invalid concurrency value");
        return KK_ECONFIG;
    }
    b->concurrency = (unsigned)v;
    b->raw = kk_props_bool(&b->cfg->source.props, "do_not_parse_payload", false);
    return parse_metadata(b, kk_props_get(p, "metadata"));
}

int kk_binding_new(uv_loop_t *loop, const struct kk_binding_cfg *cfg, struct kk_binding **out, char *err,
                   size_t errlen)
{
    int rv;
    struct kk_binding *b = calloc(1, sizeof(*b));
    if (!b)
        return KK_ENOMEM;
    b->loop = loop;
    b->cfg = cfg;
    kk_buf_init(&b->reply, REPLY_MAX);
    rv = parse_middleware(b, err, errlen);
    if (rv < 0)
        goto fail;
    b->heap = calloc(b->concurrency, sizeof(*b->heap));
    if (!b->heap) {
        rv = KK_ENOMEM;
        goto fail;
    }
    uv_timer_init(loop, &b->timer);
    uv_idle_init(loop, &b->idle);
    b->timer.data = b->idle.data = b;
    b->open_handles = 2;
    *out = b;
    return 0;
fail:
    free(b->md);
    free(b->heap);
    free(b);
    return rv;
}

void kk_binding_set_target(struct kk_binding *b, struct kk_target *t)
{
    b->target = t;
}
void kk_binding_set_source(struct kk_binding *b, struct kk_source *s)
{
    b->source = s;
}
struct kk_target *kk_binding_target(const struct kk_binding *b)
{
    return b->target;
}
struct kk_source *kk_binding_source(const struct kk_binding *b)
{
    return b->source;
}
unsigned kk_binding_inflight(const struct kk_binding *b)
{
    return b->live;
}
const struct kk_binding_stats *kk_binding_stats(const struct kk_binding *b)
{
    return &b->st;
}

bool kk_binding_ready(const struct kk_binding *b, const char **why)
{
    const char *w = NULL;
    if (b->draining)
        w = "stopping";
    else if (!b->target)
        w = "target not started";
    else if (!b->source)
        w = "source not started";
    else if (b->target->vt->ready && !b->target->vt->ready(b->target, &w))
        w = w ? w : "target not ready";
    else if (b->source->vt->ready && !b->source->vt->ready(b->source, &w))
        w = w ? w : "source not ready";
    else
        w = NULL;
    if (why)
        *why = w;
    return !w;
}

/* ---- close ------------------------------------------------------------------ */

static void on_handle_closed(uv_handle_t *h)
{
    struct kk_binding *b = h->data;
    if (--b->open_handles > 0)
        return;
    void (*done)(void *) = b->close_done;
    void *arg = b->close_arg;
    while (b->free_list) {
        struct req *r = b->free_list;
        b->free_list = r->q_next;
        free(r);
    }
    kk_buf_free(&b->reply);
    free(b->md);
    free(b->heap);
    KK_INFO(b->cfg->name, "binding: %s, stopped successfully", b->cfg->name);
    free(b);
    if (done)
        done(arg);
}

static void on_target_closed(void *arg)
{
    struct kk_binding *b = arg;
    b->target = NULL;
    uv_close((uv_handle_t *)&b->timer, on_handle_closed);
    uv_close((uv_handle_t *)&b->idle, on_handle_closed);
}

static void on_source_closed(void *arg)
{
    struct kk_binding *b = arg;
    b->source = NULL;
    if (b->target)
        b->target->vt->close(b->target, on_target_closed, b);
    else
        on_target_closed(b);
}

static void begin_close(struct kk_binding *b)
{
    b->closing = true;
    uv_timer_stop(&b->timer);
    uv_idle_stop(&b->idle);
    b->idle_on = false;
    if (b->source)
        b->source->vt->close(b->source, on_source_closed, b);
    else
        on_source_closed(b);
}

void kk_binding_close(struct kk_binding *b, uint64_t drain_ms, void (*done)(void *arg), void *arg)
{
    if (b->closing || b->close_requested)
        return;
    b->close_requested = true;
    b->close_done = done;
    b->close_arg = arg;
    if (!b->draining) {
        b->draining = true;
        if (b->source && b->source->vt->stop_intake)
            b->source->vt->stop_intake(b->source);
    }
    if (b->live) {
        KK_INFO(b->cfg->name, "draining %u request(s) for up to %" PRIu64 " ms", b->live, drain_ms);
        b->drain_deadline = kk_mono_ms() + drain_ms;
        arm_timer(b);
    }
    idle_kick(b); /* checks live == 0 and closes, outside this call */
}

/* The request state machine of src/binding/binding.c on a real loop, with a
 * fake target (scripted answers after real timer delays) and a fake source
 * written here; plus the built-in null target.  Every test ends with
 * uv_loop_close() == 0. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kk/binding_ctl.h"
#include "kk/clock.h"
#include "kk/err.h"
#include "kk/log.h"

#define MAX_REPLIES 128

/* ---- fake target ------------------------------------------------------------ */

struct fake_call {
    uv_timer_t timer;
    struct kk_target_call *call;
    struct fake_target *t;
};

struct fake_target {
    struct kk_target base;
    uv_loop_t *loop;
    /* script */
    unsigned fail_first; /* attempts (by call->attempt) that fail */
    bool retryable;
    const char *err_text;
    unsigned delay_ms; /* answer after this long */
    bool hang;         /* never answer */
    /* observations */
    unsigned submits, cancels, releases, closes, max_attempts_seen;
    uint64_t submit_ms[16];
    char last_data[64];
    char last_md[256];
};

static void on_fake_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_fake_answer(uv_timer_t *h)
{
    struct fake_call *fc = h->data;
    struct kk_target_call *call = fc->call;
    struct fake_target *t = fc->t;
    call->priv = NULL;
    uv_close((uv_handle_t *)&fc->timer, on_fake_closed);
    struct kk_result res = {0};
    if (call->attempt < t->fail_first) {
        res.err = KK_EAWS;
        res.retryable = t->retryable;
        res.error = (char *)t->err_text;
    }
    call->done(call, &res);
}

static int fake_submit(struct kk_target *base, struct kk_target_call *call)
{
    struct fake_target *t = (struct fake_target *)base;
    if (t->submits < 16)
        t->submit_ms[t->submits] = kk_mono_ms();
    t->submits++;
    t->max_attempts_seen = call->max_attempts;
    size_t n =
        call->req->data_len < sizeof(t->last_data) - 1 ? call->req->data_len : sizeof(t->last_data) - 1;
    memcpy(t->last_data, call->req->data ? (const char *)call->req->data : "", n);
    t->last_data[n] = '\0';
    t->last_md[0] = '\0';
    for (size_t i = 0; i < call->req->n_md; i++) {
        size_t l = strlen(t->last_md);
        snprintf(t->last_md + l, sizeof(t->last_md) - l, "%s=%s;", call->req->md[i].key,
                 call->req->md[i].value);
    }
    if (t->hang)
        return 0;
    struct fake_call *fc = calloc(1, sizeof(*fc));
    assert_non_null(fc);
    fc->call = call;
    fc->t = t;
    uv_timer_init(t->loop, &fc->timer);
    fc->timer.data = fc;
    uv_timer_start(&fc->timer, on_fake_answer, t->delay_ms, 0);
    call->priv = fc;
    return 0;
}

static void fake_cancel(struct kk_target *base, struct kk_target_call *call)
{
    struct fake_target *t = (struct fake_target *)base;
    t->cancels++;
    struct fake_call *fc = call->priv;
    if (fc) {
        uv_close((uv_handle_t *)&fc->timer, on_fake_closed);
        call->priv = NULL;
    }
}

static void fake_release(struct kk_target *base, struct kk_target_call *call)
{
    ((struct fake_target *)base)->releases++;
    assert_null(call->priv);
}

static bool fake_ready(struct kk_target *base, const char **why)
{
    return true;
}

static void fake_tclose(struct kk_target *base, void (*done)(void *), void *arg)
{
    ((struct fake_target *)base)->closes++;
    done(arg);
}

static const struct kk_target_vtbl fake_tvt = {
    .kind = "fake",
    .submit = fake_submit,
    .cancel = fake_cancel,
    .release = fake_release,
    .ready = fake_ready,
    .close = fake_tclose,
};

/* ---- fake source ------------------------------------------------------------ */

struct fake_source {
    struct kk_source base;
    unsigned capacity_calls, stop_calls, close_calls;
};

static void fs_stop(struct kk_source *s)
{
    ((struct fake_source *)s)->stop_calls++;
}
static void fs_capacity(struct kk_source *s)
{
    ((struct fake_source *)s)->capacity_calls++;
}
static bool fs_ready(struct kk_source *s, const char **why)
{
    return true;
}
static void fs_close(struct kk_source *s, void (*done)(void *), void *arg)
{
    ((struct fake_source *)s)->close_calls++;
    done(arg);
}
static const struct kk_source_vtbl fake_svt = {
    .kind = "fake",
    .stop_intake = fs_stop,
    .on_capacity = fs_capacity,
    .ready = fs_ready,
    .close = fs_close,
};

/* ---- environment -------------------------------------------------------------- */

struct reply {
    bool is_error, invalid;
    char error[512];
    char json[512];
    uint64_t at_ms;
};

struct env {
    uv_loop_t loop;
    uv_timer_t guard;
    struct kk_binding *b;
    struct kk_binding_cfg cfg;
    struct kk_prop props[8];
    struct kk_prop sprops[4];
    struct fake_target *t;
    struct fake_source s;
    struct reply replies[MAX_REPLIES];
    unsigned n_replies;
    bool in_submit;
    bool closed;
    uint64_t t0;
};

static int prop_cmp(const void *a, const void *b)
{
    return strcmp(((const struct kk_prop *)a)->key, ((const struct kk_prop *)b)->key);
}

static void on_guard(uv_timer_t *h)
{
    uv_stop(h->loop);
    fail_msg("loop did not finish in time");
}

/* props: NULL-terminated key, value pairs; source props after a "|" key. */
static void env_init(struct env *e, bool null_target, ...)
{
    memset(e, 0, sizeof(*e));
    assert_int_equal(uv_loop_init(&e->loop), 0);
    uv_timer_init(&e->loop, &e->guard);
    uv_timer_start(&e->guard, on_guard, 10000, 0);
    uv_unref((uv_handle_t *)&e->guard);
    va_list ap;
    va_start(ap, null_target);
    bool src = false;
    for (const char *k; (k = va_arg(ap, const char *));) {
        if (!strcmp(k, "|")) {
            src = true;
            continue;
        }
        const char *v = va_arg(ap, const char *);
        if (src)
            e->sprops[e->cfg.source.props.n++] = (struct kk_prop){.key = k, .value = v};
        else
            e->props[e->cfg.props.n++] = (struct kk_prop){.key = k, .value = v};
    }
    va_end(ap);
    qsort(e->props, e->cfg.props.n, sizeof(e->props[0]), prop_cmp);
    qsort(e->sprops, e->cfg.source.props.n, sizeof(e->sprops[0]), prop_cmp);
    e->cfg.props.v = e->props;
    e->cfg.source.props.v = e->sprops;
    e->cfg.name = "b1";
    e->cfg.target.kind = null_target ? KK_TARGET_NULL : KK_TARGET_KINESIS;
    char err[256];
    assert_int_equal(kk_binding_new(&e->loop, &e->cfg, &e->b, err, sizeof(err)), 0);
    struct kk_target *t;
    if (null_target) {
        assert_int_equal(kk_null_target_create(&e->loop, &e->cfg.target, "b1", &t, err, sizeof(err)), 0);
    } else {
        e->t = calloc(1, sizeof(*e->t));
        e->t->base.vt = &fake_tvt;
        e->t->loop = &e->loop;
        e->t->err_text = "boom";
        t = &e->t->base;
    }
    kk_binding_set_target(e->b, t);
    e->s.base.vt = &fake_svt;
    kk_binding_set_source(e->b, &e->s.base);
    e->t0 = kk_mono_ms();
}

static void on_reply(void *ctx, const struct kk_outcome *o)
{
    struct env *e = ctx;
    assert_false(e->in_submit); /* never from inside kk_binding_submit */
    assert_true(e->n_replies < MAX_REPLIES);
    struct reply *r = &e->replies[e->n_replies++];
    r->is_error = o->is_error;
    r->invalid = o->invalid_request;
    snprintf(r->error, sizeof(r->error), "%s", o->error);
    snprintf(r->json, sizeof(r->json), "%.*s", (int)o->response_len, o->response_json);
    r->at_ms = kk_mono_ms() - e->t0;
}

static int submit(struct env *e, const char *body, uint64_t deadline_ms)
{
    e->in_submit = true;
    int rv = kk_binding_submit(e->b, body, strlen(body), deadline_ms, on_reply, e);
    e->in_submit = false;
    return rv;
}

static void on_closed(void *arg)
{
    ((struct env *)arg)->closed = true;
}

static void env_finish(struct env *e)
{
    if (!e->closed) {
        kk_binding_close(e->b, 0, on_closed, e);
        uv_run(&e->loop, UV_RUN_DEFAULT);
        assert_true(e->closed);
    }
    uv_close((uv_handle_t *)&e->guard, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    free(e->t);
}

static const char *put_body =
    "{\"metadata\":{\"method\":\"put_record\",\"stream_name\":\"s\"},\"data\":\"aGVsbG8=\"}";

/* ---- tests ---------------------------------------------------------------------- */

static void test_null_target_success(void **state)
{
    struct env e;
    env_init(&e, true, NULL);
    assert_int_equal(submit(&e, put_body, 0), 0);
    assert_int_equal(e.n_replies, 0);
    assert_int_equal(kk_binding_inflight(e.b), 1);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    assert_int_equal(e.n_replies, 1);
    assert_false(e.replies[0].is_error);
    assert_string_equal(e.replies[0].json,
                        "{\"metadata\":{\"result\":\"ok\"},\"data\":null,\"is_error\":false,\"error\":\"\"}");
    const struct kk_binding_stats *st = kk_binding_stats(e.b);
    assert_int_equal(st->requests_count, 1);
    assert_int_equal(st->requests_volume, 5);
    assert_int_equal(st->responses_count, 1);
    assert_int_equal(st->errors_count, 0);
    assert_int_equal(st->lat_count, 1);
    assert_int_equal(kk_binding_inflight(e.b), 0);
    assert_true(kk_binding_ready(e.b, NULL));
    env_finish(&e);
}

static void test_permanent_error(void **state)
{
    struct env e;
    env_init(&e, false, "retry_attempts", "3", NULL);
    e.t->fail_first = 10;
    e.t->retryable = false;
    e.t->err_text = "ResourceNotFoundException: no stream";
    assert_int_equal(submit(&e, put_body, 0), 0);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    assert_int_equal(e.t->submits, 1);
    assert_int_equal(e.t->max_attempts_seen, 3);
    assert_int_equal(e.n_replies, 1);
    assert_true(e.replies[0].is_error);
    assert_string_equal(e.replies[0].error, "All attempts fail:\n#1: ResourceNotFoundException: no stream");
    assert_string_equal(e.replies[0].json,
                        "{\"metadata\":{},\"data\":null,\"is_error\":true,"
                        "\"error\":\"All attempts fail:\\n#1: ResourceNotFoundException: no stream\"}");
    assert_int_equal(kk_binding_stats(e.b)->errors_count, 1);
    assert_int_equal(kk_binding_stats(e.b)->requests_count, 1);
    assert_int_equal(kk_binding_stats(e.b)->retries, 0);
    env_finish(&e);
}

/* Runs one request that always fails retryably and checks the gaps between attempts. */
static void check_retry_delays(const char *type, const char *cap, const char *jitter, unsigned attempts,
                               const uint64_t *lo, const uint64_t *hi)
{
    struct env e;
    char n[8];
    snprintf(n, sizeof(n), "%u", attempts);
    env_init(&e, false, "retry_attempts", n, "retry_delay_type", type, "retry_delay_milliseconds", cap,
             "retry_max_jitter_milliseconds", jitter, NULL);
    e.t->fail_first = 100;
    e.t->retryable = true;
    assert_int_equal(submit(&e, put_body, 0), 0);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    assert_int_equal(e.t->submits, attempts);
    for (unsigned i = 1; i < attempts; i++) {
        uint64_t gap = e.t->submit_ms[i] - e.t->submit_ms[i - 1];
        if (gap < lo[i - 1] || gap > hi[i - 1])
            fail_msg("%s: gap %u = %llu ms, want [%llu, %llu]", type, i, (unsigned long long)gap,
                     (unsigned long long)lo[i - 1], (unsigned long long)hi[i - 1]);
    }
    char want[256] = "All attempts fail:";
    for (unsigned i = 1; i <= attempts; i++)
        snprintf(want + strlen(want), sizeof(want) - strlen(want), "\n#%u: boom", i);
    assert_string_equal(e.replies[0].error, want);
    assert_int_equal(kk_binding_stats(e.b)->retries, attempts - 1);
    assert_int_equal(kk_binding_stats(e.b)->errors_count, 1);
    env_finish(&e);
}

static void test_retry_fixed(void **state)
{
    const uint64_t lo[] = {98, 98}, hi[] = {140, 140};
    check_retry_delays("fixed", "0", "100", 3, lo, hi);
}

static void test_retry_backoff_capped(void **state)
{
    /* 100, 200 -> capped 150, 400 -> capped 150 */
    const uint64_t lo[] = {98, 148, 148}, hi[] = {140, 190, 190};
    check_retry_delays("back-off", "150", "100", 4, lo, hi);
}

static void test_retry_backoff_default(void **state)
{
    const uint64_t lo[] = {98, 198}, hi[] = {140, 240};
    check_retry_delays("", "0", "100", 3, lo, hi);
}

static void test_retry_random(void **state)
{
    const uint64_t lo[] = {0, 0, 0}, hi[] = {60, 60, 60};
    check_retry_delays("random", "0", "20", 4, lo, hi);
}

static void test_retry_then_success(void **state)
{
    struct env e;
    env_init(&e, false, "retry_attempts", "3", "retry_delay_type", "fixed", "retry_delay_milliseconds", "10",
             NULL);
    e.t->fail_first = 1;
    e.t->retryable = true;
    assert_int_equal(submit(&e, put_body, 0), 0);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    assert_int_equal(e.t->submits, 2);
    assert_false(e.replies[0].is_error);
    assert_int_equal(kk_binding_stats(e.b)->retries, 1);
    assert_int_equal(kk_binding_stats(e.b)->responses_count, 1);
    assert_int_equal(kk_binding_stats(e.b)->errors_count, 0);
    env_finish(&e);
}

static void test_deadline_waiting_target(void **state)
{
    struct env e;
    env_init(&e, false, NULL);
    e.t->hang = true;
    assert_int_equal(submit(&e, put_body, kk_mono_ms() + 60), 0);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    assert_int_equal(e.n_replies, 1);
    assert_true(e.replies[0].is_error);
    assert_string_equal(e.replies[0].error, "All attempts fail:\n#1: context deadline exceeded");
    assert_true(e.replies[0].at_ms >= 55 && e.replies[0].at_ms < 150);
    assert_int_equal(e.t->cancels, 1);
    assert_int_equal(e.t->releases, 1);
    env_finish(&e);
}

static void test_deadline_waiting_retry(void **state)
{
    /* Attempts fail after 20 ms; the retry delay is 100 ms; the deadline at
     * 150 ms stops the retries: the second retry would begin after it. */
    struct env e;
    env_init(&e, false, "retry_attempts", "5", "retry_delay_type", "fixed", NULL);
    e.t->fail_first = 100;
    e.t->retryable = true;
    e.t->delay_ms = 20;
    assert_int_equal(submit(&e, put_body, kk_mono_ms() + 150), 0);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    assert_int_equal(e.t->submits, 2);
    assert_string_equal(e.replies[0].error, "All attempts fail:\n#1: boom\n#2: boom");
    assert_true(e.replies[0].at_ms < 150);
    env_finish(&e);
}

static void test_deadline_past_at_submit(void **state)
{
    struct env e;
    env_init(&e, false, NULL);
    assert_int_equal(submit(&e, put_body, kk_mono_ms() - 1), 0);
    assert_int_equal(e.n_replies, 0);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    assert_int_equal(e.t->submits, 0);
    assert_string_equal(e.replies[0].error, "All attempts fail:\n#1: context deadline exceeded");
    env_finish(&e);
}

static void test_rate_limit(void **state)
{
    struct env e;
    env_init(&e, true, "rate_per_seconds", "200", NULL);
    uint64_t t0 = kk_mono_ms();
    for (int i = 0; i < 100; i++)
        assert_int_equal(submit(&e, put_body, 0), 0);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    uint64_t took = kk_mono_ms() - t0;
    assert_int_equal(e.n_replies, 100);
    /* 99 gaps of 5 ms: 495 ms, within 10 % */
    if (took < 445 || took > 545)
        fail_msg("100 requests at 200/s took %llu ms", (unsigned long long)took);
    env_finish(&e);
}

static void test_rate_limit_alias_and_deadline(void **state)
{
    /* rate_per_second (README spelling) works too; a request whose deadline
     * passes while it waits for a token fails without reaching the target. */
    struct env e;
    env_init(&e, false, "rate_per_second", "10", NULL);
    assert_int_equal(submit(&e, put_body, 0), 0);
    assert_int_equal(submit(&e, put_body, kk_mono_ms() + 30), 0);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    assert_int_equal(e.n_replies, 2);
    assert_int_equal(e.t->submits, 1);
    assert_false(e.replies[0].is_error); /* the first, answered at once */
    assert_string_equal(e.replies[1].error, "All attempts fail:\n#1: context deadline exceeded");
    assert_true(e.replies[1].at_ms >= 28 && e.replies[1].at_ms < 90);
    env_finish(&e);
}

static void test_concurrency_cap(void **state)
{
    struct env e;
    env_init(&e, true, "|", "concurrency", "3", NULL);
    assert_int_equal(kk_binding_free_slots(e.b), 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(submit(&e, put_body, 0), 0);
    assert_int_equal(kk_binding_free_slots(e.b), 0);
    assert_int_equal(submit(&e, put_body, 0), KK_EBUSY);
    assert_int_equal(e.s.capacity_calls, 0);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    assert_int_equal(e.n_replies, 3);
    assert_true(e.s.capacity_calls >= 1 && e.s.capacity_calls <= 3);
    assert_int_equal(kk_binding_free_slots(e.b), 3);
    env_finish(&e);
}

static void test_invalid_body(void **state)
{
    struct env e;
    env_init(&e, false, NULL);
    assert_int_equal(submit(&e, "hello", 0), 0);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    assert_int_equal(e.n_replies, 1);
    assert_true(e.replies[0].is_error);
    assert_true(e.replies[0].invalid);
    assert_memory_equal(e.replies[0].error, "invalid request format, ", 24);
    assert_true(strlen(e.replies[0].error) > 24);
    const char *jp = "{\"metadata\":{},\"data\":null,\"is_error\":true,\"error\":\"invalid request format, ";
    assert_memory_equal(e.replies[0].json, jp, strlen(jp));
    assert_int_equal(e.t->submits, 0);
    assert_int_equal(kk_binding_stats(e.b)->requests_count, 0);
    assert_int_equal(kk_binding_stats(e.b)->errors_count, 0);
    assert_int_equal(kk_binding_stats(e.b)->invalid, 1);
    env_finish(&e);
}

static void test_do_not_parse_payload(void **state)
{
    struct env e;
    env_init(&e, false, "|", "do_not_parse_payload", "true", NULL);
    assert_int_equal(submit(&e, "hello", 0), 0);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    assert_false(e.replies[0].is_error);
    assert_string_equal(e.t->last_data, "hello");
    assert_string_equal(e.t->last_md, "");
    env_finish(&e);
}

static void test_metadata_middleware(void **state)
{
    struct env e;
    env_init(&e, false, "metadata", "{\"stream_name\":\"s1\",\"method\":\"put\",\"zone\":\"z\"}", NULL);
    assert_int_equal(
        submit(&e, "{\"metadata\":{\"method\":\"get_records\",\"stream_name\":\"\"},\"data\":null}", 0), 0);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    assert_false(e.replies[0].is_error);
    /* request keys win; empty request values are filled; sorted */
    assert_string_equal(e.t->last_md, "method=get_records;stream_name=s1;zone=z;");
    env_finish(&e);
}

static void test_metadata_invalid_ignored(void **state)
{
    struct env e;
    env_init(&e, false, "metadata", "{not json", NULL);
    assert_int_equal(submit(&e, put_body, 0), 0);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    assert_string_equal(e.t->last_md, "method=put_record;stream_name=s;");
    env_finish(&e);
}

static void test_bad_middleware_props(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    const char *bad[][2] = {{"retry_attempts", "0"},
                            {"retry_attempts", "-1"},
                            {"retry_delay_milliseconds", "-5"},
                            {"retry_max_jitter_milliseconds", "-1"},
                            {"retry_delay_type", "bad-type"},
                            {"rate_per_seconds", "-100"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct kk_prop p = {.key = bad[i][0], .value = bad[i][1]};
        struct kk_binding_cfg cfg = {.name = "x", .props = {.v = &p, .n = 1}};
        struct kk_binding *b = NULL;
        char err[256] = "";
        assert_int_equal(kk_binding_new(&loop, &cfg, &b, err, sizeof(err)), KK_ECONFIG);
        assert_null(b);
        assert_true(strlen(err) > 0);
    }
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_drain_completes_in_flight(void **state)
{
    struct env e;
    env_init(&e, false, NULL);
    e.t->delay_ms = 50;
    for (int i = 0; i < 5; i++)
        assert_int_equal(submit(&e, put_body, 0), 0);
    kk_binding_close(e.b, 1000, on_closed, &e);
    assert_int_equal(e.s.stop_calls, 1);
    assert_int_equal(submit(&e, put_body, 0), KK_ESHUTDOWN);
    assert_false(e.closed);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    assert_true(e.closed);
    assert_int_equal(e.n_replies, 5);
    for (int i = 0; i < 5; i++)
        assert_false(e.replies[i].is_error);
    assert_int_equal(e.s.close_calls, 1);
    assert_int_equal(e.t->closes, 1);
    env_finish(&e);
}

static void test_drain_deadline_fails_rest(void **state)
{
    struct env e;
    env_init(&e, false, "retry_attempts", "3", NULL);
    e.t->hang = true;
    for (int i = 0; i < 4; i++)
        assert_int_equal(submit(&e, put_body, 0), 0);
    kk_binding_close(e.b, 80, on_closed, &e);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    assert_true(e.closed);
    assert_int_equal(e.n_replies, 4);
    for (int i = 0; i < 4; i++) {
        assert_true(e.replies[i].is_error);
        assert_string_equal(e.replies[i].error,
                            "shutting down: request not completed within shutdown_timeout_seconds");
        assert_true(e.replies[i].at_ms >= 75 && e.replies[i].at_ms < 200);
    }
    assert_int_equal(e.t->cancels, 4);
    assert_int_equal(e.t->releases, 4);
    env_finish(&e);
}

static void test_drain_idle_binding(void **state)
{
    struct env e;
    env_init(&e, true, NULL);
    kk_binding_close(e.b, 30000, on_closed, &e);
    assert_false(e.closed); /* never from inside the call */
    uint64_t t0 = kk_mono_ms();
    uv_run(&e.loop, UV_RUN_DEFAULT);
    assert_true(e.closed);
    assert_true(kk_mono_ms() - t0 < 100);
    env_finish(&e);
}

/* Every transition is traced at debug level with the binding name. */
static void test_transitions_traced(void **state)
{
    char *logbuf = NULL;
    size_t loglen = 0;
    FILE *f = open_memstream(&logbuf, &loglen);
    kk_log_set_stream(f);
    kk_log_set_level(KK_LOG_DEBUG);
    struct env e;
    env_init(&e, false, "retry_attempts", "2", "retry_delay_type", "fixed", "retry_delay_milliseconds", "5",
             "rate_per_seconds", "1000", NULL);
    e.t->fail_first = 1;
    e.t->retryable = true;
    assert_int_equal(submit(&e, put_body, 0), 0); /* takes the only token */
    assert_int_equal(submit(&e, put_body, 0), 0); /* waits for one */
    uv_run(&e.loop, UV_RUN_DEFAULT);
    assert_int_equal(e.n_replies, 2);
    env_finish(&e);
    kk_log_set_level(KK_LOG_INFO);
    kk_log_set_stream(NULL);
    fclose(f);
    const char *want[] = {"-> RECEIVED",
                          "RECEIVED -> DECODED",
                          "DECODED -> WAIT_RATE",
                          "WAIT_RATE -> WAIT_TARGET",
                          "WAIT_TARGET -> WAIT_RETRY",
                          "WAIT_RETRY -> DECODED",
                          "DECODED -> WAIT_TARGET",
                          "WAIT_TARGET -> REPLYING",
                          "REPLYING -> DONE"};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (!strstr(logbuf, want[i]))
            fail_msg("no '%s' in the trace", want[i]);
    assert_non_null(strstr(logbuf, "b1"));
    free(logbuf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_null_target_success),
        cmocka_unit_test(test_permanent_error),
        cmocka_unit_test(test_retry_fixed),
        cmocka_unit_test(test_retry_backoff_capped),
        cmocka_unit_test(test_retry_backoff_default),
        cmocka_unit_test(test_retry_random),
        cmocka_unit_test(test_retry_then_success),
        cmocka_unit_test(test_deadline_waiting_target),
        cmocka_unit_test(test_deadline_waiting_retry),
        cmocka_unit_test(test_deadline_past_at_submit),
        cmocka_unit_test(test_rate_limit),
        cmocka_unit_test(test_rate_limit_alias_and_deadline),
        cmocka_unit_test(test_concurrency_cap),
        cmocka_unit_test(test_invalid_body),
        cmocka_unit_test(test_do_not_parse_payload),
        cmocka_unit_test(test_metadata_middleware),
        cmocka_unit_test(test_metadata_invalid_ignored),
        cmocka_unit_test(test_bad_middleware_props),
        cmocka_unit_test(test_drain_completes_in_flight),
        cmocka_unit_test(test_drain_deadline_fails_rest),
        cmocka_unit_test(test_drain_idle_binding),
        cmocka_unit_test(test_transitions_traced),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

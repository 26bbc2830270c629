/* kinesis_call: drives the aws.kinesis target alone, for integration tests.
 *
 *   kinesis_call [options] key=value... ['{"metadata":{...},"data":"..."}' ...]
 *
 * key=value pairs are the target's properties (endpoint, region, aws_key,
 * aws_secret_key, tls_ca_file, max_connections, request_timeout_ms, ...).
 * Requests come from the arguments, else from stdin (one JSON per line).
 * Options:
 *   --concurrency N  requests in flight at once (default 1)
 *   --attempts N     attempts per request, as the binding's retry_attempts (default 1)
 *   --backoff-ms N   delay before attempt k is N * 2^(k-1) ms, capped at 2 s (default 50)
 *   --timeout-ms N   whole run bound; unfinished requests fail (default 60000)
 *   --deadline-ms N  each request's deadline (call->deadline_ms), N ms after it
 *                    starts; as the binding, no retry is made whose delay would
 *                    pass it (default 0: none)
 *   --metrics        prints the target's metrics to stderr at the end
 * Prints one Response JSON line per request, in input order, plus
 * "attempt <i> <k>: <error>" lines on stderr; exits 0 when every handle
 * closed (uv_loop_close == 0), 2 on bad usage / target creation error, 3 when
 * the loop did not close. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "kk/buf.h"
#include "kk/clock.h"
#include "kk/config.h"
#include "kk/err.h"
#include "kk/request.h"
#include "kk/target.h"

struct job {
    size_t idx;
    struct kk_request req;
    bool parsed;
    char *parse_err;
    struct kk_target_call call;
    uv_timer_t backoff;
    bool timer_init;
    bool running;
    bool finished;
    char *out; /* Response JSON line */
};

static struct kk_target *target;
static struct job *jobs;
static size_t n_jobs, next_job, n_running, n_finished;
static unsigned concurrency = 1, attempts = 1, backoff_ms = 50;
static uint64_t timeout_ms = 60000;
static uint64_t deadline_ms;
static uv_timer_t guard;
static bool closing;
static bool print_metrics;

static void start_more(void);
static void finish_all(void);

static char *response_line(const struct kk_kv *md, size_t n_md, const uint8_t *data, size_t len,
                           bool is_error, const char *error)
{
    struct kk_buf b;
    kk_buf_init(&b, 256u << 20);
    if (kk_response_json(&b, md, n_md, data, len, is_error, error) < 0 || kk_buf_append(&b, "", 1) < 0) {
        kk_buf_free(&b);
        return strdup("{\"error\":\"response encoding failed\"}");
    }
    return b.base;
}

static void job_finish(struct job *j, char *line)
{
    j->out = line;
    j->finished = true;
    j->running = false;
    n_running--;
    n_finished++;
    if (n_finished == n_jobs)
        finish_all();
    else
        start_more();
}

static void submit(struct job *j)
{
    int rc = target->vt->submit(target, &j->call);
    if (rc < 0) {
        char msg[160];
        snprintf(msg, sizeof(msg), "submit failed: %s", kk_strerror(rc));
        job_finish(j, response_line(NULL, 0, NULL, 0, true, msg));
    }
}

static void on_backoff(uv_timer_t *h)
{
    struct job *j = h->data;
    if (!closing)
        submit(j);
}

static void on_done(struct kk_target_call *call, struct kk_result *res)
{
    struct job *j = call->user;
    if (res->err) {
        fprintf(stderr, "attempt %zu %u: %s\n", j->idx, call->attempt + 1, res->error ? res->error : "?");
        if (res->retryable && call->attempt + 1 < call->max_attempts && !closing) {
            call->attempt++;
            uint64_t d = (uint64_t)backoff_ms << (call->attempt - 1 < 10 ? call->attempt - 1 : 10);
            if (d > 2000)
                d = 2000;
            if (!call->deadline_ms || kk_mono_ms() + d < call->deadline_ms) {
                uv_timer_start(&j->backoff, on_backoff, d, 0);
                return;
            }
            fprintf(stderr, "deadline %zu: no retry\n", j->idx);
        }
        job_finish(j, response_line(NULL, 0, NULL, 0, true, res->error ? res->error : "error"));
        return;
    }
    struct kk_kv md[5];
    size_t n = 0;
    md[n++] = (struct kk_kv){"result", "ok"};
    for (size_t i = 0; i < res->n_md && n < 5; i++)
        md[n++] = res->md[i];
    if (res->partial)
        fprintf(stderr, "partial %zu\n", j->idx);
    job_finish(j, response_line(
                      md, n, res->has_data ? (const uint8_t *)(res->data.base ? res->data.base : "") : NULL,
                      res->data.len, false, ""));
}

static void start_more(void)
{
    while (!closing && n_running < concurrency && next_job < n_jobs) {
        struct job *j = &jobs[next_job++];
        n_running++;
        j->running = true;
        if (!j->parsed) {
            char msg[600];
            snprintf(msg, sizeof(msg), "invalid request format, %s", j->parse_err ? j->parse_err : "");
            job_finish(j, response_line(NULL, 0, NULL, 0, true, msg));
            continue;
        }
        if (deadline_ms)
            j->call.deadline_ms = kk_mono_ms() + deadline_ms;
        submit(j);
    }
}

static void on_guard_closed(uv_handle_t *h)
{
    (void)h;
}
static void on_timer_closed(uv_handle_t *h)
{
    (void)h;
}

static void on_target_closed(void *arg)
{
    (void)arg;
    target = NULL;
}

static void finish_all(void)
{
    if (closing)
        return;
    closing = true;
    for (size_t i = 0; i < n_jobs; i++) {
        struct job *j = &jobs[i];
        if (j->running && !j->finished) {
            target->vt->cancel(target, &j->call);
            j->out = response_line(NULL, 0, NULL, 0, true, "kinesis_call: run timed out");
            j->finished = true;
        }
        if (j->parsed)
            target->vt->release(target, &j->call);
        if (j->timer_init)
            uv_close((uv_handle_t *)&j->backoff, on_timer_closed);
    }
    uv_close((uv_handle_t *)&guard, on_guard_closed);
    /* Every request has ended: print, then close the target (its idle
     * keep-alive connections would otherwise hold the loop). */
    for (size_t i = 0; i < n_jobs; i++)
        printf("%s\n", jobs[i].out ? jobs[i].out : "{\"error\":\"no result\"}");
    fflush(stdout);
    if (print_metrics) {
        struct kk_buf m;
        kk_buf_init(&m, 1 << 20);
        target->vt->metrics(target, "test", &m);
        fwrite(m.base ? m.base : "", 1, m.len, stderr);
        kk_buf_free(&m);
    }
    target->vt->close(target, on_target_closed, NULL);
}

static void on_guard(uv_timer_t *h)
{
    (void)h;
    fprintf(stderr, "kinesis_call: timed out after %llu ms\n", (unsigned long long)timeout_ms);
    finish_all();
}

static int prop_cmp(const void *a, const void *b)
{
    return strcmp(((const struct kk_prop *)a)->key, ((const struct kk_prop *)b)->key);
}

static void add_job(const char *text, size_t len)
{
    struct job *nj = realloc(jobs, (n_jobs + 1) * sizeof(*jobs));
    if (!nj) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    jobs = nj;
    struct job *j = &jobs[n_jobs];
    memset(j, 0, sizeof(*j));
    j->idx = n_jobs++;
    char err[512];
    if (kk_request_parse(&j->req, text, len, err, sizeof(err)) == 0)
        j->parsed = true;
    else
        j->parse_err = strdup(err);
}

int main(int argc, char **argv)
{
    struct kk_prop *props = calloc((size_t)argc, sizeof(*props));
    size_t n_props = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--concurrency") == 0 && i + 1 < argc) {
            concurrency = (unsigned)atoi(argv[++i]);
        } else if (strcmp(a, "--attempts") == 0 && i + 1 < argc) {
            attempts = (unsigned)atoi(argv[++i]);
        } else if (strcmp(a, "--backoff-ms") == 0 && i + 1 < argc) {
            backoff_ms = (unsigned)atoi(argv[++i]);
        } else if (strcmp(a, "--timeout-ms") == 0 && i + 1 < argc) {
            timeout_ms = (uint64_t)atoll(argv[++i]);
        } else if (strcmp(a, "--deadline-ms") == 0 && i + 1 < argc) {
            deadline_ms = (uint64_t)atoll(argv[++i]);
        } else if (strcmp(a, "--metrics") == 0) {
            print_metrics = true;
        } else if (a[0] == '{') {
            add_job(a, strlen(a));
        } else if (strchr(a, '=')) {
            char *k = strdup(a);
            char *eq = strchr(k, '=');
            *eq = 0;
            for (char *p = k; *p; p++)
                *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
            props[n_props++] = (struct kk_prop){k, eq + 1, 0, 0};
        } else {
            fprintf(stderr,
                    "usage: kinesis_call [--concurrency N] [--attempts N] key=value... [request...]\n");
            return 2;
        }
    }
    if (concurrency < 1)
        concurrency = 1;
    if (attempts < 1)
        attempts = 1;
    if (n_jobs == 0) {
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        while ((n = getline(&line, &cap, stdin)) > 0) {
            while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                n--;
            if (n > 0)
                add_job(line, (size_t)n);
        }
        free(line);
    }
    qsort(props, n_props, sizeof(*props), prop_cmp);
    struct kk_spec spec;
    memset(&spec, 0, sizeof(spec));
    spec.kind = KK_TARGET_KINESIS;
    spec.kind_text = "aws.kinesis";
    spec.name = "kinesis";
    spec.props.v = props;
    spec.props.n = n_props;

    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[512] = "";
    int rc = kk_kinesis_target_create(&loop, &spec, "test", &target, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "create: %s (%s)\n", err, kk_errname(rc));
        uv_loop_close(&loop);
        return 2;
    }
    for (size_t i = 0; i < n_jobs; i++) {
        struct job *j = &jobs[i];
        j->call.req = &j->req;
        j->call.max_attempts = attempts;
        j->call.done = on_done;
        j->call.user = j;
        uv_timer_init(&loop, &j->backoff);
        j->backoff.data = j;
        j->timer_init = true;
    }
    uv_timer_init(&loop, &guard);
    uv_timer_start(&guard, on_guard, timeout_ms, 0);
    if (n_jobs == 0)
        finish_all();
    else
        start_more();
    uv_run(&loop, UV_RUN_DEFAULT);
    int lc = uv_loop_close(&loop);
    for (size_t i = 0; i < n_jobs; i++) {
        kk_request_free(&jobs[i].req);
        free(jobs[i].parse_err);
        free(jobs[i].out);
    }
    free(jobs);
    for (size_t i = 0; i < n_props; i++)
        free((char *)props[i].key);
    free(props);
    if (lc != 0) {
        fprintf(stderr, "uv_loop_close: %s\n", uv_strerror(lc));
        return 3;
    }
    return 0;
}

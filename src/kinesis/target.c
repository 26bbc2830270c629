/* The aws.kinesis target: one HTTP pool, one SigV4 signer and one
 * credentials provider per binding; ops.c does validation, bodies and
 * outputs, this file does the I/O and the per-request state.
 *
 * Per call (call->priv = struct kcall): the request is validated on the
 * first attempt only.  The body is not kept per call: it is built, hashed
 * and signed in the pool's prepare callback, when a connection is free,
 * into one scratch buffer of the target (the stream copies what the kernel
 * does not take at once, so the next prepare may reuse it).  A waiting
 * request thus holds only its decoded data, and the X-Amz-Date is the time
 * of sending, never of queueing.  PutRecords bodies carry only entries not
 * yet OK, so a retry after a partial failure sends the failed subset.
 * Building the body (build_body) and answering one request (on_response)
 * stay separate steps, so several waiting put_records can later share one
 * PutRecords body. */
#include "kk/target.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "kk/aws.h"
#include "kk/clock.h"
#include "kk/err.h"
#include "kk/http_client.h"
#include "kk/kinesis.h"
#include "kk/log.h"
#include "kk/prom.h"

#include "kk/kinesis_sha256.h"

#define OUT_MAX (64u * 1024u * 1024u) /* output JSON: get_records answers are up to ~14 MiB */
#define ERR_CODES_MAX 48              /* distinct error codes counted (codes are static strings) */
#define SCRATCH_KEEP (256u * 1024u)   /* a larger body buffer is released before the next body */
#define SPARE_MAX 1024                /* released call states kept for reuse (no malloc per request) */
/* The smallest retry delay we assume the binding waits (kubemq-targets' base
 * delay): with less time than this left before the request deadline no retry
 * will be made, so a partial PutRecords result is answered as final. */
#define MIN_RETRY_DELAY_MS 100

struct kcall;

struct ktarget {
    struct kk_target base;
    uv_loop_t *loop;
    char *binding;
    struct kk_aws_endpoint ep;
    struct kk_aws_provider *prov;
    struct kk_http_pool *pool;
    struct kk_sigv4 sig;
    struct kk_kinesis_limits lim;
    size_t body_max;
    struct kk_buf scratch; /* the body of the send being prepared */
    /* Output JSON buffer lent to one result at a time (results are read
     * only during done), so a success allocates nothing for its output. */
    struct kk_buf outbuf;
    bool outbuf_lent;
    /* calls whose result is ready but must not be delivered from submit */
    uv_timer_t defer;
    struct kcall *dhead, *dtail;
    /* released call states, reused by submit (linked through dnext) */
    struct kcall *spare;
    unsigned n_spare;
    /* metrics */
    uint64_t attempts[KK_KOP__COUNT];
    uint64_t throttles;
    struct {
        const char *code;
        uint64_t n;
    } errs[ERR_CODES_MAX];
    size_t n_errs;
    /* close */
    int closing;
    void (*close_done)(void *arg);
    void *close_arg;
};

struct kcall {
    struct kk_http_req http; /* http.data = this */
    struct ktarget *t;
    struct kk_target_call *call;
    struct kk_kinesis_req r;
    int parse_rc; /* < 0: validation failed, parse_err is the text */
    char *parse_err;
    bool parsed;
    bool in_http;
    bool auth_retried;
    int build_err; /* the body could not be built at send time (too big) */
    /* deferred completion */
    bool deferred;
    struct kcall *dnext, *dprev;
    struct kk_result *dres; /* the deferred result (rare: heap, so waiting calls stay small) */
};

static void res_free(struct kk_result *r)
{
    free(r->error);
    kk_buf_free(&r->data);
    for (size_t i = 0; i < r->n_md; i++) {
        free((char *)r->md[i].key);
        free((char *)r->md[i].value);
    }
    memset(r, 0, sizeof(*r));
}

static char *sdup(const char *s)
{
    size_t n = strlen(s);
    char *p = malloc(n + 1);
    if (p)
        memcpy(p, s, n + 1);
    return p;
}

static void count_error(struct ktarget *t, const char *code, bool throttle)
{
    if (throttle)
        t->throttles++;
    if (!code)
        return;
    for (size_t i = 0; i < t->n_errs; i++) {
        if (t->errs[i].code == code || strcmp(t->errs[i].code, code) == 0) {
            t->errs[i].n++;
            return;
        }
    }
    if (t->n_errs < ERR_CODES_MAX) {
        t->errs[t->n_errs].code = code;
        t->errs[t->n_errs].n = 1;
        t->n_errs++;
    }
}

/* Moves res into the result and delivers it, then frees what the
 * receiver left. */
static void complete(struct kcall *kc, struct kk_result *res, bool lent)
{
    struct kk_target_call *call = kc->call;
    struct ktarget *t = kc->t;
    if (res->err)
        count_error(t, res->error_code, false);
    call->done(call, res);
    if (lent) {
        /* Take the (maybe grown) buffer back unless it got large. */
        t->outbuf = res->data;
        kk_buf_reset(&t->outbuf);
        if (t->outbuf.cap > SCRATCH_KEEP)
            kk_buf_free(&t->outbuf);
        t->outbuf_lent = false;
        memset(&res->data, 0, sizeof(res->data));
    }
    res_free(res);
}

/* ---- deferred completion (never call done from submit) ------------------ */

static void on_defer(uv_timer_t *h)
{
    struct ktarget *t = h->data;
    /* Only the calls queued so far: done may submit (and defer) again. */
    size_t n = 0;
    for (struct kcall *k = t->dhead; k; k = k->dnext)
        n++;
    while (n-- && t->dhead) {
        struct kcall *kc = t->dhead;
        t->dhead = kc->dnext;
        if (t->dhead)
            t->dhead->dprev = NULL;
        else
            t->dtail = NULL;
        kc->deferred = false;
        kc->dnext = kc->dprev = NULL;
        struct kk_result res = *kc->dres;
        free(kc->dres);
        kc->dres = NULL;
        complete(kc, &res, false);
    }
}

static void defer_result(struct kcall *kc)
{
    struct ktarget *t = kc->t;
    kc->deferred = true;
    kc->dnext = NULL;
    kc->dprev = t->dtail;
    if (t->dtail)
        t->dtail->dnext = kc;
    else
        t->dhead = kc;
    t->dtail = kc;
    uv_timer_start(&t->defer, on_defer, 0, 0);
}

static void undefer(struct kcall *kc)
{
    struct ktarget *t = kc->t;
    if (!kc->deferred)
        return;
    if (kc->dprev)
        kc->dprev->dnext = kc->dnext;
    else
        t->dhead = kc->dnext;
    if (kc->dnext)
        kc->dnext->dprev = kc->dprev;
    else
        t->dtail = kc->dprev;
    kc->deferred = false;
    kc->dnext = kc->dprev = NULL;
    if (kc->dres) {
        res_free(kc->dres);
        free(kc->dres);
        kc->dres = NULL;
    }
}

static void set_error(struct kk_result *res, int err, bool retryable, char *text, const char *code)
{
    res->err = err;
    res->retryable = retryable;
    res->error = text ? text : sdup(kk_strerror(err));
    res->error_code = code;
}

/* ---- one attempt --------------------------------------------------------- */

/* Writes the JSON body of the next send of kc into b (reset by the caller). */
static int build_body(struct kcall *kc, struct kk_buf *b)
{
    return kk_kinesis_body(&kc->r, b);
}

static int on_prepare(struct kk_http_req *req, struct kk_buf *head)
{
    struct kcall *kc = req->data;
    struct ktarget *t = kc->t;
    struct kk_buf *b = &t->scratch;
    char sha[65];
    const struct kk_aws_creds *creds = kk_aws_creds_get(t->prov);
    if (!creds)
        return KK_ECREDS;
    /* The previous body was handed to its stream already: reuse the buffer. */
    if (b->cap > SCRATCH_KEEP)
        kk_buf_free(b);
    kk_buf_reset(b);
    int rc = build_body(kc, b);
    if (rc < 0) {
        kc->build_err = rc;
        return rc;
    }
    kk_body_sha256_hex(b->base, b->len, sha);
    req->body = b->base;
    req->body_len = b->len;
    /* The date is taken now, when the request leaves, not when it queued. */
    return kk_sigv4_kinesis_head(&t->sig, creds, t->ep.host_header, kk_kinesis_amz_target(kc->r.op), sha,
                                 b->len, kk_wall_ms() / 1000, head);
}

/* The error of a body that could not be built (validation, not transport). */
static void set_build_error(struct kk_result *res, int rc)
{
    set_error(res, rc, false,
              sdup(rc == KK_ETOOBIG ? "request body exceeds max_request_bytes" : kk_strerror(rc)),
              rc == KK_ETOOBIG ? "InvalidParameter" : kk_errname(rc));
}

static void on_response(struct kk_http_req *req, int status, const struct kk_http_response *resp);

static int send_attempt(struct kcall *kc)
{
    struct ktarget *t = kc->t;
    kc->http.prepare = on_prepare;
    kc->http.on_response = on_response;
    kc->http.body = NULL; /* set by on_prepare */
    kc->http.body_len = 0;
    kc->http.data = kc;
    kc->build_err = 0;
    t->attempts[kc->r.op]++;
    int rc = kk_http_pool_submit(t->pool, &kc->http);
    if (rc == 0)
        kc->in_http = true;
    return rc;
}

static void finish_error(struct kcall *kc, struct kk_result *res, struct kk_kinesis_error *ke, int err)
{
    set_error(res, err, ke->cls == KK_KCLASS_RETRYABLE, ke->text, ke->code);
    ke->text = NULL;
    if (ke->throttle)
        kc->t->throttles++;
}

/* Returns true when res->data is the target's lent outbuf. */
static bool on_success(struct kcall *kc, const struct kk_http_response *resp, struct kk_result *res)
{
    struct ktarget *t = kc->t;
    struct kk_kinesis_req *r = &kc->r;
    bool has_data = false;
    char *iter = NULL;
    size_t failed = 0;
    bool lent = !t->outbuf_lent;
    if (lent) {
        t->outbuf_lent = true;
        res->data = t->outbuf;
        memset(&t->outbuf, 0, sizeof(t->outbuf));
        res->data.max = OUT_MAX;
    } else {
        kk_buf_init(&res->data, OUT_MAX);
    }
    int rc = kk_kinesis_output(r, resp->body, resp->body_len, &res->data, &has_data, &iter, &failed);
    if (rc < 0) {
        kk_buf_reset(&res->data);
        set_error(
            res, rc, false,
            sdup(rc == KK_EPARSE ? "SerializationError: failed decoding Kinesis response" : kk_strerror(rc)),
            "SerializationError");
        return lent;
    }
    if (r->op == KK_KOP_PUT_RECORDS) {
        const struct kk_kinesis_entry *e = kk_kinesis_first_failed(r);
        bool throttle = false;
        enum kk_kclass cls = e ? kk_kinesis_classify(e->err_code, 0, &throttle) : KK_KCLASS_OK;
        if (throttle)
            kc->t->throttles++;
        /* The last attempt also when the deadline leaves no room for a retry:
         * reporting a retryable error then would lose the records written. */
        uint64_t dl = kc->call->deadline_ms;
        bool last = kc->call->attempt + 1 >= kc->call->max_attempts ||
                    (dl != 0 && kk_mono_ms() + MIN_RETRY_DELAY_MS > dl);
        if (failed > 0 && cls == KK_KCLASS_RETRYABLE && !last) {
            /* Only the failed entries go out next time (the body is built
             * from the entries' states at send time); successes are kept. */
            char *text = NULL;
            if (asprintf(&text, "%s: %s (%zu of %zu records failed)", e->err_code,
                         e->err_msg ? e->err_msg : "", failed, r->n_entries) < 0)
                text = NULL;
            set_error(res, KK_EAWS, true, text,
                      throttle ? "ProvisionedThroughputExceededException" : "InternalFailure");
            return lent;
        }
        rc = kk_kinesis_put_records_output(r, &res->data);
        if (rc < 0) {
            kk_buf_reset(&res->data);
            set_error(res, rc, false, NULL, kk_errname(rc));
            return lent;
        }
        res->partial = failed > 0;
        res->has_data = true;
        return lent;
    }
    res->has_data = has_data;
    if (iter) {
        res->md[0].key = sdup("shard_iterator");
        res->md[0].value = iter;
        res->n_md = 1;
    }
    return lent;
}

static void on_response(struct kk_http_req *req, int status, const struct kk_http_response *resp)
{
    struct kcall *kc = req->data;
    struct ktarget *t = kc->t;
    struct kk_result res;
    struct kk_kinesis_error ke;
    bool lent = false;
    memset(&res, 0, sizeof(res));
    kc->in_http = false;
    if (status < 0 && kc->build_err) {
        set_build_error(&res, kc->build_err);
    } else if (status < 0) {
        kk_kinesis_error_transport(status, &ke);
        finish_error(kc, &res, &ke, status);
        KK_DEBUG(t->binding, "kinesis %s: %s", kk_kinesis_method_name(kc->r.op), res.error);
    } else if (resp->status >= 200 && resp->status < 300) {
        lent = on_success(kc, resp, &res);
    } else {
        kk_kinesis_error_parse(resp->status, resp->body, resp->body_len, resp->error_type, &ke);
        if (ke.cls == KK_KCLASS_AUTH && !kc->auth_retried && !t->closing) {
            /* Credentials may have rotated: re-read them and send once more. */
            kc->auth_retried = true;
            count_error(t, ke.code, false);
            kk_kinesis_error_free(&ke);
            kk_aws_provider_refresh(t->prov);
            if (send_attempt(kc) == 0)
                return;
            kk_kinesis_error_parse(resp->status, resp->body, resp->body_len, resp->error_type, &ke);
        }
        finish_error(kc, &res, &ke, KK_EAWS);
        res.retryable = ke.cls == KK_KCLASS_RETRYABLE;
    }
    complete(kc, &res, lent);
}

/* ---- vtable -------------------------------------------------------------- */

static int k_submit(struct kk_target *base, struct kk_target_call *call)
{
    struct ktarget *t = (struct ktarget *)base;
    struct kcall *kc = call->priv;
    struct kk_result res;
    int rc = 0;
    memset(&res, 0, sizeof(res));
    if (t->closing)
        return KK_ESHUTDOWN; /* no loop turn left to answer on */
    if (!kc) {
        kc = t->spare;
        if (kc) {
            t->spare = kc->dnext;
            t->n_spare--;
            memset(kc, 0, sizeof(*kc));
        } else {
            kc = calloc(1, sizeof(*kc));
        }
        if (!kc)
            return KK_ENOMEM;
        kc->t = t;
        call->priv = kc;
    }
    kc->call = call;
    if (!kc->parsed) {
        kc->parsed = true;
        kc->parse_rc = kk_kinesis_req_parse(&kc->r, call->req, &t->lim, &kc->parse_err);
    }
    if (kc->parse_rc < 0) {
        set_error(&res, kc->parse_rc, false, kc->parse_err ? sdup(kc->parse_err) : NULL,
                  "InvalidParameter");
        goto deferred;
    }
    rc = send_attempt(kc);
    if (rc == 0)
        return 0;
    if (kc->build_err) {
        /* A connection was free at once and the body could not be built. */
        set_build_error(&res, kc->build_err);
        goto deferred;
    }
    {
        struct kk_kinesis_error ke;
        kk_kinesis_error_transport(rc, &ke);
        set_error(&res, rc, ke.cls == KK_KCLASS_RETRYABLE, ke.text, ke.code);
    }
deferred:
    /* Delivered from the loop; held on the heap meanwhile. */
    kc->dres = malloc(sizeof(*kc->dres));
    if (!kc->dres) {
        res_free(&res);
        return KK_ENOMEM;
    }
    *kc->dres = res;
    defer_result(kc);
    return 0;
}

static void k_cancel(struct kk_target *base, struct kk_target_call *call)
{
    struct ktarget *t = (struct ktarget *)base;
    struct kcall *kc = call->priv;
    if (!kc)
        return;
    if (kc->in_http) {
        kk_http_pool_cancel(t->pool, &kc->http);
        kc->in_http = false;
    }
    undefer(kc);
}

static void k_release(struct kk_target *base, struct kk_target_call *call)
{
    struct ktarget *t = (struct ktarget *)base;
    struct kcall *kc = call->priv;
    if (!kc)
        return;
    k_cancel(base, call);
    kk_kinesis_req_free(&kc->r);
    free(kc->parse_err);
    call->priv = NULL;
    if (t->n_spare < SPARE_MAX && !t->closing) {
        kc->dnext = t->spare;
        t->spare = kc;
        t->n_spare++;
    } else {
        free(kc);
    }
}

static bool k_ready(struct kk_target *base, const char **why)
{
    struct ktarget *t = (struct ktarget *)base;
    if (t->closing) {
        if (why)
            *why = "closing";
        return false;
    }
    return true;
}

/* Prometheus label value: backslash, quote and newline escaped. */
static void k_metrics(struct kk_target *base, const char *binding_raw, struct kk_buf *out)
{
    struct ktarget *t = (struct ktarget *)base;
    struct kk_buf lb;
    kk_buf_init(&lb, 1024);
    if (kk_prom_label(&lb, binding_raw) != 0 || kk_buf_append(&lb, "", 1) != 0) {
        kk_buf_free(&lb);
        return;
    }
    const char *binding = lb.base;
    for (int i = 0; i < KK_KOP__COUNT; i++)
        kk_buf_printf(out, "kubemq_kinesis_kinesis_attempts_total{binding=\"%s\",op=\"%s\"} %" PRIu64 "\n",
                      binding, kk_kinesis_method_name((enum kk_kinesis_op)i), t->attempts[i]);
    for (size_t i = 0; i < t->n_errs; i++)
        kk_buf_printf(out, "kubemq_kinesis_kinesis_errors_total{binding=\"%s\",code=\"%s\"} %" PRIu64 "\n",
                      binding, t->errs[i].code, t->errs[i].n);
    kk_buf_printf(out, "kubemq_kinesis_kinesis_throttles_total{binding=\"%s\"} %" PRIu64 "\n", binding,
                  t->throttles);
    struct kk_http_pool_stats st;
    memset(&st, 0, sizeof(st));
    if (t->pool)
        kk_http_pool_stats(t->pool, &st);
    kk_buf_printf(out, "kubemq_kinesis_pool_connections{binding=\"%s\",state=\"open\"} %u\n", binding,
                  st.open);
    kk_buf_printf(out, "kubemq_kinesis_pool_connections{binding=\"%s\",state=\"idle\"} %u\n", binding,
                  st.idle);
    kk_buf_free(&lb);
}

static void target_free(struct ktarget *t)
{
    while (t->spare) {
        struct kcall *kc = t->spare;
        t->spare = kc->dnext;
        free(kc);
    }
    if (t->prov)
        kk_aws_provider_free(t->prov);
    kk_buf_free(&t->scratch);
    kk_buf_free(&t->outbuf);
    free(t->binding);
    free(t);
}

static void maybe_closed(struct ktarget *t)
{
    if (--t->closing > 1)
        return;
    void (*done)(void *) = t->close_done;
    void *arg = t->close_arg;
    target_free(t);
    if (done)
        done(arg);
}

static void on_timer_closed(uv_handle_t *h)
{
    maybe_closed(h->data);
}
static void on_pool_closed(void *arg)
{
    maybe_closed(arg);
}

static void k_close(struct kk_target *base, void (*done)(void *arg), void *arg)
{
    struct ktarget *t = (struct ktarget *)base;
    t->close_done = done;
    t->close_arg = arg;
    /* closing counts 1 (flag) + the timer + the pool still to finish. */
    t->closing = 3;
    while (t->dhead)
        undefer(t->dhead);
    uv_close((uv_handle_t *)&t->defer, on_timer_closed);
    kk_http_pool_close(t->pool, on_pool_closed, t);
}

static const struct kk_target_vtbl kinesis_vtbl = {
    .kind = "aws.kinesis",
    .submit = k_submit,
    .cancel = k_cancel,
    .release = k_release,
    .ready = k_ready,
    .metrics = k_metrics,
    .close = k_close,
};

int kk_kinesis_target_create(uv_loop_t *loop, const struct kk_spec *spec, const char *binding,
                             struct kk_target **out, char *err, size_t errlen)
{
    int rc = 0;
    const struct kk_props *p = &spec->props;
    struct ktarget *t = calloc(1, sizeof(*t));
    if (!t)
        return KK_ENOMEM;
    t->base.vt = &kinesis_vtbl;
    t->loop = loop;
    t->binding = sdup(binding ? binding : "");
    if (!t->binding) {
        rc = KK_ENOMEM;
        goto out;
    }
    t->lim.max_record_bytes = (size_t)kk_props_int(p, "max_record_bytes", KK_KINESIS_MAX_RECORD_BYTES);
    t->lim.max_request_bytes = (size_t)kk_props_int(p, "max_request_bytes", KK_KINESIS_MAX_REQUEST_BYTES);
    /* base64 grows data by 4/3; keys, escapes and framing need the rest. */
    size_t big = t->lim.max_request_bytes > t->lim.max_record_bytes ? t->lim.max_request_bytes
                                                                    : t->lim.max_record_bytes;
    t->body_max = big / 3 * 4 + 16 + KK_KINESIS_MAX_ENTRIES * (6 * 256 + 128);
    kk_buf_init(&t->scratch, t->body_max);

    rc = kk_aws_endpoint_resolve(p, &t->ep, err, errlen);
    if (rc < 0)
        goto out;
    rc = kk_aws_provider_new(p, &t->prov, err, errlen);
    if (rc < 0)
        goto out;
    kk_sigv4_init(&t->sig, t->ep.region, "kinesis");

    struct kk_http_pool_opts po;
    memset(&po, 0, sizeof(po));
    po.host = t->ep.host;
    po.port = t->ep.port;
    po.tls = t->ep.tls;
    po.tls_opts.ca_file = kk_props_get(p, "tls_ca_file");
    po.tls_opts.insecure_skip_verify = kk_props_bool(p, "tls_insecure_skip_verify", false);
    po.tls_opts.alpn = "http/1.1";
    po.max_connections = (unsigned)kk_props_int(p, "max_connections", 32);
    po.connect_timeout_ms = (uint32_t)kk_props_int(p, "connect_timeout_ms", 5000);
    po.idle_timeout_ms = (uint32_t)kk_props_int(p, "idle_timeout_ms", 20000);
    po.request_timeout_ms = (uint32_t)kk_props_int(p, "request_timeout_ms", 10000);
    po.max_response_bytes = (size_t)kk_props_int(p, "max_response_bytes", 16 * 1024 * 1024);
    rc = kk_http_pool_new(loop, &po, &t->pool, err, errlen);
    if (rc < 0)
        goto out;
    uv_timer_init(loop, &t->defer);
    t->defer.data = t;
    if (po.tls && po.tls_opts.insecure_skip_verify)
        KK_WARN(t->binding, "kinesis target: TLS certificate verification is disabled");
    KK_INFO(t->binding, "kinesis target: %s://%s:%u region %s, credentials from %s",
            t->ep.tls ? "https" : "http", t->ep.host, t->ep.port, t->ep.region,
            kk_aws_provider_source(t->prov));
    *out = &t->base;
out:
    if (rc < 0)
        target_free(t);
    return rc;
}

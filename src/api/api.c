/* The gateway's HTTP API; endpoints and contracts in include/kk/api.h.
 * Not on the data path: JSON is built with cJSON, text with kk_buf; every
 * output is bounded. */
#include "kk/api.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kk/b64.h"
#include "kk/binding_ctl.h"
#include "kk/buf.h"
#include "kk/clock.h"
#include "kk/err.h"
#include "kk/http_server.h"
#include "kk/log.h"
#include "kk/prom.h"

#define SCOPE "api"
#define MAX_BODY ((size_t)8 << 20)
#define MAX_OUT ((size_t)16 << 20)
#define REQUEST_DEADLINE_MS 60000 /* POST /bindings/request */

static const char ctype_text[] = "text/plain; charset=utf-8";
static const char ctype_json[] = "application/json; charset=utf-8";
static const char ctype_prom[] = "text/plain; version=0.0.4; charset=utf-8";

struct kk_api {
    struct kk_http_server *srv;
    struct kk_app *app;
    void (*done)(void *arg);
    void *done_arg;
};

static void reply_json(struct kk_http_exchange *ex, int status, cJSON *root, bool pretty)
{
    char *s = root ? (pretty ? cJSON_Print(root) : cJSON_PrintUnformatted(root)) : NULL;
    if (root && !s) {
        kk_http_reply(ex, 500, ctype_text, "out of memory", 13);
        return;
    }
    if (s)
        kk_http_reply(ex, status, ctype_json, s, strlen(s));
    else
        kk_http_reply(ex, status, ctype_json, "null", 4);
    free(s);
}

/* ---- /ready ------------------------------------------------------------------ */

static void handle_ready(struct kk_api *api, struct kk_http_exchange *ex)
{
    struct kk_buf out;
    kk_buf_init(&out, MAX_OUT);
    size_t n = kk_app_binding_count(api->app);
    for (size_t i = 0; i < n; i++) {
        struct kk_app_binding v;
        kk_app_binding_get(api->app, i, &v);
        const char *why = NULL;
        if (!v.started)
            why = v.error[0] ? v.error : "starting";
        else if (!kk_binding_ready(v.b, &why))
            why = why ? why : "not ready";
        if (why)
            kk_buf_printf(&out, "%s: %s\n", v.cfg->name, why);
    }
    if (out.len)
        kk_http_reply(ex, 503, ctype_text, out.base, out.len);
    else
        kk_http_reply(ex, 200, ctype_text, "ready", 5);
    kk_buf_free(&out);
}

/* ---- /metrics ---------------------------------------------------------------- */

/* Prometheus label value: escape backslash, double quote and newline. */
static void prom_label(struct kk_buf *out, const char *name, const char *v, bool first)
{
    kk_buf_printf(out, "%s%s=\"", first ? "" : ",", name);
    kk_prom_label(out, v);
    kk_buf_append_str(out, "\"");
}

static void targets_labels(struct kk_buf *out, const struct kk_binding_cfg *c)
{
    kk_buf_append_str(out, "{");
    prom_label(out, "binding", c->name, true);
    prom_label(out, "source_name", c->source.name, false);
    prom_label(out, "source_kind", kk_source_kind_name(c->source.kind), false);
    prom_label(out, "target_name", c->target.name, false);
    prom_label(out, "target_kind", kk_target_kind_name(c->target.kind), false);
    kk_buf_append_str(out, "}");
}

enum counter { C_REQ, C_REQ_VOL, C_RESP, C_RESP_VOL, C_ERR };

static uint64_t val_inflight(const struct kk_app_binding *v, const struct kk_binding_stats *st)
{
    (void)st;
    return v->b ? kk_binding_inflight(v->b) : 0;
}

static uint64_t val_ready(const struct kk_app_binding *v, const struct kk_binding_stats *st)
{
    (void)st;
    return v->started && kk_binding_ready(v->b, NULL);
}

static uint64_t val_retries(const struct kk_app_binding *v, const struct kk_binding_stats *st)
{
    (void)v;
    return st->retries;
}

static uint64_t val_invalid(const struct kk_app_binding *v, const struct kk_binding_stats *st)
{
    (void)v;
    return st->invalid;
}

static uint64_t counter_of(const struct kk_binding_stats *st, enum counter c)
{
    switch (c) {
    case C_REQ:
        return st->requests_count;
    case C_REQ_VOL:
        return st->requests_volume;
    case C_RESP:
        return st->responses_count;
    case C_RESP_VOL:
        return st->responses_volume;
    case C_ERR:
    default:
        return st->errors_count;
    }
}

/* Sources and targets append bare samples per binding; the exposition
 * format wants each family in one group under one # TYPE line, so the lines
 * of all bindings are regrouped by metric name (stable) here.  Names ending
 * in _total are counters, the rest gauges. */
struct line {
    const char *p;
    size_t len, name_len, idx;
};

static int line_cmp(const void *a, const void *b)
{
    const struct line *x = a, *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->p, y->p, n);
    if (c)
        return c;
    if (x->name_len != y->name_len)
        return x->name_len < y->name_len ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static void append_grouped(struct kk_buf *out, const struct kk_buf *in)
{
    size_t n = 0;
    for (size_t i = 0; i < in->len; i++)
        n += in->base[i] == '\n';
    struct line *lines = n ? calloc(n + 1, sizeof(*lines)) : NULL;
    if (!lines)
        return;
    size_t k = 0;
    for (size_t i = 0; i < in->len && k <= n;) {
        const char *p = in->base + i;
        const char *nl = memchr(p, '\n', in->len - i);
        size_t len = nl ? (size_t)(nl - p) : in->len - i;
        i += len + 1;
        if (len == 0 || p[0] == '#')
            continue;
        size_t nlen = strcspn(p, "{ \n");
        lines[k] = (struct line){.p = p, .len = len, .name_len = nlen < len ? nlen : len, .idx = k};
        k++;
    }
    qsort(lines, k, sizeof(*lines), line_cmp);
    for (size_t i = 0; i < k; i++) {
        const struct line *l = &lines[i];
        if (i == 0 || l->name_len != l[-1].name_len || memcmp(l->p, l[-1].p, l->name_len)) {
            bool counter = l->name_len > 6 && !memcmp(l->p + l->name_len - 6, "_total", 6);
            kk_buf_printf(out, "# HELP %.*s reported by the sources and targets\n# TYPE %.*s %s\n",
                          (int)l->name_len, l->p, (int)l->name_len, l->p, counter ? "counter" : "gauge");
        }
        kk_buf_append(out, l->p, l->len);
        kk_buf_append(out, "\n", 1);
    }
    free(lines);
}

static void handle_metrics(struct kk_api *api, struct kk_http_exchange *ex)
{
    static const struct {
        const char *name, *help;
    } fam[] = {
        [C_REQ] = {"kubemq_targets_requests_count", "counts requests per binding"},
        [C_REQ_VOL] = {"kubemq_targets_requests_volume", "sums request data bytes per binding"},
        [C_RESP] = {"kubemq_targets_responses_count", "counts responses per binding"},
        [C_RESP_VOL] = {"kubemq_targets_responses_volume", "sums response data bytes per binding"},
        [C_ERR] = {"kubemq_targets_errors_count", "counts failed requests (after retries) per binding"},
    };
    static const struct {
        const char *name, *help, *type;
        uint64_t (*value)(const struct kk_app_binding *v, const struct kk_binding_stats *st);
    } simple[] = {
        {"kubemq_kinesis_inflight", "requests in flight per binding", "gauge", val_inflight},
        {"kubemq_kinesis_binding_ready", "1 when the binding's source and target are ready", "gauge", val_ready},
        {"kubemq_kinesis_retries_total", "target attempts beyond the first", "counter", val_retries},
        {"kubemq_kinesis_invalid_requests_total", "bodies that did not decode", "counter", val_invalid},
    };
    static const struct kk_binding_stats zero;
    struct kk_buf out;
    kk_buf_init(&out, MAX_OUT);
    size_t n = kk_app_binding_count(api->app);
    struct kk_app_binding v;
#define STATS (v.b ? kk_binding_stats(v.b) : &zero)
    for (size_t f = 0; f < sizeof(fam) / sizeof(fam[0]); f++) {
        kk_buf_printf(&out, "# HELP %s %s\n# TYPE %s counter\n", fam[f].name, fam[f].help, fam[f].name);
        for (size_t i = 0; i < n; i++) {
            kk_app_binding_get(api->app, i, &v);
            kk_buf_append_str(&out, fam[f].name);
            targets_labels(&out, v.cfg);
            kk_buf_printf(&out, " %" PRIu64 "\n", counter_of(STATS, (enum counter)f));
        }
    }
    /* Per-binding families labelled by binding name only. */
    for (size_t f = 0; f < sizeof(simple) / sizeof(simple[0]); f++) {
        kk_buf_printf(&out, "# HELP %s %s\n# TYPE %s %s\n", simple[f].name, simple[f].help, simple[f].name,
                      simple[f].type);
        for (size_t i = 0; i < n; i++) {
            kk_app_binding_get(api->app, i, &v);
            kk_buf_printf(&out, "%s{", simple[f].name);
            prom_label(&out, "binding", v.cfg->name, true);
            kk_buf_printf(&out, "} %" PRIu64 "\n", simple[f].value(&v, STATS));
        }
    }
    kk_buf_append_str(&out, "# HELP kubemq_kinesis_request_duration_seconds time from receipt to reply\n"
                            "# TYPE kubemq_kinesis_request_duration_seconds histogram\n");
    for (size_t i = 0; i < n; i++) {
        kk_app_binding_get(api->app, i, &v);
        const struct kk_binding_stats *st = STATS;
        uint64_t cum = 0;
        for (size_t k = 0; k <= KK_LAT_NBUCKETS; k++) {
            cum += st->lat_bucket[k];
            kk_buf_append_str(&out, "kubemq_kinesis_request_duration_seconds_bucket{");
            prom_label(&out, "binding", v.cfg->name, true);
            if (k < KK_LAT_NBUCKETS)
                kk_buf_printf(&out, ",le=\"%g\"} %" PRIu64 "\n", kk_lat_bounds_s[k], cum);
            else
                kk_buf_printf(&out, ",le=\"+Inf\"} %" PRIu64 "\n", cum);
        }
        kk_buf_append_str(&out, "kubemq_kinesis_request_duration_seconds_sum{");
        prom_label(&out, "binding", v.cfg->name, true);
        kk_buf_printf(&out, "} %.6f\n", st->lat_sum_s);
        kk_buf_append_str(&out, "kubemq_kinesis_request_duration_seconds_count{");
        prom_label(&out, "binding", v.cfg->name, true);
        kk_buf_printf(&out, "} %" PRIu64 "\n", st->lat_count);
    }
    /* The sources' and targets' own samples, regrouped by family. */
    struct kk_buf extra;
    kk_buf_init(&extra, MAX_OUT);
    for (size_t i = 0; i < n; i++) {
        kk_app_binding_get(api->app, i, &v);
        if (!v.b)
            continue;
        struct kk_source *s = kk_binding_source(v.b);
        struct kk_target *t = kk_binding_target(v.b);
        if (s && s->vt->metrics)
            s->vt->metrics(s, v.cfg->name, &extra);
        if (t && t->vt->metrics)
            t->vt->metrics(t, v.cfg->name, &extra);
    }
#undef STATS
    append_grouped(&out, &extra);
    kk_buf_free(&extra);
    kk_http_reply(ex, 200, ctype_prom, out.base ? out.base : "", out.len);
    kk_buf_free(&out);
}

/* ---- /bindings, /bindings/stats ---------------------------------------------- */

static cJSON *props_json(const struct kk_props *p)
{
    cJSON *o = cJSON_CreateObject();
    for (size_t i = 0; o && i < p->n; i++)
        cJSON_AddStringToObject(o, p->v[i].key, kk_prop_is_secret(p->v[i].key) ? "***" : p->v[i].value);
    return o;
}

static void handle_bindings(struct kk_api *api, struct kk_http_exchange *ex)
{
    size_t n = kk_app_binding_count(api->app);
    if (!n) {
        reply_json(ex, 200, NULL, true);
        return;
    }
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; arr && i < n; i++) {
        struct kk_app_binding v;
        kk_app_binding_get(api->app, i, &v);
        const struct kk_binding_cfg *c = v.cfg;
        cJSON *o = cJSON_CreateObject();
        if (!o)
            break;
        char conn[512];
        snprintf(conn, sizeof(conn), "%s/%s", kk_props_str(&c->source.props, "address", ""),
                 kk_props_str(&c->source.props, "channel", ""));
        cJSON_AddStringToObject(o, "binding", c->name);
        cJSON_AddBoolToObject(o, "ready", v.started && kk_binding_ready(v.b, NULL));
        cJSON_AddStringToObject(o, "source_type", kk_source_kind_name(c->source.kind));
        cJSON_AddStringToObject(o, "source_connection", conn);
        cJSON_AddItemToObject(o, "source_config", props_json(&c->source.props));
        cJSON_AddStringToObject(o, "target_type", kk_target_kind_name(c->target.kind));
        cJSON_AddItemToObject(o, "target_config", props_json(&c->target.props));
        if (!v.started && v.error[0])
            cJSON_AddStringToObject(o, "error", v.error);
        cJSON_AddItemToArray(arr, o);
    }
    reply_json(ex, 200, arr, true);
    cJSON_Delete(arr);
}

static void handle_stats(struct kk_api *api, struct kk_http_exchange *ex)
{
    size_t n = kk_app_binding_count(api->app);
    if (!n) {
        reply_json(ex, 200, NULL, true);
        return;
    }
    static const struct kk_binding_stats zero;
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; arr && i < n; i++) {
        struct kk_app_binding v;
        kk_app_binding_get(api->app, i, &v);
        const struct kk_binding_cfg *c = v.cfg;
        const struct kk_binding_stats *st = v.b ? kk_binding_stats(v.b) : &zero;
        cJSON *o = cJSON_CreateObject();
        if (!o)
            break;
        cJSON_AddStringToObject(o, "binding", c->name);
        cJSON_AddStringToObject(o, "source_name", c->source.name);
        cJSON_AddStringToObject(o, "source_kind", kk_source_kind_name(c->source.kind));
        cJSON_AddStringToObject(o, "target_name", c->target.name);
        cJSON_AddStringToObject(o, "target_kind", kk_target_kind_name(c->target.kind));
        cJSON_AddNumberToObject(o, "request_count", (double)st->requests_count);
        cJSON_AddNumberToObject(o, "request_volume", (double)st->requests_volume);
        cJSON_AddNumberToObject(o, "response_count", (double)st->responses_count);
        cJSON_AddNumberToObject(o, "response_volume", (double)st->responses_volume);
        cJSON_AddNumberToObject(o, "errors_count", (double)st->errors_count);
        cJSON_AddItemToArray(arr, o);
    }
    reply_json(ex, 200, arr, true);
    cJSON_Delete(arr);
}

/* ---- POST /bindings/request ---------------------------------------------------- */

static void reply_result(struct kk_http_exchange *ex, cJSON *md, cJSON *data, bool is_error,
                         const char *error)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) {
        cJSON_Delete(md);
        cJSON_Delete(data);
        kk_http_reply(ex, 500, ctype_text, "out of memory", 13);
        return;
    }
    cJSON_AddItemToObject(o, "metadata", md ? md : cJSON_CreateObject());
    cJSON_AddItemToObject(o, "data", data ? data : cJSON_CreateNull());
    cJSON_AddBoolToObject(o, "is_error", is_error);
    cJSON_AddStringToObject(o, "error", error ? error : "");
    reply_json(ex, 200, o, false);
    cJSON_Delete(o);
}

/* data of the Response: the JSON value when the bytes are JSON, else a string. */
static cJSON *data_value(const char *b64)
{
    size_t n = strlen(b64);
    uint8_t *raw = malloc(kk_b64_decoded_max(n) + 1);
    if (!raw)
        return NULL;
    long len = kk_b64_decode(raw, b64, n);
    cJSON *v = NULL;
    if (len >= 0) {
        raw[len] = '\0';
        v = cJSON_ParseWithLength((const char *)raw, (size_t)len);
        if (!v)
            v = cJSON_CreateString((const char *)raw);
    }
    free(raw);
    return v;
}

static void on_request_reply(void *ctx, const struct kk_outcome *o)
{
    struct kk_http_exchange *ex = ctx;
    char *err = NULL;
    cJSON *resp = cJSON_ParseWithLength(o->response_json, o->response_len);
    cJSON *md = resp ? cJSON_DetachItemFromObject(resp, "metadata") : NULL;
    cJSON *data = NULL;
    const cJSON *d = resp ? cJSON_GetObjectItem(resp, "data") : NULL;
    if (cJSON_IsString(d))
        data = data_value(d->valuestring);
    if (o->is_error) {
        const char *pfx =
            o->invalid_request ? "error during parsing request: " : "error during executing request: ";
        const char *text = o->error;
        if (o->invalid_request && !strncmp(text, "invalid request format, ", 24))
            text += 24;
        err = malloc(strlen(pfx) + strlen(text) + 1);
        if (err) {
            strcpy(err, pfx);
            strcat(err, text);
        }
    }
    reply_result(ex, md, data, o->is_error, o->is_error ? (err ? err : o->error) : "");
    free(err);
    cJSON_Delete(resp);
}

static void reply_error(struct kk_http_exchange *ex, const char *fmt, const char *arg)
{
    char text[512];
    snprintf(text, sizeof(text), fmt, arg);
    reply_result(ex, NULL, NULL, true, text);
}

static void handle_request(struct kk_api *api, struct kk_http_exchange *ex,
                           const struct kk_http_request_view *req)
{
    const char *perr = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(req->body ? req->body : "", req->body_len, &perr, false);
    const cJSON *name = root ? cJSON_GetObjectItem(root, "binding") : NULL;
    const cJSON *payload = root ? cJSON_GetObjectItem(root, "payload") : NULL;
    if (!cJSON_IsObject(root) || (name && !cJSON_IsString(name)) ||
        (payload && !cJSON_IsObject(payload) && !cJSON_IsNull(payload))) {
        char msg[160];
        if (!root)
            snprintf(msg, sizeof(msg), "{\"Error\":\"invalid request, malformed JSON at offset %ld\"}",
                     perr && req->body ? (long)(perr - req->body) : 0L);
        else
            snprintf(msg, sizeof(msg), "{\"Error\":\"invalid request, unexpected field types\"}");
        kk_http_reply(ex, 400, ctype_json, msg, strlen(msg));
        goto out;
    }
    const char *bname = name ? name->valuestring : "";
    struct kk_binding *b = NULL;
    bool found = false;
    size_t n = kk_app_binding_count(api->app);
    for (size_t i = 0; i < n; i++) { /* a handful of bindings; not the data path */
        struct kk_app_binding v;
        kk_app_binding_get(api->app, i, &v);
        if (!strcmp(v.cfg->name, bname)) {
            found = true;
            b = v.started ? v.b : NULL;
            break;
        }
    }
    if (!found) {
        reply_error(ex, "no such binding, %s", bname);
        goto out;
    }
    if (!b) {
        reply_error(ex, "error during executing request: binding %s is not started", bname);
        goto out;
    }
    char *body = payload && cJSON_IsObject(payload) ? cJSON_PrintUnformatted(payload) : NULL;
    /* Bounded like any request: an HTTP caller never waits forever. */
    uint64_t deadline = kk_mono_ms() + REQUEST_DEADLINE_MS;
    int rv =
        kk_binding_submit(b, body ? body : "{}", body ? strlen(body) : 2, deadline, on_request_reply, ex);
    free(body);
    if (rv < 0)
        reply_error(ex, "error during executing request: %s", kk_strerror(rv));
out:
    cJSON_Delete(root);
}

/* ---- dispatch ---------------------------------------------------------------- */

static void on_http(void *user, struct kk_http_exchange *ex, const struct kk_http_request_view *req)
{
    struct kk_api *api = user;
    bool get = !strcmp(req->method, "GET"), post = !strcmp(req->method, "POST");
    const char *p = req->path;
    if (get && !strcmp(p, "/health"))
        kk_http_reply(ex, 200, ctype_text, "ok", 2);
    else if (get && !strcmp(p, "/ready"))
        handle_ready(api, ex);
    else if (get && !strcmp(p, "/metrics"))
        handle_metrics(api, ex);
    else if (get && !strcmp(p, "/bindings"))
        handle_bindings(api, ex);
    else if (get && !strcmp(p, "/bindings/stats"))
        handle_stats(api, ex);
    else if (post && !strcmp(p, "/bindings/request"))
        handle_request(api, ex, req);
    else if (!strcmp(p, "/health") || !strcmp(p, "/ready") || !strcmp(p, "/metrics") ||
             !strcmp(p, "/bindings") || !strcmp(p, "/bindings/stats") || !strcmp(p, "/bindings/request"))
        kk_http_reply(ex, 405, ctype_text, "method not allowed", 18);
    else
        kk_http_reply(ex, 404, ctype_text, "not found", 9);
}

int kk_api_start(uv_loop_t *loop, const char *host, uint16_t port, struct kk_app *app, struct kk_api **out)
{
    struct kk_api *api = calloc(1, sizeof(*api));
    if (!api)
        return KK_ENOMEM;
    api->app = app;
    int rv = kk_http_server_start(loop, host, port, MAX_BODY, on_http, api, &api->srv);
    if (rv < 0) {
        free(api);
        return rv;
    }
    *out = api;
    return 0;
}

uint16_t kk_api_port(const struct kk_api *api)
{
    return kk_http_server_port(api->srv);
}

static void on_server_closed(void *arg)
{
    struct kk_api *api = arg;
    void (*done)(void *) = api->done;
    void *darg = api->done_arg;
    free(api);
    if (done)
        done(darg);
}

void kk_api_close(struct kk_api *api, void (*done)(void *arg), void *arg)
{
    api->done = done;
    api->done_arg = arg;
    kk_http_server_close(api->srv, on_server_closed, api);
}

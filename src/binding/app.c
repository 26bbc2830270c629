/* The running gateway: the API server plus one slot per configured binding.
 *
 * A slot owns a binding (src/binding/binding.c) and a retry timer: a binding
 * whose target or source cannot be created or started is closed and tried
 * again after 1 s, 2 s, 4 s ... up to 30 s, while the others run
 * (kubemq-targets retries every 1 s forever; we back off).
 *
 * Config trees are reference counted: a slot keeps a reference to the tree
 * its kk_binding_cfg lives in, so a reload can keep unchanged bindings
 * running on the old tree; the tree is freed when no slot and not the app
 * refer to it.
 */
#include "kk/app.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kk/api.h"
#include "kk/binding_ctl.h"
#include "kk/err.h"
#include "kk/log.h"
#include "kk/target.h"

#define SCOPE "app"
#define RETRY_FIRST_MS 1000
#define RETRY_MAX_MS 30000

struct tree {
    struct kk_config *cfg;
    unsigned refs;
};

struct slot {
    struct kk_app *app;
    struct tree *tree;
    const struct kk_binding_cfg *cfg;
    struct kk_binding *b;
    uv_timer_t retry;
    unsigned attempts;
    bool started;
    unsigned refs; /* the slot itself + its retry timer handle + bindings being closed */
    char error[512];
};

struct kk_app {
    uv_loop_t *loop;
    struct tree *tree;
    struct slot **slots; /* current config order */
    size_t n_slots;
    struct kk_api *api;
    int api_port;
    unsigned pending; /* slots and API servers still closing */
    bool stopping, api_closing;
    void (*done)(void *arg);
    void *done_arg;
};

static void tree_unref(struct tree *t)
{
    if (t && --t->refs == 0) {
        kk_config_free(t->cfg);
        free(t);
    }
}

static void maybe_finish(struct kk_app *app);

/* ---- slots ----------------------------------------------------------------- */

static void slot_unref(struct slot *s)
{
    if (--s->refs > 0)
        return;
    struct kk_app *app = s->app;
    tree_unref(s->tree);
    free(s);
    app->pending--;
    maybe_finish(app);
}

static void on_failed_binding_closed(void *arg)
{
    slot_unref(arg);
}
static void on_retry_closed(uv_handle_t *h)
{
    slot_unref(h->data);
}

static void slot_try_start(struct slot *s);

static void on_retry(uv_timer_t *h)
{
    slot_try_start(h->data);
}

static void slot_failed(struct slot *s, const char *fmt, const char *detail)
{
    snprintf(s->error, sizeof(s->error), fmt, s->cfg->name, detail);
    s->attempts++;
    KK_ERROR(s->cfg->name, "failed to initialized binding: %s, attempt: %u, error: %s", s->cfg->name,
             s->attempts, s->error);
    if (s->b) {
        /* Tear down whatever was made (source before target); start afresh later. */
        s->refs++;
        kk_binding_close(s->b, 0, on_failed_binding_closed, s);
        s->b = NULL;
    }
    uint64_t delay = RETRY_FIRST_MS;
    for (unsigned i = 1; i < s->attempts && delay < RETRY_MAX_MS; i++)
        delay *= 2;
    if (delay > RETRY_MAX_MS)
        delay = RETRY_MAX_MS;
    uv_timer_start(&s->retry, on_retry, delay, 0);
}

static void slot_try_start(struct slot *s)
{
    struct kk_app *app = s->app;
    char err[256] = "";
    struct kk_target *t = NULL;
    struct kk_source *src = NULL;
    int rv = kk_binding_new(app->loop, s->cfg, &s->b, err, sizeof(err));
    if (rv < 0) {
        s->b = NULL;
        slot_failed(s, "error loading middlewares on binding %s, %s", err[0] ? err : kk_strerror(rv));
        return;
    }
    rv = kk_target_create(app->loop, &s->cfg->target, s->cfg->name, &t, err, sizeof(err));
    if (rv < 0) {
        slot_failed(s, "error loading target conntector on binding %s, %s", err[0] ? err : kk_strerror(rv));
        return;
    }
    kk_binding_set_target(s->b, t);
    KK_INFO(s->cfg->name, "binding: %s target: initialized successfully", s->cfg->name);
    rv = kk_source_create(app->loop, s->b, &s->cfg->source, &src, err, sizeof(err));
    if (rv < 0) {
        slot_failed(s, "error loading source conntector on binding %s, %s", err[0] ? err : kk_strerror(rv));
        return;
    }
    kk_binding_set_source(s->b, src);
    KK_INFO(s->cfg->name, "binding: %s source initialized successfully", s->cfg->name);
    rv = src->vt->start(src);
    if (rv < 0) {
        slot_failed(s, "error starting source on binding %s, %s", kk_strerror(rv));
        return;
    }
    s->started = true;
    s->error[0] = '\0';
    KK_INFO(s->cfg->name, "binding: %s, started successfully", s->cfg->name);
}

static struct slot *slot_new(struct kk_app *app, struct tree *tree, const struct kk_binding_cfg *cfg)
{
    struct slot *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->app = app;
    s->tree = tree;
    tree->refs++;
    s->cfg = cfg;
    s->refs = 2; /* the slot + its timer handle */
    uv_timer_init(app->loop, &s->retry);
    s->retry.data = s;
    app->pending++;
    return s;
}

/* Drains the binding for up to drain_ms, then frees the slot. */
static void slot_close(struct slot *s, uint64_t drain_ms)
{
    uv_close((uv_handle_t *)&s->retry, on_retry_closed);
    if (s->b) {
        s->refs++;
        kk_binding_close(s->b, drain_ms, on_failed_binding_closed, s);
        s->b = NULL;
    }
    slot_unref(s);
}

/* ---- API server ------------------------------------------------------------- */

static void on_api_closed(void *arg)
{
    struct kk_app *app = arg;
    app->pending--;
    maybe_finish(app);
}

static void api_close(struct kk_app *app)
{
    if (!app->api)
        return;
    app->pending++;
    kk_api_close(app->api, on_api_closed, app);
    app->api = NULL;
}

static int api_open(struct kk_app *app, int port)
{
    int rv = kk_api_start(app->loop, "0.0.0.0", (uint16_t)port, app, &app->api);
    if (rv < 0) {
        KK_ERROR(SCOPE, "cannot listen on 0.0.0.0:%d for the API: %s", port, kk_strerror(rv));
        app->api = NULL;
        return rv;
    }
    app->api_port = port;
    KK_INFO(SCOPE, "api server listening on 0.0.0.0:%u", kk_api_port(app->api));
    return 0;
}

/* ---- app ------------------------------------------------------------------- */

static void maybe_finish(struct kk_app *app)
{
    if (!app->stopping || app->pending)
        return;
    if (app->api) {
        /* Bindings are gone: now the API server, so it answered until the end. */
        api_close(app);
        return;
    }
    void (*done)(void *) = app->done;
    void *arg = app->done_arg;
    tree_unref(app->tree);
    free(app->slots);
    free(app);
    KK_INFO(SCOPE, "stopped");
    if (done)
        done(arg);
}

static int make_slots(struct kk_app *app, struct tree *tree, struct slot **old, size_t n_old,
                      struct slot ***out)
{
    const struct kk_config *cfg = tree->cfg;
    struct slot **slots = calloc(cfg->n_bindings ? cfg->n_bindings : 1, sizeof(*slots));
    if (!slots)
        return KK_ENOMEM;
    for (size_t i = 0; i < cfg->n_bindings; i++) {
        const struct kk_binding_cfg *bc = &cfg->bindings[i];
        /* Reload only (a few bindings): keep an unchanged one. */
        for (size_t j = 0; j < n_old; j++) {
            if (old[j] && !strcmp(old[j]->cfg->name, bc->name) && old[j]->cfg->hash == bc->hash) {
                slots[i] = old[j];
                old[j] = NULL;
                KK_INFO(bc->name, "binding: %s unchanged, kept running", bc->name);
                break;
            }
        }
        if (slots[i])
            continue;
        slots[i] = slot_new(app, tree, bc);
        if (!slots[i]) {
            for (size_t k = 0; k < i; k++)
                if (slots[k]->tree == tree)
                    slot_close(slots[k], 0);
            free(slots);
            return KK_ENOMEM;
        }
    }
    *out = slots;
    return 0;
}

int kk_app_start(uv_loop_t *loop, struct kk_config *cfg, struct kk_app **out)
{
    int rv;
    struct kk_app *app = calloc(1, sizeof(*app));
    struct tree *tree = calloc(1, sizeof(*tree));
    if (!app || !tree) {
        free(app);
        free(tree);
        return KK_ENOMEM;
    }
    app->loop = loop;
    tree->cfg = cfg;
    tree->refs = 1;
    app->tree = tree;
    rv = api_open(app, cfg->api_port);
    if (rv < 0)
        goto fail;
    rv = make_slots(app, tree, NULL, 0, &app->slots);
    if (rv < 0)
        goto fail;
    app->n_slots = cfg->n_bindings;
    for (size_t i = 0; i < app->n_slots; i++)
        slot_try_start(app->slots[i]);
    KK_INFO(SCOPE, "%zu binding(s) configured", app->n_slots);
    *out = app;
    return 0;
fail:
    /* The caller keeps cfg on failure.  Only the API server may be open. */
    free(tree);
    if (app->api) {
        app->stopping = true;
        app->tree = NULL;
        app->done = NULL;
        api_close(app); /* frees app when closed */
    } else {
        free(app);
    }
    return rv;
}

int kk_app_reload(struct kk_app *app, struct kk_config *cfg)
{
    int rv;
    struct tree *tree = calloc(1, sizeof(*tree));
    struct slot **slots = NULL;
    if (!tree) {
        kk_config_free(cfg);
        return KK_ENOMEM;
    }
    tree->cfg = cfg;
    tree->refs = 1;
    rv = make_slots(app, tree, app->slots, app->n_slots, &slots);
    if (rv < 0) {
        tree_unref(tree);
        return rv;
    }
    /* What is left of the old slots was changed or removed: drain it. */
    uint64_t drain_ms = (uint64_t)app->tree->cfg->shutdown_timeout_s * 1000;
    for (size_t j = 0; j < app->n_slots; j++) {
        if (app->slots[j]) {
            KK_INFO(app->slots[j]->cfg->name, "binding: %s changed or removed, draining",
                    app->slots[j]->cfg->name);
            slot_close(app->slots[j], drain_ms);
        }
    }
    free(app->slots);
    app->slots = slots;
    app->n_slots = cfg->n_bindings;
    tree_unref(app->tree);
    app->tree = tree;
    for (size_t i = 0; i < app->n_slots; i++)
        if (app->slots[i]->tree == tree && !app->slots[i]->started && !app->slots[i]->b &&
            !app->slots[i]->attempts)
            slot_try_start(app->slots[i]);
    if (cfg->api_port != app->api_port || !app->api) {
        api_close(app);
        rv = api_open(app, cfg->api_port);
    }
    return rv;
}

void kk_app_stop(struct kk_app *app, void (*done)(void *arg), void *arg)
{
    if (app->stopping)
        return;
    app->stopping = true;
    app->done = done;
    app->done_arg = arg;
    uint64_t drain_ms = (uint64_t)app->tree->cfg->shutdown_timeout_s * 1000;
    KK_INFO(SCOPE, "stopping %zu binding(s), waiting up to %" PRIu64 " ms for requests in flight",
            app->n_slots, drain_ms);
    app->pending++; /* hold: nothing finishes inside this call */
    for (size_t i = 0; i < app->n_slots; i++)
        slot_close(app->slots[i], drain_ms);
    app->n_slots = 0;
    app->pending--;
    if (!app->pending) {
        /* Every slot closed synchronously: let the API close (async) finish it. */
        maybe_finish(app);
    }
}

size_t kk_app_binding_count(const struct kk_app *app)
{
    return app->n_slots;
}

void kk_app_binding_get(const struct kk_app *app, size_t i, struct kk_app_binding *out)
{
    const struct slot *s = app->slots[i];
    out->cfg = s->cfg;
    out->b = s->b;
    out->started = s->started && s->b;
    out->error = s->error;
}

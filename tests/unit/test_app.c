/* The app lifecycle (src/binding/app.c) on a real loop: start (API on an
 * ephemeral port, bindings whose broker is unreachable so their sources keep
 * retrying), reload with a changed, an unchanged and a removed binding, stop;
 * a port already taken fails the start and leaves nothing on the loop.
 * Every test ends with uv_loop_close() == 0. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kk/api.h"
#include "kk/app.h"
#include "kk/binding_ctl.h"
#include "kk/config.h"
#include "kk/err.h"
#include "kk/log.h"

static struct kk_config *load(const char *yaml)
{
    struct kk_config *cfg = NULL;
    struct kk_diag diag = {0};
    int rv = kk_config_load_string(yaml, strlen(yaml), "test", &cfg, &diag);
    for (size_t i = 0; i < diag.n_errors; i++)
        print_error("config: %s\n", diag.errors[i]);
    kk_diag_free(&diag);
    assert_int_equal(rv, 0);
    cfg->api_port = 0; /* ephemeral: parallel runs never collide */
    return cfg;
}

static void on_tick(uv_timer_t *h)
{
    uv_stop(h->loop);
}

/* Runs the loop for about ms (the app's handles keep it alive). */
static void run_for(uv_loop_t *loop, uint64_t ms)
{
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, on_tick, ms, 0);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

static void on_done(void *arg)
{
    (*(int *)arg)++;
}

static const char *cfg_a =
    "apiPort: 1\n"
    "shutdown_timeout_seconds: 1\n"
    "bindings:\n"
    "  - name: keep\n"
    "    source: {kind: kubemq.query, properties: {address: '127.0.0.1:1', channel: k}}\n"
    "    target: {kind: 'null'}\n"
    "  - name: chg\n"
    "    source: {kind: kubemq.query, properties: {address: '127.0.0.1:1', channel: c1}}\n"
    "    target: {kind: 'null'}\n"
    "  - name: gone\n"
    "    source: {kind: kubemq.events, properties: {address: '127.0.0.1:1', channel: g}}\n"
    "    target: {kind: 'null'}\n";

static const char *cfg_b =
    "apiPort: 1\n"
    "shutdown_timeout_seconds: 1\n"
    "bindings:\n"
    "  - name: keep\n"
    "    source: {kind: kubemq.query, properties: {address: '127.0.0.1:1', channel: k}}\n"
    "    target: {kind: 'null'}\n"
    "  - name: chg\n"
    "    source: {kind: kubemq.query, properties: {address: '127.0.0.1:1', channel: c2}}\n"
    "    target: {kind: 'null'}\n"
    "  - name: new\n"
    "    properties: {retry_attempts: '2'}\n"
    "    source: {kind: kubemq.queue, properties: {address: '127.0.0.1:1', channel: n}}\n"
    "    target: {kind: 'null'}\n";

static void test_start_reload_stop(void **state)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct kk_app *app = NULL;
    assert_int_equal(kk_app_start(&loop, load(cfg_a), &app), 0);
    assert_int_equal(kk_app_binding_count(app), 3);
    struct kk_app_binding v;
    kk_app_binding_get(app, 0, &v);
    assert_string_equal(v.cfg->name, "keep");
    assert_true(v.started); /* created and started; the source retries the broker itself */
    const char *why = NULL;
    assert_false(kk_binding_ready(v.b, &why)); /* no broker */
    assert_non_null(why);
    struct kk_binding *keep = v.b;
    kk_app_binding_get(app, 1, &v);
    struct kk_binding *chg = v.b;
    run_for(&loop, 100);

    assert_int_equal(kk_app_reload(app, load(cfg_b)), 0);
    assert_int_equal(kk_app_binding_count(app), 3);
    kk_app_binding_get(app, 0, &v);
    assert_ptr_equal(v.b, keep); /* unchanged: the same binding object keeps running */
    kk_app_binding_get(app, 1, &v);
    assert_ptr_not_equal(v.b, chg); /* changed: replaced */
    assert_string_equal(kk_props_get(&v.cfg->source.props, "channel"), "c2");
    kk_app_binding_get(app, 2, &v);
    assert_string_equal(v.cfg->name, "new");
    assert_true(v.started);
    run_for(&loop, 100);

    int done = 0;
    kk_app_stop(app, on_done, &done);
    assert_int_equal(done, 0);     /* never from inside the call */
    uv_run(&loop, UV_RUN_DEFAULT); /* returns when the app has no handle left */
    assert_int_equal(done, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_port_taken(void **state)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    uv_tcp_t busy;
    struct sockaddr_in sa;
    uv_ip4_addr("0.0.0.0", 0, &sa);
    uv_tcp_init(&loop, &busy);
    assert_int_equal(uv_tcp_bind(&busy, (const struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&busy, 8, NULL), 0);
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    uv_tcp_getsockname(&busy, (struct sockaddr *)&ss, &len);
    struct kk_config *cfg = load(cfg_a);
    cfg->api_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    struct kk_app *app = NULL;
    assert_true(kk_app_start(&loop, cfg, &app) < 0);
    assert_null(app);
    kk_config_free(cfg); /* still the caller's on failure */
    uv_close((uv_handle_t *)&busy, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start_reload_stop),
        cmocka_unit_test(test_port_taken),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

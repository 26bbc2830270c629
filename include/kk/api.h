/* The gateway's HTTP API (src/api/api.c) on include/kk/http_server.h:
 *   GET /health            200 "ok"
 *   GET /ready             200 "ready" when every binding is started and its
 *                          source and target say ready; else 503, one line
 *                          per binding that is not ("<binding>: <why>")
 *   GET /metrics           Prometheus text 0.0.4 (kubemq_targets_* counters,
 *                          kubemq_kinesis_* gauges/histogram, plus what the
 *                          sources and targets append)
 *   GET /bindings          pretty JSON, secret properties masked as "***"
 *   GET /bindings/stats    pretty JSON array of per-binding reports
 *   POST /bindings/request {"binding":..,"payload":<Request>} through that
 *                          binding's pipeline (connector-behaviour.md §6.2)
 * The API reads the app's bindings through the two kk_app_binding_* calls
 * below (implemented by src/binding/app.c) and never keeps pointers to them
 * across loop turns, except the binding of an in-flight POST, which the
 * binding's drain replies to before it goes away.
 */
#ifndef KK_API_H
#define KK_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "kk/config.h"

struct kk_api;
struct kk_app;
struct kk_binding;

/* One configured binding as the app sees it now. */
struct kk_app_binding {
    const struct kk_binding_cfg *cfg;
    struct kk_binding *b; /* NULL while not (yet) started */
    bool started;         /* target and source created and started */
    const char *error;    /* the last start error, "" when none */
};
size_t kk_app_binding_count(const struct kk_app *app);
void kk_app_binding_get(const struct kk_app *app, size_t i, struct kk_app_binding *out);

/* Listens on host:port (0: ephemeral; see kk_api_port).  Request bodies are
 * bounded (8 MiB). */
int kk_api_start(uv_loop_t *loop, const char *host, uint16_t port, struct kk_app *app, struct kk_api **out);
uint16_t kk_api_port(const struct kk_api *api);
/* Closes the listener and connections; done runs once everything is closed
 * (never from inside this call). */
void kk_api_close(struct kk_api *api, void (*done)(void *arg), void *arg);

#endif

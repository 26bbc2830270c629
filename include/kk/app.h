/* The running gateway: every binding plus the HTTP API, on one loop.
 * main.c owns the loop, the CLI and the signals; it drives the app through
 * these four calls and nothing else. */
#ifndef KK_APP_H
#define KK_APP_H

#include <uv.h>

#include "kk/config.h"

struct kk_app;

/* Starts the API server and every binding of cfg.  A binding that cannot
 * start now (broker unreachable, missing credentials) is retried with
 * backoff and reported by /ready; it does not fail this call.  Fails only
 * when the API port cannot be bound.  cfg must outlive the app or until it
 * is replaced by kk_app_reload (the app then frees the old tree). */
int kk_app_start(uv_loop_t *loop, struct kk_config *cfg, struct kk_app **out);

/* Replaces changed bindings (by kk_binding_cfg.hash), adds new ones, stops
 * removed ones; unchanged bindings keep connections and in-flight work.
 * Takes ownership of cfg. */
int kk_app_reload(struct kk_app *app, struct kk_config *cfg);

/* Graceful stop: stop taking messages, finish or fail every in-flight
 * request within shutdown_timeout_seconds, reply to each, close every
 * handle, then call done (once).  After done, the loop has no handle of
 * the app's left and the app's memory is freed. */
void kk_app_stop(struct kk_app *app, void (*done)(void *arg), void *arg);

#endif

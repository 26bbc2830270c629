/* The owner's side of a binding (src/binding/binding.c): create it, give it
 * its target and source, read its metrics, drain and close it.  Used by the
 * app (src/binding/app.c), the HTTP API (src/api/) and the unit tests; the
 * sources only see include/kk/binding.h.
 *
 * Life cycle:
 *   kk_binding_new -> kk_binding_set_target -> kk_source_create(.., b, ..)
 *   -> kk_binding_set_source -> source->vt->start ... kk_binding_close.
 * A binding without a target rejects submits with KK_ESHUTDOWN (not started).
 */
#ifndef KK_BINDING_CTL_H
#define KK_BINDING_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "kk/binding.h"
#include "kk/buf.h"
#include "kk/config.h"
#include "kk/target.h"

/* Upper bounds (seconds) of the request duration histogram; +Inf is implied. */
#define KK_LAT_NBUCKETS 14
extern const double kk_lat_bounds_s[KK_LAT_NBUCKETS];

/* Counters of one binding since it was created (kubemq-targets §5.4 plus ours). */
struct kk_binding_stats {
    uint64_t requests_count;                  /* requests that reached the middleware (not invalid ones) */
    uint64_t requests_volume;                 /* sum of request data lengths */
    uint64_t responses_count;                 /* successful outcomes */
    uint64_t responses_volume;                /* sum of result data lengths */
    uint64_t errors_count;                    /* failed outcomes after retries */
    uint64_t retries;                         /* attempts beyond the first */
    uint64_t invalid;                         /* bodies that did not decode */
    uint64_t lat_bucket[KK_LAT_NBUCKETS + 1]; /* non-cumulative; last = +Inf */
    uint64_t lat_count;
    double lat_sum_s;
};

/* Parses the middleware properties of cfg (retry_*, rate_per_second(s),
 * metadata) and the source's `concurrency`.  cfg must outlive the binding.
 * Fails with KK_ECONFIG and a message in err (no secrets). */
int kk_binding_new(uv_loop_t *loop, const struct kk_binding_cfg *cfg, struct kk_binding **out, char *err,
                   size_t errlen);

/* The binding takes ownership: kk_binding_close closes them. */
void kk_binding_set_target(struct kk_binding *b, struct kk_target *t);
void kk_binding_set_source(struct kk_binding *b, struct kk_source *s);
struct kk_target *kk_binding_target(const struct kk_binding *b);
struct kk_source *kk_binding_source(const struct kk_binding *b);

unsigned kk_binding_inflight(const struct kk_binding *b);
const struct kk_binding_stats *kk_binding_stats(const struct kk_binding *b);

/* true when a target and a source are set and both say ready; else *why
 * says what is missing (static or owned by the source/target). */
bool kk_binding_ready(const struct kk_binding *b, const char **why);

/* Graceful end: stops the source's intake, rejects new submits with
 * KK_ESHUTDOWN, lets in-flight requests finish for up to drain_ms, then fails
 * the rest ("shutting down: request not completed within
 * shutdown_timeout_seconds"; target calls are cancelled).  When every request
 * has been replied to it closes the source, the target and its own handles,
 * frees itself and calls done (never from inside this call). */
void kk_binding_close(struct kk_binding *b, uint64_t drain_ms, void (*done)(void *arg), void *arg);

#endif

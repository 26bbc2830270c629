/* A binding = source + middleware + target, and the state machine of every
 * request in flight through it (src/binding/, design note
 * src/binding/DESIGN.md).
 *
 * Sources (src/sources/) hand message bodies to the binding with
 * kk_binding_submit and get exactly one reply callback per accepted body.
 * The binding owns decoding, middleware (retry, rate limit, metadata),
 * the target call, metrics, deadlines and the concurrency cap.
 */
#ifndef KK_BINDING_H
#define KK_BINDING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "kk/buf.h"
#include "kk/config.h"

struct kk_binding;
struct kk_source;

/* The end of one request, as the source needs it for its reply. */
struct kk_outcome {
    bool is_error;
    /* kubemq-targets' error text: "All attempts fail:\n#1: ..." after the
     * target, "invalid request format, ..." for a body that did not decode,
     * or a shutdown/deadline text.  "" on success. */
    const char *error;
    /* The full Response JSON (connector-behaviour.md §3.2), always built:
     * query replies carry it as Body; events/queue publish it to
     * response_channel. */
    const char *response_json;
    size_t response_len;
    /* true when the body never reached the target (decode failure). */
    bool invalid_request;
    /* Success whose output still lists failed entries (kk_result.partial):
     * the queue source nacks it so the message is redelivered. */
    bool partial;
};

/* Runs exactly once per accepted submit, possibly from inside a later loop
 * turn, never from inside kk_binding_submit. out is valid during the call. */
typedef void (*kk_reply_cb)(void *ctx, const struct kk_outcome *out);

/* Accepts one message body.  deadline_ms is monotonic (kk_mono_ms based),
 * 0 for none (Request.Timeout gives one for queries and commands).
 * The body is copied.  Returns 0 (cb will run), KK_EBUSY when the binding
 * is at its concurrency cap (the source should have paused), or
 * KK_ESHUTDOWN while draining. */
int kk_binding_submit(struct kk_binding *b, const char *body, size_t len, uint64_t deadline_ms,
                      kk_reply_cb cb, void *ctx);

/* concurrency - requests in flight (>= 0). */
unsigned kk_binding_free_slots(const struct kk_binding *b);

const char *kk_binding_name(const struct kk_binding *b);
const struct kk_binding_cfg *kk_binding_config(const struct kk_binding *b);
uv_loop_t *kk_binding_loop(const struct kk_binding *b);

/* ---- sources --------------------------------------------------------------
 * The binding calls the source through this table.  The source calls
 * kk_binding_submit for each message while free slots > 0; the binding
 * calls on_full when a submit (the source's or an HTTP API request) takes
 * the last slot, and on_capacity whenever slots free up. */
struct kk_source_vtbl {
    const char *kind;
    /* Begin subscribing / polling. Failures are retried by the source itself. */
    int (*start)(struct kk_source *s);
    /* Stop taking new messages (unsubscribe, stop polling); in-flight
     * replies still go out.  Idempotent. */
    void (*stop_intake)(struct kk_source *s);
    void (*on_capacity)(struct kk_source *s);
    /* No free slot left: pause intake.  Runs inside kk_binding_submit, so
     * it must only set state (never submit or reply). */
    void (*on_full)(struct kk_source *s);
    /* true when every subscription is live. */
    bool (*ready)(struct kk_source *s, const char **why);
    /* Prometheus lines of the source's own (e.g. broker reconnects). */
    void (*metrics)(struct kk_source *s, const char *binding, struct kk_buf *out);
    /* Close everything (after stop_intake and after all replies were
     * handed over); done runs once when every handle is closed. */
    void (*close)(struct kk_source *s, void (*done)(void *arg), void *arg);
};

struct kk_source {
    const struct kk_source_vtbl *vt;
};

/* Creates the source of spec for binding b (does not start it). */
int kk_source_create(uv_loop_t *loop, struct kk_binding *b, const struct kk_spec *spec,
                     struct kk_source **out, char *err, size_t errlen);

#endif

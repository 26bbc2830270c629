/* Targets: what a binding sends each request to.  The binding (request state
 * machine) never names a concrete kind; it calls through kk_target_vtbl.
 *
 * One kk_target_call per request, embedded in the binding's request and
 * kept across attempts, so a target can remember per-request progress
 * (PutRecords: which entries already succeeded) in call->priv.
 *
 * Contract of submit: returns 0 and later calls call->done exactly once
 * (never from inside submit: at least one loop turn later), unless
 * cancel() is called first, after which done never runs.  Returns < 0
 * synchronously for nothing; errors always come through done.
 * release() frees call->priv when the request ends (after done or cancel).
 */
#ifndef KK_TARGET_H
#define KK_TARGET_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "kk/buf.h"
#include "kk/config.h"
#include "kk/request.h"

struct kk_target;
struct kk_target_call;

struct kk_result {
    int err;              /* 0: success */
    bool retryable;       /* on error: worth another attempt */
    char *error;          /* on error: text for the reply ("<Code>: <message>"); heap, owned */
    const char *error_code; /* on error: AWS code or transport error name, for metrics; static or NULL */
    struct kk_buf data;   /* Response.data bytes (e.g. JSON of PutRecordOutput) */
    bool has_data;        /* false: "data":null */
    struct kk_kv md[4];   /* reply metadata besides result=ok (e.g. shard_iterator); heap strings, owned */
    size_t n_md;
    /* Success whose output still reports failed entries (PutRecords with
     * FailedRecordCount > 0 after the last attempt): query replies carry the
     * output as kubemq-targets would; the queue source nacks. */
    bool partial;
};
/* A result belongs to the target that produced it: the receiver of done()
 * reads it during the call and keeps no pointer into it afterwards. */

struct kk_target_call {
    /* set by the binding */
    const struct kk_request *req;
    uint64_t deadline_ms;  /* monotonic; 0 = none */
    unsigned attempt;      /* 0 for the first */
    unsigned max_attempts; /* the binding's retry_attempts (>= 1) */
    void (*done)(struct kk_target_call *call, struct kk_result *res); /* res valid during the call */
    void *user;
    /* owned by the target */
    void *priv;
};

struct kk_target_vtbl {
    const char *kind; /* canonical kind name */
    int (*submit)(struct kk_target *t, struct kk_target_call *call);
    void (*cancel)(struct kk_target *t, struct kk_target_call *call);
    void (*release)(struct kk_target *t, struct kk_target_call *call);
    /* true when the target is initialised and can take requests */
    bool (*ready)(struct kk_target *t, const char **why);
    /* Prometheus text lines for the target's own metrics (may be NULL). */
    void (*metrics)(struct kk_target *t, const char *binding, struct kk_buf *out);
    void (*close)(struct kk_target *t, void (*done)(void *arg), void *arg);
};

struct kk_target {
    const struct kk_target_vtbl *vt;
};

/* Creates the target for spec (config validated).  Fails with a clear
 * message in err (no secrets) e.g. missing credentials. */
int kk_target_create(uv_loop_t *loop, const struct kk_spec *spec, const char *binding,
                     struct kk_target **out, char *err, size_t errlen);

/* Concrete constructors, used by kk_target_create. */
int kk_kinesis_target_create(uv_loop_t *loop, const struct kk_spec *spec, const char *binding,
                             struct kk_target **out, char *err, size_t errlen);
int kk_null_target_create(uv_loop_t *loop, const struct kk_spec *spec, const char *binding,
                          struct kk_target **out, char *err, size_t errlen);

#endif

/* The built-in `null` target: answers every call with success and no data
 * ("data":null) in the idle phase of the loop, never inside submit.  It does
 * no I/O, so it isolates the gateway's own cost: a diagnostics and
 * benchmarking target (and the target of the pipeline tests). */
#include "kk/target.h"

#include <stdlib.h>

#include "kk/err.h"

struct null_target {
    struct kk_target base;
    uv_idle_t idle;
    /* FIFO of pending calls, linked through call->priv (ours by contract). */
    struct kk_target_call *head, *tail;
    size_t n;
    void (*close_done)(void *arg);
    void *close_arg;
};

#define NEXT(c) (*(struct kk_target_call **)&(c)->priv)

static void on_idle(uv_idle_t *h)
{
    struct null_target *t = h->data;
    /* Answer what was pending when this turn began; later submits wait a turn. */
    size_t n = t->n;
    while (n-- && t->head) {
        struct kk_target_call *c = t->head;
        t->head = NEXT(c);
        if (!t->head)
            t->tail = NULL;
        NEXT(c) = NULL;
        t->n--;
        struct kk_result res = {0};
        c->done(c, &res);
    }
    if (!t->head)
        uv_idle_stop(&t->idle);
}

static int null_submit(struct kk_target *base, struct kk_target_call *call)
{
    struct null_target *t = (struct null_target *)base;
    NEXT(call) = NULL;
    if (t->tail)
        NEXT(t->tail) = call;
    else
        t->head = call;
    t->tail = call;
    t->n++;
    uv_idle_start(&t->idle, on_idle);
    return 0;
}

/* Linear in the calls pending for this one loop turn; cancel happens only at
 * deadlines and shutdown, never on the hot path. */
static void null_cancel(struct kk_target *base, struct kk_target_call *call)
{
    struct null_target *t = (struct null_target *)base;
    struct kk_target_call *prev = NULL;
    for (struct kk_target_call *c = t->head; c; prev = c, c = NEXT(c)) {
        if (c != call)
            continue;
        if (prev)
            NEXT(prev) = NEXT(c);
        else
            t->head = NEXT(c);
        if (t->tail == c)
            t->tail = prev;
        NEXT(c) = NULL;
        t->n--;
        return;
    }
}

static void null_release(struct kk_target *base, struct kk_target_call *call)
{
    (void)base;
    call->priv = NULL;
}

static bool null_ready(struct kk_target *base, const char **why)
{
    (void)base;
    (void)why;
    return true;
}

static void on_closed(uv_handle_t *h)
{
    struct null_target *t = h->data;
    void (*done)(void *) = t->close_done;
    void *arg = t->close_arg;
    free(t);
    if (done)
        done(arg);
}

static void null_close(struct kk_target *base, void (*done)(void *arg), void *arg)
{
    struct null_target *t = (struct null_target *)base;
    t->close_done = done;
    t->close_arg = arg;
    uv_close((uv_handle_t *)&t->idle, on_closed);
}

static const struct kk_target_vtbl null_vtbl = {
    .kind = "null",
    .submit = null_submit,
    .cancel = null_cancel,
    .release = null_release,
    .ready = null_ready,
    .metrics = NULL,
    .close = null_close,
};

int kk_null_target_create(uv_loop_t *loop, const struct kk_spec *spec, const char *binding,
                          struct kk_target **out, char *err, size_t errlen)
{
    (void)spec;
    (void)binding;
    (void)err;
    (void)errlen;
    struct null_target *t = calloc(1, sizeof(*t));
    if (!t)
        return KK_ENOMEM;
    t->base.vt = &null_vtbl;
    uv_idle_init(loop, &t->idle);
    t->idle.data = t;
    *out = &t->base;
    return 0;
}

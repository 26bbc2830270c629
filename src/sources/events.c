/* kubemq.events and kubemq.events-store (connector-behaviour.md §4.5).
 * No reply to the sender; with response_channel set, the Response JSON is
 * published there as an event (or events-store message).  Events-store
 * resume after a reconnect is the client's job (last sequence + 1). */
#include "sources.h"

#include "kk/err.h"
#include "kk/log.h"

static void on_reply(void *ctx, const struct kk_outcome *out)
{
    struct src_conn *c = ctx;
    if (out->is_error)
        KK_DEBUG(c->src->bname, "event failed: %s", out->error);
    kk__src_publish(c, out->response_json, out->response_len);
}

void kk__src_events_on_message(void *user, void *msg)
{
    struct src_conn *c = user;
    struct kk_src *s = c->src;
    Kubemq__EventReceive *ev = msg;
    s->received++;
    int rv = kk_binding_submit(s->b, (const char *)ev->body.data, ev->body.len, 0, on_reply, c);
    if (rv != 0) {
        s->dropped++;
        KK_ERROR(s->bname, "event %s dropped: %s", ev->eventid ? ev->eventid : "", kk_strerror(rv));
    }
    kk_kmq_free(ev);
}

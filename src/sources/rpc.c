/* kubemq.query and kubemq.command (connector-behaviour.md §4.3-§4.4).
 *
 * Each Request becomes one binding submit; the reply copies RequestID and
 * ReplyChannel byte for byte.  A query's reply body is the Response JSON and
 * Executed is always true (failures show as is_error inside); a command's
 * reply has no body and Executed = !is_error with Error set. */
#include "sources.h"

#include <stdlib.h>
#include <string.h>

#include "kk/clock.h"
#include "kk/err.h"
#include "kk/log.h"

/* What the reply needs: the two ids, copied.  Contexts are recycled through
 * a small per-source free list, so steady state allocates nothing here; ids
 * longer than the inline room (rare) get a context of their own. */
#define RPC_INLINE 160
#define RPC_FREE_MAX 256

struct rpc_ctx {
    struct src_conn *conn;
    struct rpc_ctx *next_free;
    char *request_id;
    char *reply_channel;
    bool pooled;
    char mem[RPC_INLINE];
};

static struct rpc_ctx *ctx_get(struct kk_src *s, size_t need)
{
    struct rpc_ctx *rc;
    if (need <= RPC_INLINE && s->rpc_free) {
        rc = s->rpc_free;
        s->rpc_free = rc->next_free;
        s->n_rpc_free--;
        return rc;
    }
    size_t extra = need > RPC_INLINE ? need - RPC_INLINE : 0;
    rc = malloc(sizeof(*rc) + extra);
    if (rc)
        rc->pooled = extra == 0;
    return rc;
}

static void ctx_put(struct kk_src *s, struct rpc_ctx *rc)
{
    if (!rc->pooled || s->n_rpc_free >= RPC_FREE_MAX || s->closing) {
        free(rc);
        return;
    }
    rc->next_free = s->rpc_free;
    s->rpc_free = rc;
    s->n_rpc_free++;
}

void kk__src_rpc_free_pool(struct kk_src *s)
{
    while (s->rpc_free) {
        struct rpc_ctx *rc = s->rpc_free;
        s->rpc_free = rc->next_free;
        free(rc);
    }
    s->n_rpc_free = 0;
}

static void send_reply(struct src_conn *c, const char *request_id, const char *reply_channel,
                       const struct kk_outcome *out)
{
    struct kk_src *s = c->src;
    Kubemq__Response r = KUBEMQ__RESPONSE__INIT;
    r.clientid = c->client_id;
    r.requestid = (char *)request_id;
    r.replychannel = (char *)reply_channel;
    r.timestamp = kk_wall_ms() * 1000000;
    if (s->kind == KK_SOURCE_QUERY) {
        r.executed = 1;
        r.body.data = (uint8_t *)out->response_json;
        r.body.len = out->response_len;
    } else {
        r.executed = !out->is_error;
        r.error = (char *)(out->is_error ? out->error : "");
    }
    int rv = kk_kmq_send_response(c->client, &r, kk__src_unary_done, s);
    if (rv != 0) {
        s->replies_failed++;
        KK_ERROR(s->bname, "error sending %s response %s: %s", s->kind == KK_SOURCE_QUERY ? "query" : "command",
                 request_id, kk_strerror(rv));
    }
}

static void on_reply(void *ctx, const struct kk_outcome *out)
{
    struct rpc_ctx *rc = ctx;
    send_reply(rc->conn, rc->request_id, rc->reply_channel, out);
    ctx_put(rc->conn->src, rc);
}

void kk__src_rpc_on_message(void *user, void *msg)
{
    struct src_conn *c = user;
    struct kk_src *s = c->src;
    Kubemq__Request *req = msg;
    s->received++;

    const char *id = req->requestid ? req->requestid : "";
    const char *reply = req->replychannel ? req->replychannel : "";
    size_t il = strlen(id) + 1, rl = strlen(reply) + 1;
    struct rpc_ctx *rc = ctx_get(s, il + rl);
    if (!rc) {
        s->dropped++;
        KK_ERROR(s->bname, "out of memory: request %s dropped", id);
        kk_kmq_free(req);
        return;
    }
    rc->conn = c;
    rc->request_id = memcpy(rc->mem, id, il);
    rc->reply_channel = memcpy(rc->mem + il, reply, rl);

    /* Request.Timeout (ms) is the request's deadline. */
    uint64_t deadline = req->timeout > 0 ? kk_mono_ms() + (uint64_t)req->timeout : 0;
    int rv = kk_binding_submit(s->b, (const char *)req->body.data, req->body.len, deadline, on_reply, rc);
    kk_kmq_free(req);
    if (rv != 0) {
        /* Only while draining (or out of memory): a full binding pauses the
         * subscription (on_full) before another message is delivered.
         * Answer at once so the sender is not left waiting for its timeout. */
        struct kk_outcome o = {.is_error = true};
        char json[160];
        o.error = rv == KK_ESHUTDOWN ? "gateway is shutting down" : "gateway at its concurrency limit";
        int n = snprintf(json, sizeof(json), "{\"metadata\":{},\"data\":null,\"is_error\":true,\"error\":\"%s\"}",
                         o.error);
        o.response_json = json;
        o.response_len = (size_t)n;
        s->dropped++;
        send_reply(c, rc->request_id, rc->reply_channel, &o);
        ctx_put(s, rc);
    }
}

/* KubeMQ client: gRPC over one HTTP/2 connection (nghttp2 + protobuf-c),
 * plaintext h2c with prior knowledge or TLS with ALPN h2, on the loop.
 * No gRPC library: 5-byte message framing, grpc-status trailers,
 * :path /kubemq.kubemq/<Method> (kubemq-protocol.md §1-§2).
 *
 * The client reconnects by itself (exponential backoff with full jitter,
 * bounded by max_reconnects when > 0) and then re-opens every live
 * subscription and queue stream; events-store subscriptions resume at the
 * last delivered sequence + 1.  Unary calls made while no connection is
 * READY (connecting, reconnecting, after a GOAWAY) are kept and sent on the
 * next READY connection, within their deadline (call_timeout_ms; past it
 * cb gets KK_ETIMEOUT); at most 4096 such calls / 4 MiB of requests wait,
 * past that the call fails at once with KK_EBUSY.  Once FAILED, unary calls
 * fail at once with KK_ECLOSED.  A call the broker refused (GOAWAY below its
 * stream id, or RST_STREAM REFUSED_STREAM): nothing of it was processed, so
 * it is sent once more, on the next connection, within its deadline.
 *
 * Reconnect backoff: the attempt counter starts over only after a
 * connection stayed READY for 10 s; a GOAWAY with an error code (or a second
 * one within those 10 s) backs off like any other loss.
 *
 * Keepalive: a connection that received nothing for keepalive_idle_ms gets
 * an HTTP/2 PING; if nothing at all (ack or other frame) arrives within
 * keepalive_timeout_ms, the peer is taken for dead, the connection closed
 * and the client reconnects (KK_ETIMEOUT; subscriptions resume as after any
 * loss).
 *
 * FAILED is final: on_state(FAILED) runs once and nothing reconnects.
 *
 * Message ownership: a message handed to a callback (Kubemq__Request *,
 * Kubemq__EventReceive *, Kubemq__QueuesDownstreamResponse *, unary replies)
 * belongs to the callee, which frees it with kk_kmq_free(msg) and nothing
 * else: it lives in one block with all its strings (never free or
 * realloc a field of it).  Messages passed in are serialised before the
 * call returns; the caller keeps ownership.
 */
#ifndef KK_KUBEMQ_H
#define KK_KUBEMQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "kubemq.pb-c.h"
#include "kk/stream.h"

struct kk_kmq_client;
struct kk_kmq_sub;
struct kk_kmq_downstream;

struct kk_kmq_opts {
    const char *host;
    uint16_t port;
    bool tls;
    struct kk_tls_opts tls_opts;      /* alpn is forced to "h2" */
    /* Borrowed TLS context (made with alpn "h2" and the server name to verify);
     * when set with tls, used instead of building one from tls_opts, so N
     * clients to one broker parse the CA bundle once.  Must outlive the
     * client: free it only after kk_kmq_client_close's done has run. */
    struct kk_tls_ctx *tls_ctx;
    const char *auth_token;           /* "authorization" metadata; NULL or "" for none */
    bool auto_reconnect;              /* set true (the config default); false: FAILED on first loss */
    uint32_t reconnect_interval_ms;   /* backoff base; 0 -> 500 ms; cap 30 s */
    uint32_t max_reconnects;          /* 0 = unlimited */
    uint32_t connect_timeout_ms;      /* default 5000 */
    size_t max_message_bytes;         /* default 100 MiB */
    uint32_t call_timeout_ms;         /* deadline of unary calls (grpc-timeout too); 0 -> 30 s */
    /* PING after this long without receiving anything.  0 -> $KK_TEST_KEEPALIVE_MS when set
     * (tests; it then sets the timeout too, unless given), else 300000.  grpc-go brokers
     * answer pings more frequent than 5 min with GOAWAY too_many_pings: set lower values
     * only in tests. */
    uint32_t keepalive_idle_ms;
    uint32_t keepalive_timeout_ms;    /* PING unanswered this long: the peer is dead; 0 -> 20000 */
    /* Subscriptions are flow-controlled in messages instead of bytes: the
     * broker can finish sending at most the credit given with
     * kk_kmq_sub_add_credit (none at first), whatever the message sizes.
     * Costs about one round trip per message a subscription receives beyond
     * the first that fits 5 bytes per credit; false: a 1 MiB stream window
     * and pause/resume. */
    bool message_credit;
    const char *log_scope;            /* binding name for log lines */
};

enum kk_kmq_state {
    KK_KMQ_CONNECTING = 0,
    KK_KMQ_READY,        /* connection up, subscriptions (re)opened */
    KK_KMQ_RECONNECTING, /* lost; waiting for the backoff timer */
    KK_KMQ_FAILED,       /* gave up: max_reconnects reached or auto_reconnect off */
};

/* on_state: every change of the connection state (for /ready and logs). */
int kk_kmq_client_new(uv_loop_t *loop, const struct kk_kmq_opts *opts,
                      void (*on_state)(void *user, enum kk_kmq_state st, int err), void *user,
                      struct kk_kmq_client **out);
enum kk_kmq_state kk_kmq_client_state(const struct kk_kmq_client *c);

/* Cancels every call and stream (their callbacks get KK_ECANCELED or are
 * suppressed where documented), closes the connection, then calls done.
 * Safe from inside any callback: the teardown runs on the next loop turn,
 * after output already queued (a last response or settle) is flushed.
 * Unary callbacks get KK_ECANCELED; subscription and downstream callbacks
 * are suppressed, and their handles are freed with the client (do not use
 * them after this call).  done runs after every handle is closed. */
void kk_kmq_client_close(struct kk_kmq_client *c, void (*done)(void *arg), void *arg);

/* Frees any message given to a callback. */
void kk_kmq_free(void *msg);

/* ---- unary calls: cb runs exactly once when this returns 0 ---------------
 * status 0 = grpc-status OK; else KK_EGRPC with grpc_status/grpc_message
 * set, or a transport error (grpc_status -1).  Reply messages are owned by
 * the callee of cb (kk_kmq_free), may be NULL on error. */
typedef void (*kk_kmq_unary_cb)(void *arg, int status, int grpc_status, const char *grpc_message,
                                void *reply);

int kk_kmq_ping(struct kk_kmq_client *c, kk_kmq_unary_cb cb, void *arg);            /* reply: Kubemq__PingResult */
int kk_kmq_send_response(struct kk_kmq_client *c, const Kubemq__Response *r,
                         kk_kmq_unary_cb cb, void *arg);                            /* reply: NULL (Empty) */
int kk_kmq_send_event(struct kk_kmq_client *c, const Kubemq__Event *e,
                      kk_kmq_unary_cb cb, void *arg);                               /* reply: Kubemq__Result */
int kk_kmq_send_queue_message(struct kk_kmq_client *c, const Kubemq__QueueMessage *m,
                              kk_kmq_unary_cb cb, void *arg);                       /* reply: Kubemq__SendQueueMessageResult */

/* ---- subscriptions: SubscribeToRequests / SubscribeToEvents ---------------
 * sub is copied.  Type Commands/Queries -> on_message gets Kubemq__Request *;
 * Events/EventsStore -> Kubemq__EventReceive *.  on_state reports
 * subscribed (err 0) and lost (err < 0, the client will resubscribe).
 *
 * Flow control: while paused, nothing is delivered and received bytes are
 * not acknowledged to the broker (the HTTP/2 stream window closes), so the
 * broker holds the excess; what already arrived stays buffered, bounded by
 * the stream window, and is delivered on resume. */
struct kk_kmq_sub_cbs {
    void (*on_message)(void *user, void *msg);
    void (*on_state)(void *user, bool subscribed, int err);
};
int kk_kmq_subscribe(struct kk_kmq_client *c, const Kubemq__Subscribe *sub,
                     const struct kk_kmq_sub_cbs *cbs, void *user, struct kk_kmq_sub **out);
void kk_kmq_sub_pause(struct kk_kmq_sub *s);
void kk_kmq_sub_resume(struct kk_kmq_sub *s);
/* Message credit (opts.message_credit; no-ops otherwise): allow n more
 * messages.  A message takes its unit when its gRPC prefix arrives and
 * counts as outstanding until on_message has it; credit and reserved
 * messages outlive a lost stream (the broker resends nothing of it, so the
 * reservations return as credit).  Pause holds delivery and freezes the
 * window (held bytes stay within one message + 5 x credit); resume moves
 * it on. */
void kk_kmq_sub_add_credit(struct kk_kmq_sub *s, uint32_t n);
/* Credit not used yet plus messages announced and not delivered: what the
 * broker may still complete beyond what on_message has seen. */
uint32_t kk_kmq_sub_outstanding(const struct kk_kmq_sub *s);
/* Bytes received on the current stream and not yet delivered (held while
 * paused, or a partial message); bounded by the stream window. */
size_t kk_kmq_sub_buffered(const struct kk_kmq_sub *s);
/* Cancels the stream (RST_STREAM CANCEL); no callback runs afterwards. */
void kk_kmq_unsubscribe(struct kk_kmq_sub *s);

/* ---- QueuesDownstream (bidi): transactional polls and settles -------------
 * on_response gets every QueuesDownstreamResponse (poll results, settle
 * errors, CloseByServer).  on_state: open (err 0) / lost (err < 0; the
 * client re-opens it; transactions of the lost stream are void and their
 * messages return to the queue on the broker). */
struct kk_kmq_downstream_cbs {
    void (*on_response)(void *user, Kubemq__QueuesDownstreamResponse *resp);
    void (*on_state)(void *user, bool open, int err);
};
int kk_kmq_downstream_open(struct kk_kmq_client *c, const struct kk_kmq_downstream_cbs *cbs, void *user,
                           struct kk_kmq_downstream **out);
/* on_state(open) runs once the stream's HEADERS are sent (a poll stream gets
 * no response HEADERS before its first request).  send: KK_ECLOSED while
 * no stream is open (after a loss, until it is re-opened). */
int kk_kmq_downstream_send(struct kk_kmq_downstream *d, const Kubemq__QueuesDownstreamRequest *req);
/* Half-closes the stream after the requests already queued (so a last
 * settle still reaches the broker); no callback runs afterwards. */
void kk_kmq_downstream_close(struct kk_kmq_downstream *d);

#endif

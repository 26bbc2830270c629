/* Private to src/sources: the state every source kind shares.
 *
 * One kk_src per binding.  `sources: N` gives N connections (src_conn), each
 * its own KubeMQ client with one subscription (query, command, events,
 * events-store) or one QueuesDownstream stream (queue).  All of them feed
 * the same binding, so the binding's free slots are shared: intake pauses on
 * every connection when they run out and resumes when they come back.
 *
 * flow_control (subscriptions; the queue kind always polls only as many
 * messages as there are free slots):
 *   exact  - message credit (kk_kmq_sub_add_credit): the free slots are
 *            handed out as credit, so credit + announced messages + requests
 *            in flight never exceed `concurrency` and the broker can never
 *            have written more than that many unanswered messages here.
 *   window - a 1 MiB HTTP/2 stream window and pause at the cap: fewer round
 *            trips, but the broker may have written up to one window of
 *            messages past the cap (they wait here, undelivered).
 */
#ifndef KK_SOURCES_PRIV_H
#define KK_SOURCES_PRIV_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "kk/binding.h"
#include "kk/config.h"
#include "kk/kubemq.h"

struct kk_src;
struct q_txn;
struct rpc_ctx;

struct src_conn {
    struct kk_src *src;
    unsigned index;
    char client_id[192];
    struct kk_kmq_client *client;
    struct kk_kmq_sub *sub;         /* query, command, events, events-store */
    struct kk_kmq_downstream *ds;   /* queue */
    bool live;                      /* subscribed / downstream open */
    int failed_err;                 /* client gave up (FAILED): its error, else 0 */
    bool closed;                    /* client close finished */
    uint32_t held, grant;           /* grant_credit's scratch: outstanding, to add */
    /* queue */
    bool poll_outstanding;
    int32_t poll_items;             /* MaxItems of the outstanding Get */
    char poll_id[40];
};

struct src_opts {
    char host[256];
    uint16_t port;
    const char *client_id;
    const char *auth_token;
    const char *channel;
    const char *group;
    const char *response_channel;
    unsigned n_sources;
    bool exact_flow;                /* flow_control: exact (message credit) */
    bool auto_reconnect;
    uint32_t reconnect_interval_ms;
    uint32_t max_reconnects;
    uint32_t connect_timeout_ms;
    bool tls;
    struct kk_tls_opts tls_opts;
    /* events-store */
    int store_type;                 /* Kubemq__Subscribe__EventsStoreType */
    int64_t store_value;
    /* queue */
    int32_t batch_size;
    int32_t wait_timeout_ms;
};

struct kk_src {
    struct kk_source base;
    uv_loop_t *loop;
    struct kk_binding *b;
    const char *bname;
    enum kk_source_kind kind;
    struct src_opts o;
    struct kk_tls_ctx *tls_ctx;     /* shared by the N clients when tls */
    char group_buf[40];
    struct src_conn *conns;
    unsigned n_conns;
    bool started, paused, stopped, closing;
    bool starting;                  /* src_start is creating the connections */
    unsigned grant_next;            /* grant_credit: where the remainder starts */
    unsigned open_clients;          /* clients not yet closed */
    void (*close_done)(void *arg);
    void *close_arg;
    /* queue: one timer for two things.  Nacks are held for a second before
     * they are sent (as kubemq-targets' pause after a NAck), so a message a
     * target keeps failing comes back at most once a second; and polls
     * pause for a second after a failed poll. */
    uv_timer_t nack_timer;
    bool nack_timer_open;
    bool poll_paused;
    uint64_t poll_resume_ms;
    struct q_txn *nack_head, *nack_tail; /* FIFO, due times ascending */
    int32_t reserved;               /* MaxItems of outstanding Gets */
    /* query/command reply contexts kept for reuse (rpc.c) */
    struct rpc_ctx *rpc_free;
    unsigned n_rpc_free;
    /* metrics */
    uint64_t received, dropped, replies_failed, replies_canceled, published, publish_failed;
    uint64_t acked, nacked, reconnects;
};

/* Kind-specific handlers, in rpc.c, events.c and queue.c. */
void kk__src_rpc_on_message(void *user, void *msg);
void kk__src_rpc_free_pool(struct kk_src *s);
void kk__src_events_on_message(void *user, void *msg);
int kk__src_queue_open(struct src_conn *c);
void kk__src_queue_poll_all(struct kk_src *s);
void kk__src_queue_stop(struct kk_src *s);

/* Shared helpers, in source.c. */
void kk__src_publish(struct src_conn *c, const char *body, size_t len);
void kk__src_unary_done(void *arg, int status, int grpc_status, const char *grpc_message, void *reply);

#endif

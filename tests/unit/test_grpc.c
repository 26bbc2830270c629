/* gRPC framing, trailers and status mapping (src/kubemq/grpc_frame.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "grpc_frame.h"
#include "kk/err.h"
#include "kk/kubemq.h"
#include "kubemq.pb-c.h"
#include "h2mem.h"
#include "pbarena.h"

struct got {
    int n;
    size_t lens[16];
    char data[16][64];
    int stop_after; /* return 1 after this many messages (0: never) */
};

static int on_msg(void *arg, const uint8_t *msg, size_t len)
{
    struct got *g = arg;

    assert_true(g->n < 16);
    g->lens[g->n] = len;
    memcpy(g->data[g->n], msg, len < 64 ? len : 64);
    g->n++;
    return (g->stop_after && g->n % g->stop_after == 0) ? 1 : 0;
}

/* Frames the messages into out; returns the total length. */
static size_t frame(uint8_t *out, const char *const *msgs, int n)
{
    size_t off = 0;

    for (int i = 0; i < n; i++) {
        size_t l = strlen(msgs[i]);

        kk_grpc_frame_hdr(out + off, (uint32_t)l);
        memcpy(out + off + KK_GRPC_HDR_LEN, msgs[i], l);
        off += KK_GRPC_HDR_LEN + l;
    }
    return off;
}

static void test_hdr(void **state)
{
    uint8_t h[5];

    kk_grpc_frame_hdr(h, 0x01020304);
    assert_memory_equal(h, "\x00\x01\x02\x03\x04", 5);
    kk_grpc_frame_hdr(h, 0);
    assert_memory_equal(h, "\x00\x00\x00\x00\x00", 5);
}

static void test_split_one_byte(void **state)
{
    const char *msgs[] = {"hello", "", "world!"};
    uint8_t wire[64];
    size_t n = frame(wire, msgs, 3);
    struct kk_grpc_dec d;
    struct got g = {0};

    kk_grpc_dec_init(&d, 1024, 4096);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(kk_grpc_dec_feed(&d, wire + i, 1, false, on_msg, &g), 0);
    assert_int_equal(g.n, 3);
    assert_int_equal(g.lens[0], 5);
    assert_memory_equal(g.data[0], "hello", 5);
    assert_int_equal(g.lens[1], 0); /* zero-length message (Empty) */
    assert_int_equal(g.lens[2], 6);
    assert_memory_equal(g.data[2], "world!", 6);
    assert_int_equal(kk_grpc_dec_pending(&d), 0);
    kk_grpc_dec_free(&d);
}

static void test_coalesced_and_partial(void **state)
{
    const char *msgs[] = {"a", "bb", "ccc", "dddd"};
    uint8_t wire[64];
    size_t n = frame(wire, msgs, 4);
    struct kk_grpc_dec d;
    struct got g = {0};

    kk_grpc_dec_init(&d, 1024, 4096);
    /* Three whole messages and part of the fourth in one DATA payload. */
    assert_int_equal(kk_grpc_dec_feed(&d, wire, n - 2, false, on_msg, &g), 0);
    assert_int_equal(g.n, 3);
    assert_int_equal(kk_grpc_dec_pending(&d), 5 + 2);
    assert_int_equal(kk_grpc_dec_feed(&d, wire + n - 2, 2, false, on_msg, &g), 0);
    assert_int_equal(g.n, 4);
    assert_memory_equal(g.data[3], "dddd", 4);
    assert_int_equal(kk_grpc_dec_pending(&d), 0);
    kk_grpc_dec_free(&d);
}

static void test_hold_and_stop(void **state)
{
    const char *msgs[] = {"m1", "m2", "m3", "m4"};
    uint8_t wire[64];
    size_t n = frame(wire, msgs, 4);
    struct kk_grpc_dec d;
    struct got g = {.stop_after = 2};

    kk_grpc_dec_init(&d, 1024, 4096);
    /* Held (paused): nothing delivered, all kept. */
    assert_int_equal(kk_grpc_dec_feed(&d, wire, n, true, on_msg, &g), 0);
    assert_int_equal(g.n, 0);
    assert_int_equal(kk_grpc_dec_pending(&d), n);
    /* Drain stops when the callback asks to. */
    assert_int_equal(kk_grpc_dec_drain(&d, on_msg, &g), 0);
    assert_int_equal(g.n, 2);
    assert_int_equal(kk_grpc_dec_pending(&d), n / 2);
    assert_int_equal(kk_grpc_dec_drain(&d, on_msg, &g), 0);
    assert_int_equal(g.n, 4);
    assert_memory_equal(g.data[3], "m4", 2);
    assert_int_equal(kk_grpc_dec_pending(&d), 0);

    /* Stop in the zero-copy path keeps the rest for later. */
    g.n = 0;
    assert_int_equal(kk_grpc_dec_feed(&d, wire, n, false, on_msg, &g), 0);
    assert_int_equal(g.n, 2);
    assert_int_equal(kk_grpc_dec_pending(&d), n / 2);
    kk_grpc_dec_free(&d);
}

/* A paused subscription resumed one slot at a time: many held messages are
 * delivered one per drain, with more arriving (held) in between; every one
 * arrives once, in order, and the buffer never exceeds its bound. */
static int seq_next;
static int on_seq_msg(void *arg, const uint8_t *p, size_t n)
{
    (void)arg;
    char want[16];
    int l = snprintf(want, sizeof(want), "msg-%06d", seq_next);
    assert_int_equal(n, (size_t)l);
    assert_memory_equal(p, want, n);
    seq_next++;
    return 1; /* at the cap again: stop after each message */
}

static void test_drain_one_at_a_time(void **state)
{
    (void)state;
    struct kk_grpc_dec d;
    enum { N = 20000 };
    kk_grpc_dec_init(&d, 1024, 1u << 20);
    seq_next = 0;
    int fed = 0;
    uint8_t wire[32];
    /* Fill well past one compaction threshold while held. */
    for (; fed < N / 2; fed++) {
        int l = snprintf((char *)wire + 5, sizeof(wire) - 5, "msg-%06d", fed);
        kk_grpc_frame_hdr(wire, (uint32_t)l);
        assert_int_equal(kk_grpc_dec_feed(&d, wire, 5 + (size_t)l, true, on_seq_msg, NULL), 0);
    }
    /* Resume slot by slot, new messages still held as they arrive. */
    while (seq_next < N) {
        assert_int_equal(kk_grpc_dec_drain(&d, on_seq_msg, NULL), 0);
        if (fed < N) {
            int l = snprintf((char *)wire + 5, sizeof(wire) - 5, "msg-%06d", fed++);
            kk_grpc_frame_hdr(wire, (uint32_t)l);
            assert_int_equal(kk_grpc_dec_feed(&d, wire, 5 + (size_t)l, true, on_seq_msg, NULL), 0);
        }
        assert_true(d.buf.len <= d.buf.max);
    }
    assert_int_equal(seq_next, N);
    assert_int_equal(kk_grpc_dec_pending(&d), 0);
    kk_grpc_dec_free(&d);
}

static void test_oversized(void **state)
{
    uint8_t h[5];
    struct kk_grpc_dec d;
    struct got g = {0};

    kk_grpc_dec_init(&d, 100, 4096);
    kk_grpc_frame_hdr(h, 101);
    /* Refused from the prefix alone, before any body is buffered. */
    assert_int_equal(kk_grpc_dec_feed(&d, h, 5, false, on_msg, &g), KK_ETOOBIG);
    kk_grpc_dec_free(&d);

    kk_grpc_dec_init(&d, 100, 4096);
    assert_int_equal(kk_grpc_dec_feed(&d, h, 2, false, on_msg, &g), 0);
    assert_int_equal(kk_grpc_dec_feed(&d, h + 2, 3, false, on_msg, &g), KK_ETOOBIG);
    kk_grpc_dec_free(&d);

    /* Exactly max is fine. */
    {
        uint8_t wire[5 + 100];
        kk_grpc_dec_init(&d, 100, 4096);
        kk_grpc_frame_hdr(wire, 100);
        memset(wire + 5, 'x', 100);
        assert_int_equal(kk_grpc_dec_feed(&d, wire, sizeof(wire), false, on_msg, &g), 0);
        assert_int_equal(g.n, 1);
        assert_int_equal(g.lens[0], 100);
        kk_grpc_dec_free(&d);
    }

    /* The held buffer is bounded too. */
    {
        uint8_t wire[64];
        const char *msgs[] = {"0123456789"};
        size_t n = frame(wire, msgs, 1);

        kk_grpc_dec_init(&d, 100, 20);
        assert_int_equal(kk_grpc_dec_feed(&d, wire, n, true, on_msg, &g), 0);
        assert_int_equal(kk_grpc_dec_feed(&d, wire, n, true, on_msg, &g), KK_ETOOBIG);
        kk_grpc_dec_free(&d);
    }
}

static void test_compressed_flag(void **state)
{
    uint8_t wire[6] = {1, 0, 0, 0, 1, 'x'};
    struct kk_grpc_dec d;
    struct got g = {0};

    kk_grpc_dec_init(&d, 100, 4096);
    assert_int_equal(kk_grpc_dec_feed(&d, wire, 6, false, on_msg, &g), KK_EPARSE);
    assert_int_equal(g.n, 0);
    kk_grpc_dec_free(&d);
}

#define HDR(r, n, v) kk_grpc_resp_header(r, n, strlen(n), v, strlen(v))

static void test_trailers(void **state)
{
    struct kk_grpc_resp r;
    const char *m;
    int gs;

    kk_grpc_resp_init(&r);
    HDR(&r, ":status", "200");
    HDR(&r, "content-type", "application/grpc+proto");
    HDR(&r, "grpc-status", "0");
    HDR(&r, "grpc-message", "OK");
    assert_int_equal(kk_grpc_resp_result(&r, &gs, &m), 0);
    assert_int_equal(gs, 0);

    /* Trailers-Only error with a percent-encoded message. */
    kk_grpc_resp_init(&r);
    HDR(&r, ":status", "200");
    HDR(&r, "grpc-status", "13");
    HDR(&r, "grpc-message", "Error%20301%3A%20timeout for request message%");
    assert_int_equal(kk_grpc_resp_result(&r, &gs, &m), KK_EGRPC);
    assert_int_equal(gs, 13);
    assert_string_equal(m, "Error 301: timeout for request message%");
    assert_string_equal(kk_grpc_status_name(gs), "INTERNAL");

    /* Missing grpc-status is an error. */
    kk_grpc_resp_init(&r);
    HDR(&r, ":status", "200");
    assert_int_equal(kk_grpc_resp_result(&r, &gs, &m), KK_EGRPC);
    assert_int_equal(gs, 13);
    assert_string_equal(m, "missing grpc-status");

    /* Malformed grpc-status. */
    kk_grpc_resp_init(&r);
    HDR(&r, ":status", "200");
    HDR(&r, "grpc-status", "1x");
    assert_int_equal(kk_grpc_resp_result(&r, &gs, &m), KK_EGRPC);
    assert_string_equal(m, "malformed grpc-status");

    /* HTTP status other than 200 maps as gRPC does. */
    kk_grpc_resp_init(&r);
    HDR(&r, ":status", "503");
    assert_int_equal(kk_grpc_resp_result(&r, &gs, &m), KK_EGRPC);
    assert_int_equal(gs, 14);
    kk_grpc_resp_init(&r);
    HDR(&r, ":status", "401");
    HDR(&r, "grpc-status", "0"); /* ignored: the HTTP status wins */
    assert_int_equal(kk_grpc_resp_result(&r, &gs, &m), KK_EGRPC);
    assert_int_equal(gs, 16);
    assert_string_equal(kk_grpc_status_name(gs), "UNAUTHENTICATED");
    kk_grpc_resp_init(&r);
    HDR(&r, ":status", "404");
    assert_int_equal(kk_grpc_resp_result(&r, &gs, &m), KK_EGRPC);
    assert_int_equal(gs, 12);

    /* Unauthenticated from the broker. */
    kk_grpc_resp_init(&r);
    HDR(&r, ":status", "200");
    HDR(&r, "grpc-status", "16");
    HDR(&r, "grpc-message", "bad%20token");
    assert_int_equal(kk_grpc_resp_result(&r, &gs, &m), KK_EGRPC);
    assert_int_equal(gs, 16);
    assert_string_equal(m, "bad token");
    assert_string_equal(kk_grpc_status_name(99), "UNKNOWN_STATUS");
}

static void test_percent_decode(void **state)
{
    char out[16];

    assert_int_equal(kk_grpc_percent_decode("a%41%6a", 7, out, sizeof(out)), 3);
    assert_string_equal(out, "aAj");
    /* Malformed escapes stay literal. */
    kk_grpc_percent_decode("%zz%4", 5, out, sizeof(out));
    assert_string_equal(out, "%zz%4");
    /* UTF-8 bytes. */
    kk_grpc_percent_decode("%C3%A9", 6, out, sizeof(out));
    assert_string_equal(out, "\xc3\xa9");
    /* Truncation keeps a NUL. */
    assert_int_equal(kk_grpc_percent_decode("abcdefghij", 10, out, 4), 3);
    assert_string_equal(out, "abc");
}

static void test_timeout_format(void **state)
{
    char out[16];

    kk_grpc_timeout_format(30000, out);
    assert_string_equal(out, "30000m");
    kk_grpc_timeout_format(100000000u, out);
    assert_string_equal(out, "100000S");
}

/* Packs r into a fresh buffer (*len set); the caller frees it. */
static uint8_t *pack_request(const Kubemq__Request *r, size_t *len)
{
    uint8_t *buf;

    *len = kubemq__request__get_packed_size(r);
    buf = malloc(*len ? *len : 1);
    assert_non_null(buf);
    kubemq__request__pack(r, buf);
    return buf;
}

static void test_pbarena_request(void **state)
{
    Kubemq__Request r = KUBEMQ__REQUEST__INIT;
    Kubemq__Request__TagsEntry t1 = KUBEMQ__REQUEST__TAGS_ENTRY__INIT, t2 = KUBEMQ__REQUEST__TAGS_ENTRY__INIT;
    Kubemq__Request__TagsEntry *tags[] = {&t1, &t2};
    uint8_t body[3000];
    Kubemq__Request *got;
    uint8_t *wire;
    size_t len;

    memset(body, 0xab, sizeof(body));
    r.requestid = "req-1";
    r.clientid = "client";
    r.channel = "q.channel";
    r.metadata = "meta";
    r.replychannel = "_INBOX.reply";
    r.body.data = body;
    r.body.len = sizeof(body);
    r.timeout = 5000;
    t1.key = "k1";
    t1.value = "v1";
    t2.key = "k2";
    t2.value = "";
    r.n_tags = 2;
    r.tags = tags;
    wire = pack_request(&r, &len);
    got = (Kubemq__Request *)kk_pb_unpack(&kubemq__request__descriptor, wire, len);
    free(wire); /* nothing may point into the input */
    assert_non_null(got);
    assert_int_equal(kk_pb_blocks(&got->base), 1); /* the usual message: one malloc */
    assert_string_equal(got->requestid, "req-1");
    assert_string_equal(got->clientid, "client");
    assert_string_equal(got->channel, "q.channel");
    assert_string_equal(got->metadata, "meta");
    assert_string_equal(got->replychannel, "_INBOX.reply");
    assert_int_equal(got->timeout, 5000);
    assert_int_equal(got->body.len, sizeof(body));
    assert_memory_equal(got->body.data, body, sizeof(body));
    assert_int_equal(got->n_tags, 2);
    assert_string_equal(got->tags[0]->key, "k1");
    assert_string_equal(got->tags[0]->value, "v1");
    assert_string_equal(got->tags[1]->key, "k2");
    assert_string_equal(got->tags[1]->value, "");
    kk_pb_free(&got->base);
    kk_pb_free(NULL);
}

/* 300 tiny map entries: each 6-byte entry unpacks to a struct plus two
 * strings, far past the first block, which must spill and stay correct. */
static void test_pbarena_spill(void **state)
{
    enum { N = 300 };
    Kubemq__Request r = KUBEMQ__REQUEST__INIT;
    static Kubemq__Request__TagsEntry ent[N];
    static Kubemq__Request__TagsEntry *tags[N];
    static char keys[N][8];
    Kubemq__Request *got;
    uint8_t *wire;
    size_t len;

    for (int i = 0; i < N; i++) {
        kubemq__request__tags_entry__init(&ent[i]);
        snprintf(keys[i], sizeof(keys[i]), "%d", i);
        ent[i].key = keys[i];
        ent[i].value = "";
        tags[i] = &ent[i];
    }
    r.channel = "c";
    r.n_tags = N;
    r.tags = tags;
    wire = pack_request(&r, &len);
    got = (Kubemq__Request *)kk_pb_unpack(&kubemq__request__descriptor, wire, len);
    free(wire);
    assert_non_null(got);
    assert_true(kk_pb_blocks(&got->base) > 1);
    assert_true(kk_pb_blocks(&got->base) < 8); /* blocks double */
    assert_int_equal(got->n_tags, N);
    for (int i = 0; i < N; i++)
        assert_string_equal(got->tags[i]->key, keys[i]);
    kk_pb_free(&got->base);
}

static void test_pbarena_malformed(void **state)
{
    static const uint8_t bad[] = {0xff, 0xff, 0xff, 0xff};
    static const uint8_t truncated[] = {0x0a, 0x10, 'a', 'b'}; /* RequestID announces 16 bytes */

    assert_null(kk_pb_unpack(&kubemq__request__descriptor, bad, sizeof(bad)));
    assert_null(kk_pb_unpack(&kubemq__request__descriptor, truncated, sizeof(truncated)));
    /* Empty input is a valid all-defaults message. */
    ProtobufCMessage *m = kk_pb_unpack(&kubemq__event_receive__descriptor, truncated, 0);
    assert_non_null(m);
    assert_int_equal(((Kubemq__EventReceive *)m)->sequence, 0);
    kk_pb_free(m);
}

/* Freed blocks come back for the next request of their class; calloc zeroes
 * recycled memory; realloc keeps the bytes; big blocks are not kept. */
static void test_h2mem_recycles(void **state)
{
    static struct kk_h2mem m;
    nghttp2_mem *a = &m.mem;
    void *p, *q, *big;
    unsigned char *z;

    kk_h2mem_init(&m);
    p = a->malloc(100, a->mem_user_data);
    assert_non_null(p);
    memset(p, 0x5a, 100);
    a->free(p, a->mem_user_data);
    q = a->malloc(120, a->mem_user_data); /* same 128-byte class */
    assert_ptr_equal(p, q);
    a->free(q, a->mem_user_data);
    z = a->calloc(4, 30, a->mem_user_data);
    assert_ptr_equal(z, p);
    for (int i = 0; i < 120; i++)
        assert_int_equal(z[i], 0);
    memcpy(z, "keep", 4);
    z = a->realloc(z, 128, a->mem_user_data); /* fits: same block */
    assert_ptr_equal(z, p);
    z = a->realloc(z, 3000, a->mem_user_data);
    assert_ptr_not_equal(z, p);
    assert_memory_equal(z, "keep", 4);
    big = a->malloc(100000, a->mem_user_data);
    assert_non_null(big);
    a->free(big, a->mem_user_data);
    assert_int_equal(m.mallocs, 3); /* 128 B, 4 KiB, the big one: nothing else reached malloc */
    for (int i = 0; i < 1000; i++) {
        void *x = a->malloc(200, a->mem_user_data);
        a->free(x, a->mem_user_data);
    }
    assert_int_equal(m.mallocs, 4);
    a->free(z, a->mem_user_data);
    a->free(NULL, a->mem_user_data);
    kk_h2mem_free(&m); /* valgrind: nothing leaks */
}

/* ---- client: parked calls and a shared TLS context, against a port that
 * refuses every connection (the client stays CONNECTING/RECONNECTING). */

struct park_ctx {
    int done, canceled, other;
};

static void on_parked_done(void *arg, int status, int gs, const char *gm, void *reply)
{
    struct park_ctx *pc = arg;
    (void)gs;
    (void)gm;
    kk_kmq_free(reply);
    pc->done++;
    if (status == KK_ECANCELED)
        pc->canceled++;
    else
        pc->other++;
}

static void on_client_done(void *arg)
{
    (*(int *)arg)++;
}

static void on_stop_timer(uv_timer_t *t)
{
    uv_stop(t->loop);
}

/* A bound, not listening, socket: connects to its port are refused. */
static uint16_t refused_port(uv_loop_t *loop, uv_tcp_t *t)
{
    struct sockaddr_in sa;
    struct sockaddr_storage ss;
    int len = sizeof(ss);

    uv_tcp_init(loop, t);
    uv_ip4_addr("127.0.0.1", 0, &sa);
    assert_int_equal(uv_tcp_bind(t, (const struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_tcp_getsockname(t, (struct sockaddr *)&ss, &len), 0);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* While no connection is READY unary calls are parked, not refused; past
 * the caps (4096 calls, 4 MiB of requests) they fail at once with KK_EBUSY;
 * the close ends every parked call exactly once with KK_ECANCELED. */
static void test_client_park_caps(void **state)
{
    uv_loop_t loop;
    uv_tcp_t hole;
    struct kk_kmq_client *c;
    struct park_ctx pc = {0};
    int closed = 0, rc, parked = 0;
    static uint8_t body[100000];
    Kubemq__Event e = KUBEMQ__EVENT__INIT;
    (void)state;

    uv_loop_init(&loop);
    struct kk_kmq_opts o = {.host = "127.0.0.1",
                            .port = refused_port(&loop, &hole),
                            .auto_reconnect = true,
                            .reconnect_interval_ms = 50,
                            .log_scope = "test"};
    assert_int_equal(kk_kmq_client_new(&loop, &o, NULL, NULL, &c), 0);
    e.clientid = "t";
    e.channel = "ch";
    for (int i = 0; i < 5000; i++) {
        rc = kk_kmq_send_event(c, &e, on_parked_done, &pc);
        if (rc == KK_EBUSY)
            break;
        assert_int_equal(rc, 0);
        parked++;
    }
    assert_int_equal(parked, 4096);
    /* bytes: a fresh client, 100 kB events, 4 MiB / ~100 kB of them fit */
    kk_kmq_client_close(c, on_client_done, &closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 1);
    assert_int_equal(pc.done, 4096);
    assert_int_equal(pc.canceled, 4096);

    memset(&pc, 0, sizeof(pc));
    parked = 0;
    assert_int_equal(kk_kmq_client_new(&loop, &o, NULL, NULL, &c), 0);
    e.body.data = body;
    e.body.len = sizeof(body);
    for (int i = 0; i < 100; i++) {
        rc = kk_kmq_send_event(c, &e, on_parked_done, &pc);
        if (rc == KK_EBUSY)
            break;
        assert_int_equal(rc, 0);
        parked++;
    }
    assert_int_equal(parked, (4 << 20) / (sizeof(body) + 20));
    kk_kmq_client_close(c, on_client_done, &closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 2);
    assert_int_equal(pc.canceled, parked);
    assert_int_equal(pc.other, 0);
    uv_close((uv_handle_t *)&hole, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* A parked call still has its deadline (call_timeout_ms): KK_ETIMEOUT. */
static void test_client_park_deadline(void **state)
{
    uv_loop_t loop;
    uv_tcp_t hole;
    struct kk_kmq_client *c;
    struct park_ctx pc = {0};
    int closed = 0;
    (void)state;

    uv_loop_init(&loop);
    struct kk_kmq_opts o = {.host = "127.0.0.1",
                            .port = refused_port(&loop, &hole),
                            .auto_reconnect = true,
                            .reconnect_interval_ms = 50,
                            .call_timeout_ms = 150,
                            .log_scope = "test"};
    assert_int_equal(kk_kmq_client_new(&loop, &o, NULL, NULL, &c), 0);
    assert_int_equal(kk_kmq_ping(c, on_parked_done, &pc), 0);
    uint64_t t0 = uv_now(&loop);
    while (pc.done == 0 && uv_now(&loop) - t0 < 3000)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(pc.done, 1);
    assert_int_equal(pc.other, 1); /* KK_ETIMEOUT, not a cancel */
    assert_true(uv_now(&loop) - t0 >= 140);
    kk_kmq_client_close(c, on_client_done, &closed);
    uv_close((uv_handle_t *)&hole, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 1);
    assert_int_equal(pc.done, 1); /* exactly once */
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* opts.tls_ctx is used as given: the client does not build its own context
 * from tls_opts (here a CA file that does not exist, which would fail), and
 * it does not free the borrowed one (valgrind: no double free, no leak). */
static void test_client_shared_tls_ctx(void **state)
{
    uv_loop_t loop;
    uv_tcp_t hole;
    struct kk_kmq_client *c[3];
    struct kk_tls_ctx *ctx;
    struct kk_tls_opts topts = {.insecure_skip_verify = true, .alpn = "h2", .server_name = "localhost"};
    int closed = 0;
    (void)state;

    uv_loop_init(&loop);
    assert_int_equal(kk_tls_ctx_new(&topts, &ctx, NULL, 0), 0);
    struct kk_kmq_opts o = {.host = "127.0.0.1",
                            .port = refused_port(&loop, &hole),
                            .tls = true,
                            .auto_reconnect = true,
                            .reconnect_interval_ms = 50,
                            .log_scope = "test"};
    o.tls_opts.ca_file = "/nonexistent/ca.pem";
    assert_true(kk_kmq_client_new(&loop, &o, NULL, NULL, &c[0]) < 0); /* own context: the CA is missing */
    o.tls_ctx = ctx;
    for (int i = 0; i < 3; i++)
        assert_int_equal(kk_kmq_client_new(&loop, &o, NULL, NULL, &c[i]), 0);
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, on_stop_timer, 200, 0); /* a few refused connects */
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < 3; i++)
        kk_kmq_client_close(c[i], on_client_done, &closed);
    uv_close((uv_handle_t *)&t, NULL);
    uv_close((uv_handle_t *)&hole, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 3);
    kk_tls_ctx_free(ctx); /* after the last client closed */
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hdr),
        cmocka_unit_test(test_split_one_byte),
        cmocka_unit_test(test_coalesced_and_partial),
        cmocka_unit_test(test_hold_and_stop),
        cmocka_unit_test(test_drain_one_at_a_time),
        cmocka_unit_test(test_oversized),
        cmocka_unit_test(test_compressed_flag),
        cmocka_unit_test(test_trailers),
        cmocka_unit_test(test_percent_decode),
        cmocka_unit_test(test_timeout_format),
        cmocka_unit_test(test_pbarena_request),
        cmocka_unit_test(test_pbarena_spill),
        cmocka_unit_test(test_pbarena_malformed),
        cmocka_unit_test(test_h2mem_recycles),
        cmocka_unit_test(test_client_park_caps),
        cmocka_unit_test(test_client_park_deadline),
        cmocka_unit_test(test_client_shared_tls_ctx),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

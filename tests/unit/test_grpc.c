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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hdr),
        cmocka_unit_test(test_split_one_byte),
        cmocka_unit_test(test_coalesced_and_partial),
        cmocka_unit_test(test_hold_and_stop),
        cmocka_unit_test(test_oversized),
        cmocka_unit_test(test_compressed_flag),
        cmocka_unit_test(test_trailers),
        cmocka_unit_test(test_percent_decode),
        cmocka_unit_test(test_timeout_format),
        cmocka_unit_test(test_pbarena_request),
        cmocka_unit_test(test_pbarena_spill),
        cmocka_unit_test(test_pbarena_malformed),
        cmocka_unit_test(test_h2mem_recycles),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Fuzz target: gRPC message framing (kk_grpc_dec_* in src/kubemq/grpc_frame.h).
 *
 * Input: bytes 0-1 max_msg (little-endian, below 4096), byte 2 stop_after
 * (the callback returns 1 after every that many messages; 0 never), then the
 * DATA stream.  A plain reference parser over the whole stream gives the
 * expected messages and outcome (complete, or KK_EPARSE/KK_ETOOBIG at a
 * header).  The decoder must deliver exactly those messages, then that
 * outcome, however the stream is cut: one feed, split at every byte
 * boundary (two feeds), one byte at a time, and held (hold=true) then
 * drained; and it never holds more than max_buffered bytes. */
#include <string.h>

#include "fuzz.h"
#include "grpc_frame.h"
#include "kk/err.h"

#define MAX_MSGS 4096

struct msgs {
    size_t n;
    size_t off[MAX_MSGS]; /* offset of the message body within the stream */
    size_t len[MAX_MSGS];
};

struct sink {
    const uint8_t *stream;
    const struct msgs *want;
    size_t got;
    unsigned stop_after;
    bool stopped;
};

static struct msgs ref;

/* Returns 0 (stream ends cleanly, maybe mid-message) or the error. */
static int ref_parse(const uint8_t *p, size_t n, size_t max_msg, struct msgs *m)
{
    size_t off = 0;

    m->n = 0;
    while (n - off >= KK_GRPC_HDR_LEN) {
        const uint8_t *h = p + off;
        size_t len = (size_t)h[1] << 24 | (size_t)h[2] << 16 | (size_t)h[3] << 8 | h[4];
        if (h[0] != 0)
            return KK_EPARSE;
        if (len > max_msg)
            return KK_ETOOBIG;
        if (n - off - KK_GRPC_HDR_LEN < len)
            return 0;
        FZ_CHECK(m->n < MAX_MSGS);
        m->off[m->n] = off + KK_GRPC_HDR_LEN;
        m->len[m->n] = len;
        m->n++;
        off += KK_GRPC_HDR_LEN + len;
    }
    return 0;
}

static int on_msg(void *arg, const uint8_t *msg, size_t len)
{
    struct sink *s = arg;

    FZ_CHECK(s->got < s->want->n);
    FZ_CHECK(len == s->want->len[s->got]);
    FZ_CHECK(len == 0 || memcmp(msg, s->stream + s->want->off[s->got], len) == 0);
    s->got++;
    if (s->stop_after && s->got % s->stop_after == 0) {
        s->stopped = true;
        return 1;
    }
    return 0;
}

/* The receiver resumes after a stop: drain until no progress. */
static int resume(struct kk_grpc_dec *d, struct sink *s)
{
    int rc = 0;

    while (s->stopped && rc == 0) {
        size_t before = s->got;
        s->stopped = false;
        rc = kk_grpc_dec_drain(d, on_msg, s);
        if (s->got == before)
            break;
    }
    return rc;
}

/* Feeds the stream cut at the given points; returns the first error. */
static void run(const uint8_t *p, size_t n, size_t max_msg, unsigned stop_after, const size_t *cuts,
                size_t n_cuts, bool hold, int want_rc)
{
    struct kk_grpc_dec d;
    struct sink s = {.stream = p, .want = &ref, .stop_after = stop_after};
    size_t max_buffered = max_msg + KK_GRPC_HDR_LEN + n; /* as client.c: message + window */
    size_t prev = 0;
    int rc = 0;

    kk_grpc_dec_init(&d, max_msg, max_buffered);
    for (size_t i = 0; i <= n_cuts && rc == 0; i++) {
        size_t end = i < n_cuts ? cuts[i] : n;
        rc = kk_grpc_dec_feed(&d, p + prev, end - prev, hold, on_msg, &s);
        FZ_CHECK(kk_grpc_dec_pending(&d) <= max_buffered);
        if (rc == 0)
            rc = resume(&d, &s);
        prev = end;
    }
    if (hold && rc == 0) {
        s.stopped = true; /* the receiver resumes */
        while (rc == 0 && s.stopped) {
            size_t before = s.got;
            s.stopped = false;
            rc = kk_grpc_dec_drain(&d, on_msg, &s);
            if (s.got == before)
                break;
        }
    }
    FZ_CHECK(rc == want_rc);
    FZ_CHECK(s.got == ref.n);
    if (rc == 0) {
        /* what is left is exactly the unfinished tail */
        size_t used = ref.n ? ref.off[ref.n - 1] + ref.len[ref.n - 1] : 0;
        FZ_CHECK(kk_grpc_dec_pending(&d) == n - used);
    }
    kk_grpc_dec_free(&d);
}

int kk_fuzz_grpc_frame(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    size_t max_msg = ((size_t)data[0] | (size_t)data[1] << 8) % 4096;
    unsigned stop_after = data[2] % 8;
    const uint8_t *p = data + 3;
    size_t n = size - 3, cut;
    int want = ref_parse(p, n, max_msg, &ref);

    run(p, n, max_msg, stop_after, NULL, 0, false, want);
    run(p, n, max_msg, stop_after, NULL, 0, true, want);
    /* Two feeds, cut at every boundary (sampled on long inputs). */
    size_t step = n > 512 ? n / 256 : 1;
    for (cut = 1; cut < n; cut += step) {
        run(p, n, max_msg, stop_after, &cut, 1, false, want);
        run(p, n, max_msg, stop_after, &cut, 1, true, want);
    }
    /* One byte at a time. */
    if (n <= 2048) {
        size_t *cuts = malloc((n ? n : 1) * sizeof(*cuts));
        FZ_CHECK(cuts);
        for (size_t i = 0; i + 1 < n; i++)
            cuts[i] = i + 1;
        run(p, n, max_msg, stop_after, cuts, n ? n - 1 : 0, false, want);
        free(cuts);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return kk_fuzz_grpc_frame(data, size);
}

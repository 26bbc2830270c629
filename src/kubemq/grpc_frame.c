/* gRPC framing and trailer handling (kubemq-protocol.md §1). */
#include "grpc_frame.h"

#include <stdio.h>
#include <string.h>

#include "kk/err.h"

void kk_grpc_frame_hdr(uint8_t out[KK_GRPC_HDR_LEN], uint32_t len)
{
    out[0] = 0;
    out[1] = (uint8_t)(len >> 24);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
}

void kk_grpc_dec_init(struct kk_grpc_dec *d, size_t max_msg, size_t max_buffered)
{
    kk_buf_init(&d->buf, max_buffered);
    d->start = 0;
    d->max_msg = max_msg;
}

void kk_grpc_dec_free(struct kk_grpc_dec *d)
{
    kk_buf_free(&d->buf);
    d->start = 0;
}

/* Moves the held bytes to the front.  Done only when the dead prefix is
 * large or space is needed, so delivering n held messages one at a time
 * (a paused subscription resumed slot by slot) costs O(n), not O(n^2). */
static void compact(struct kk_grpc_dec *d)
{
    if (d->start == 0)
        return;
    kk_buf_consume(&d->buf, d->start);
    d->start = 0;
}

/* Checks the prefix at p (5 bytes available) and returns the body length. */
static int check_hdr(const struct kk_grpc_dec *d, const uint8_t *p, size_t *len)
{
    uint32_t l = ((uint32_t)p[1] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 8) | p[4];

    if (p[0] != 0)
        return KK_EPARSE; /* we never announce grpc-accept-encoding */
    if (l > d->max_msg)
        return KK_ETOOBIG;
    *len = l;
    return 0;
}

/* Delivers complete messages from p[0..n); returns bytes used or < 0.
 * *stopped is set when the callback asked to stop. */
static long deliver(struct kk_grpc_dec *d, const uint8_t *p, size_t n, kk_grpc_msg_fn fn, void *arg,
                    bool *stopped)
{
    size_t off = 0, len;
    int rc;

    *stopped = false;
    while (n - off >= KK_GRPC_HDR_LEN) {
        rc = check_hdr(d, p + off, &len);
        if (rc < 0)
            return rc;
        if (n - off - KK_GRPC_HDR_LEN < len)
            break;
        rc = fn(arg, p + off + KK_GRPC_HDR_LEN, len);
        off += KK_GRPC_HDR_LEN + len;
        if (rc < 0)
            return rc;
        if (rc > 0) {
            *stopped = true;
            break;
        }
    }
    return (long)off;
}

int kk_grpc_dec_drain(struct kk_grpc_dec *d, kk_grpc_msg_fn fn, void *arg)
{
    bool stopped;
    long used;

    if (d->buf.len == d->start)
        return 0;
    used = deliver(d, (const uint8_t *)d->buf.base + d->start, d->buf.len - d->start, fn, arg, &stopped);
    if (used < 0)
        return (int)used;
    d->start += (size_t)used;
    if (d->start == d->buf.len)
        kk_grpc_dec_reset(d);
    else if (d->start >= (64u << 10) && d->start >= (d->buf.len - d->start))
        compact(d);
    return 0;
}

int kk_grpc_dec_feed(struct kk_grpc_dec *d, const uint8_t *p, size_t n, bool hold, kk_grpc_msg_fn fn,
                     void *arg)
{
    bool stopped = false;
    size_t len;
    long used = 0;
    int rc;

    if (hold || d->buf.len > d->start) {
        if (d->buf.len + n > d->buf.max)
            compact(d);
        rc = kk_buf_append(&d->buf, p, n);
        if (rc < 0)
            return rc;
        if (d->buf.len - d->start >= KK_GRPC_HDR_LEN) {
            rc = check_hdr(d, (const uint8_t *)d->buf.base + d->start, &len);
            if (rc < 0)
                return rc;
        }
        return hold ? 0 : kk_grpc_dec_drain(d, fn, arg);
    }
    kk_grpc_dec_reset(d);
    /* Fast path: nothing buffered, deliver in place. */
    used = deliver(d, p, n, fn, arg, &stopped);
    if (used < 0)
        return (int)used;
    p += used;
    n -= (size_t)used;
    if (n >= KK_GRPC_HDR_LEN && !stopped) {
        rc = check_hdr(d, p, &len); /* fail an oversized message before buffering it */
        if (rc < 0)
            return rc;
    }
    return n ? kk_buf_append(&d->buf, p, n) : 0;
}

void kk_grpc_resp_init(struct kk_grpc_resp *r)
{
    r->http_status = -1;
    r->grpc_status = -1;
    r->bad_status = false;
    r->message[0] = '\0';
}

static bool name_is(const char *name, size_t nlen, const char *lit)
{
    return nlen == strlen(lit) && memcmp(name, lit, nlen) == 0;
}

/* Parses a short non-negative decimal; -1 when malformed. */
static int parse_uint(const char *v, size_t n)
{
    int x = 0;

    if (n == 0 || n > 9)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (v[i] - '0');
    }
    return x;
}

void kk_grpc_resp_header(struct kk_grpc_resp *r, const char *name, size_t nlen, const char *value,
                         size_t vlen)
{
    if (name_is(name, nlen, ":status")) {
        r->http_status = parse_uint(value, vlen);
    } else if (name_is(name, nlen, "grpc-status")) {
        r->grpc_status = parse_uint(value, vlen);
        r->bad_status = r->grpc_status < 0;
    } else if (name_is(name, nlen, "grpc-message")) {
        kk_grpc_percent_decode(value, vlen, r->message, sizeof(r->message));
    }
}

/* gRPC's mapping of HTTP status to gRPC status (doc/http-grpc-status-mapping.md). */
static int http_to_grpc(int http)
{
    switch (http) {
    case 400:
        return 13; /* INTERNAL */
    case 401:
        return 16; /* UNAUTHENTICATED */
    case 403:
        return 7; /* PERMISSION_DENIED */
    case 404:
        return 12; /* UNIMPLEMENTED */
    case 429:
    case 502:
    case 503:
    case 504:
        return 14; /* UNAVAILABLE */
    default:
        return 2; /* UNKNOWN */
    }
}

int kk_grpc_resp_result(const struct kk_grpc_resp *r, int *grpc_status, const char **message)
{
    *message = r->message;
    if (r->http_status != 200) {
        *grpc_status = http_to_grpc(r->http_status);
        if (!r->message[0])
            *message = "unexpected HTTP status";
        return KK_EGRPC;
    }
    if (r->grpc_status < 0) {
        *grpc_status = 13;
        *message = r->bad_status ? "malformed grpc-status" : "missing grpc-status";
        return KK_EGRPC;
    }
    *grpc_status = r->grpc_status;
    return r->grpc_status == 0 ? 0 : KK_EGRPC;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

size_t kk_grpc_percent_decode(const char *in, size_t n, char *out, size_t cap)
{
    size_t o = 0;

    if (cap == 0)
        return 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        int hi, lo;

        if (in[i] == '%' && i + 2 < n && (hi = hexval(in[i + 1])) >= 0 && (lo = hexval(in[i + 2])) >= 0) {
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            out[o++] = in[i];
        }
    }
    out[o] = '\0';
    return o;
}

const char *kk_grpc_status_name(int code)
{
    static const char *const names[] = {
        "OK",        "CANCELLED",       "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
        "NOT_FOUND", "ALREADY_EXISTS",  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED",   "OUT_OF_RANGE",    "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
        "DATA_LOSS", "UNAUTHENTICATED",
    };
    if (code < 0 || code >= (int)(sizeof(names) / sizeof(names[0])))
        return "UNKNOWN_STATUS";
    return names[code];
}

void kk_grpc_timeout_format(uint32_t ms, char out[16])
{
    if (ms <= 99999999u)
        snprintf(out, 16, "%um", ms);
    else
        snprintf(out, 16, "%uS", ms / 1000u + (ms % 1000u != 0)); /* rounds up without wrapping */
}

/* Allocation-free reading of the few fields the broker checks in a
 * Response, straight from the wire bytes (protobuf-c's unpack would
 * allocate the whole message for every reply). */
#include <string.h>

#include "load.h"

static int varint(const uint8_t **pp, const uint8_t *end, uint64_t *v)
{
    uint64_t r = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*pp >= end)
            return -1;
        uint8_t b = *(*pp)++;
        r |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = r;
            return 0;
        }
    }
    return -1;
}

int pb_scan_response(const uint8_t *p, size_t n, struct resp_view *out)
{
    const uint8_t *end = p + n;
    memset(out, 0, sizeof(*out));
    while (p < end) {
        uint64_t key, v;
        if (varint(&p, end, &key) != 0)
            return -1;
        unsigned field = (unsigned)(key >> 3), wt = (unsigned)(key & 7);
        switch (wt) {
        case 0:
            if (varint(&p, end, &v) != 0)
                return -1;
            if (field == 8)
                out->executed = v != 0;
            break;
        case 1:
            if (end - p < 8)
                return -1;
            p += 8;
            break;
        case 5:
            if (end - p < 4)
                return -1;
            p += 4;
            break;
        case 2:
            if (varint(&p, end, &v) != 0 || v > (uint64_t)(end - p))
                return -1;
            if (field == 2) {
                out->request_id = (const char *)p;
                out->request_id_len = (size_t)v;
            } else if (field == 5) {
                out->body = p;
                out->body_len = (size_t)v;
            } else if (field == 9) {
                out->error = (const char *)p;
                out->error_len = (size_t)v;
            }
            p += v;
            break;
        default:
            return -1;
        }
    }
    return 0;
}

int parse_seq(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 19)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 0;
}

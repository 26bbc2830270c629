#include "kk/b64.h"

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t kk_b64_encode(char *dst, const uint8_t *src, size_t n)
{
    char *out = dst;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8 | src[i + 2];
        *out++ = alphabet[v >> 18];
        *out++ = alphabet[(v >> 12) & 63];
        *out++ = alphabet[(v >> 6) & 63];
        *out++ = alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)src[i] << 16;
        *out++ = alphabet[v >> 18];
        *out++ = alphabet[(v >> 12) & 63];
        *out++ = '=';
        *out++ = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8;
        *out++ = alphabet[v >> 18];
        *out++ = alphabet[(v >> 12) & 63];
        *out++ = alphabet[(v >> 6) & 63];
        *out++ = '=';
    }
    return (size_t)(out - dst);
}

/* 0..63 for alphabet bytes, 64 for '=', 255 for anything else. */
static const uint8_t *decode_table(void)
{
    static uint8_t t[256];
    static int ready;
    if (!ready) {
        for (int i = 0; i < 256; i++)
            t[i] = 255;
        for (int i = 0; i < 64; i++)
            t[(unsigned char)alphabet[i]] = (uint8_t)i;
        t['='] = 64;
        ready = 1;
    }
    return t;
}

long kk_b64_decode(uint8_t *dst, const char *src, size_t n)
{
    const uint8_t *t = decode_table();
    if (n % 4 != 0)
        return -1;
    uint8_t *out = dst;
    for (size_t i = 0; i < n; i += 4) {
        uint8_t a = t[(unsigned char)src[i]], b = t[(unsigned char)src[i + 1]];
        uint8_t c = t[(unsigned char)src[i + 2]], d = t[(unsigned char)src[i + 3]];
        if (a > 63 || b > 63 || c == 255 || d == 255)
            return -1;
        int last = i + 4 == n;
        if (c == 64) {
            if (d != 64 || !last)
                return -1;
            *out++ = (uint8_t)(a << 2 | b >> 4);
        } else if (d == 64) {
            if (!last)
                return -1;
            *out++ = (uint8_t)(a << 2 | b >> 4);
            *out++ = (uint8_t)(b << 4 | c >> 2);
        } else {
            *out++ = (uint8_t)(a << 2 | b >> 4);
            *out++ = (uint8_t)(b << 4 | c >> 2);
            *out++ = (uint8_t)(c << 6 | d);
        }
    }
    return (long)(out - dst);
}

/* Fuzz target: base64 (include/kk/b64.h).
 *
 * Invariants: decode(encode(x)) == x with the documented lengths; decoding
 * arbitrary text agrees exactly (result and bytes) with a plain reference
 * decoder of Go's StdEncoding (padding required, trailing bits ignored),
 * never writes past kk_b64_decoded_max, and re-encoding what it decoded
 * gives text that decodes to the same bytes. */
#include <string.h>

#include "fuzz.h"
#include "kk/b64.h"

static int ref_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Obvious, slow decoder: one quantum at a time. */
static long ref_decode(uint8_t *dst, const char *src, size_t n)
{
    size_t o = 0;

    if (n % 4)
        return -1;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int j = 0; j < 4; j++) {
            unsigned char c = (unsigned char)src[i + j];
            if (c == '=' && i + 4 == n && j >= 2) {
                v[j] = 0;
                pad++;
                continue;
            }
            if (pad)
                return -1; /* data after '=' */
            v[j] = ref_val(c);
            if (v[j] < 0)
                return -1;
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        dst[o++] = (uint8_t)(w >> 16);
        if (pad < 2)
            dst[o++] = (uint8_t)(w >> 8);
        if (pad < 1)
            dst[o++] = (uint8_t)w;
    }
    return (long)o;
}

int kk_fuzz_b64(const uint8_t *data, size_t size)
{
    size_t elen = kk_b64_encoded_len(size);
    char *enc = malloc(elen + 1);
    uint8_t *dec = malloc(kk_b64_decoded_max(elen));
    uint8_t *dec2 = malloc(kk_b64_decoded_max(size));
    uint8_t *ref = malloc(size / 4 * 3 + 3);
    char *enc2 = NULL;
    uint8_t *dec3 = NULL;

    FZ_CHECK(enc && dec && dec2 && ref);
    /* encode -> decode */
    FZ_CHECK(kk_b64_encode(enc, data, size) == elen);
    FZ_CHECK(elen % 4 == 0);
    FZ_CHECK(kk_b64_decode(dec, enc, elen) == (long)size);
    FZ_CHECK(size == 0 || memcmp(dec, data, size) == 0);

    /* the input as base64 text */
    long n = kk_b64_decode(dec2, (const char *)data, size);
    long r = ref_decode(ref, (const char *)data, size);
    FZ_CHECK(n == r);
    if (n >= 0) {
        FZ_CHECK((size_t)n <= kk_b64_decoded_max(size));
        FZ_CHECK(memcmp(dec2, ref, (size_t)n) == 0);
        size_t l2 = kk_b64_encoded_len((size_t)n);
        FZ_CHECK(l2 == size); /* padding is required, so the length is canonical */
        enc2 = malloc(l2 + 1);
        dec3 = malloc(kk_b64_decoded_max(l2));
        FZ_CHECK(enc2 && dec3);
        kk_b64_encode(enc2, dec2, (size_t)n);
        FZ_CHECK(kk_b64_decode(dec3, enc2, l2) == n);
        FZ_CHECK(memcmp(dec3, dec2, (size_t)n) == 0);
    }
    free(enc);
    free(dec);
    free(dec2);
    free(ref);
    free(enc2);
    free(dec3);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return kk_fuzz_b64(data, size);
}

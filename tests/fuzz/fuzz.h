/* Shared bits of the fuzz targets (tests/fuzz/fuzz_<name>.c).
 *
 * Every target is int kk_fuzz_<name>(const uint8_t *data, size_t size) plus
 * the libFuzzer entry point calling it.  A broken invariant aborts through
 * FZ_CHECK, so libFuzzer saves the input and the corpus replay
 * (tests/fuzz/replay.c) fails the unit test.  Targets own nothing between
 * calls: whatever one allocates it frees before returning, so LeakSanitizer
 * checks the code under test too.
 */
#ifndef KK_FUZZ_H
#define KK_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_CHECK(cond)                                                                                       \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);                     \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

/* Length of the valid UTF-8 sequence at s (no overlongs, no surrogates, at
 * most U+10FFFF), or 0 when invalid. */
static inline size_t fz_utf8_len(const unsigned char *s, const unsigned char *end)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t n;

    if (c < 0x80)
        return 1;
    if (c < 0xC2 || c > 0xF4)
        return 0;
    n = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    if ((size_t)(end - s) < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return n;
}

static inline int fz_valid_utf8(const void *p, size_t n)
{
    const unsigned char *s = p, *end = s + n;

    while (s < end) {
        size_t l = fz_utf8_len(s, end);
        if (!l)
            return 0;
        s += l;
    }
    return 1;
}

#endif

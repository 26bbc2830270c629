#include "kk/b64.h"

#include <string.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* SSSE3 paths (the vector method of Muła and Lemire): 12 bytes <-> 16
 * characters per step with byte shuffles as 16-entry lookup tables.  Both do
 * whole blocks only and leave the rest (and anything unusual) to the scalar
 * code, which stays the reference.  The CPU is probed once. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_SSSE3_BUILD 1

static int ssse3_state = -1;

static int have_ssse3(void)
{
    if (ssse3_state < 0)
        ssse3_state = __builtin_cpu_supports("ssse3") ? 1 : 0;
    return ssse3_state;
}

/* Encodes n/12 blocks while 16 input bytes are readable; returns bytes consumed. */
__attribute__((target("ssse3"))) static size_t enc_ssse3(char *dst, const uint8_t *src, size_t n)
{
    /* Each 32-bit lane gets input bytes b1 b0 b2 b1, so one AND and one
     * 16-bit multiply per pair of 6-bit fields moves them into byte lanes. */
    const __m128i spread = _mm_setr_epi8(1, 0, 2, 1, 4, 3, 5, 4, 7, 6, 8, 7, 10, 9, 11, 10);
    const __m128i m0 = _mm_set1_epi32(0x0fc0fc00), mul0 = _mm_set1_epi32(0x04000040);
    const __m128i m1 = _mm_set1_epi32(0x003f03f0), mul1 = _mm_set1_epi32(0x01000010);
    /* Offset from a 6-bit index to its character, chosen by a small class:
     * 0 for 26..51, 1..10 for 52..61, 11 '+', 12 '/', 13 for 0..25. */
    const __m128i offs = _mm_setr_epi8('a' - 26, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52,
                                       '0' - 52, '0' - 52, '0' - 52, '0' - 52, '+' - 62, '/' - 63, 'A', 0, 0);
    size_t i = 0;
    for (; i + 16 <= n; i += 12, dst += 16) {
        __m128i in = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(src + i)), spread);
        __m128i idx = _mm_or_si128(_mm_mulhi_epu16(_mm_and_si128(in, m0), mul0),
                                   _mm_mullo_epi16(_mm_and_si128(in, m1), mul1));
        __m128i cls = _mm_subs_epu8(idx, _mm_set1_epi8(51));
        __m128i low = _mm_cmpgt_epi8(_mm_set1_epi8(26), idx);
        cls = _mm_or_si128(cls, _mm_and_si128(low, _mm_set1_epi8(13)));
        _mm_storeu_si128((__m128i *)dst, _mm_add_epi8(idx, _mm_shuffle_epi8(offs, cls)));
    }
    return i;
}

/* Decodes 16-character blocks of src[0..n) (none containing padding: the
 * caller keeps the last quad out), storing 16 bytes per 12 decoded, so the
 * caller leaves 4 bytes of room past the last block.  Returns the characters
 * consumed, or SIZE_MAX when a block holds a non-alphabet byte. */
__attribute__((target("ssse3"))) static size_t dec_ssse3(uint8_t *dst, const char *src, size_t n)
{
    /* A byte is valid iff lut_lo[low nibble] & lut_hi[high nibble] == 0. */
    const __m128i lut_lo = _mm_setr_epi8(0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x13, 0x1A,
                                         0x1B, 0x1B, 0x1B, 0x1A);
    const __m128i lut_hi = _mm_setr_epi8(0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08, 0x10, 0x10, 0x10, 0x10,
                                         0x10, 0x10, 0x10, 0x10);
    /* Added to a valid byte, by high nibble ('/' moved to slot 1), gives its value. */
    const __m128i lut_roll = _mm_setr_epi8(0, 16, 19, 4, -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m128i nib = _mm_set1_epi8(0x0f), slash = _mm_set1_epi8(0x2f);
    const __m128i pack = _mm_setr_epi8(2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1);
    size_t i = 0;
    for (; i + 16 <= n; i += 16, dst += 12) {
        __m128i in = _mm_loadu_si128((const __m128i *)(src + i));
        __m128i hi = _mm_and_si128(_mm_srli_epi32(in, 4), nib);
        __m128i bad = _mm_and_si128(_mm_shuffle_epi8(lut_lo, _mm_and_si128(in, nib)), _mm_shuffle_epi8(lut_hi, hi));
        if (_mm_movemask_epi8(_mm_cmpeq_epi8(bad, _mm_setzero_si128())) != 0xFFFF)
            return SIZE_MAX;
        __m128i v = _mm_add_epi8(in, _mm_shuffle_epi8(lut_roll, _mm_add_epi8(_mm_cmpeq_epi8(in, slash), hi)));
        /* Four 6-bit values per lane -> one 24-bit value -> 3 big-endian bytes. */
        v = _mm_maddubs_epi16(v, _mm_set1_epi32(0x01400140));
        v = _mm_madd_epi16(v, _mm_set1_epi32(0x00011000));
        _mm_storeu_si128((__m128i *)dst, _mm_shuffle_epi8(v, pack));
    }
    return i;
}
#endif

size_t kk_b64_encode(char *dst, const uint8_t *src, size_t n)
{
    char *out = dst;
    size_t i = 0;
#ifdef HAVE_SSSE3_BUILD
    if (n >= 16 && have_ssse3()) {
        i = enc_ssse3(dst, src, n);
        out += i / 3 * 4;
    }
#endif
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

/* Four tables of the 6-bit value pre-shifted to its place in a 24-bit group,
 * so a quad decodes with four lookups and three ORs; anything that is not an
 * alphabet byte (padding included) sets bit 24, sending the quad to the exact
 * checks of the slow path.  Built once, on first use (single-threaded loop). */
#define B64_BAD 0x01000000u

static uint32_t dec_shifted[4][256];

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
        for (int i = 0; i < 256; i++)
            for (int k = 0; k < 4; k++)
                dec_shifted[k][i] = t[i] < 64 ? (uint32_t)t[i] << (18 - 6 * k) : B64_BAD;
        ready = 1;
    }
    return t;
}

long kk_b64_decode(uint8_t *dst, const char *src, size_t n)
{
    const uint8_t *t = decode_table();
    const unsigned char *s = (const unsigned char *)src;
    if (n % 4 != 0)
        return -1;
    uint8_t *out = dst;
    size_t i = 0;
#ifdef HAVE_SSSE3_BUILD
    /* Blocks end 8+ characters before the end: the last quad (padding) stays
     * scalar and the 4 bytes each block over-stores land within dst. */
    if (n >= 32 && have_ssse3()) {
        size_t used = dec_ssse3(dst, src, n - 8);
        if (used == SIZE_MAX)
            return -1;
        i = used;
        out += used / 4 * 3;
    }
#endif
    /* Fast path over every quad but the last (the only one padding may end).
     * Each quad stores 4 bytes, the 4th overwritten by the next quad: within
     * kk_b64_decoded_max(n), which leaves 3 bytes of slack. */
    for (; i + 4 < n; i += 4) {
        uint32_t v = dec_shifted[0][s[i]] | dec_shifted[1][s[i + 1]] | dec_shifted[2][s[i + 2]] |
                     dec_shifted[3][s[i + 3]];
        if (v & B64_BAD)
            return -1; /* padding or a foreign byte before the last quad */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        uint32_t be = __builtin_bswap32(v << 8);
#else
        uint32_t be = v << 8;
#endif
        memcpy(out, &be, 4);
        out += 3;
    }
    for (; i < n; i += 4) {
        uint8_t a = t[s[i]], b = t[s[i + 1]];
        uint8_t c = t[s[i + 2]], d = t[s[i + 3]];
        if (a > 63 || b > 63 || c == 255 || d == 255)
            return -1;
        if (c == 64) {
            if (d != 64)
                return -1;
            *out++ = (uint8_t)(a << 2 | b >> 4);
        } else if (d == 64) {
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

/* SHA-256 (FIPS 180-4) with the x86 SHA extensions when the CPU has them
 * (rounds by sha256rnds2, message schedule by sha256msg1/msg2), else portable
 * C.  Moved here from src/kinesis so SigV4 (canonical-request hash, HMACs)
 * and body hashing share it; the CPU is probed once (cpuid leaf 7, EBX bit
 * 29, plus SSSE3 and SSE4.1 for the shuffles and blends around it). */
#include "kk/sha256.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_SHANI_BUILD 1
#endif

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static const uint32_t H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

#define ROR(x, n) ((x) >> (n) | (x) << (32 - (n)))

static void portable_blocks(uint32_t st[8], const uint8_t *p, size_t n)
{
    for (; n > 0; n--, p += 64) {
        uint32_t w[64], a = st[0], b = st[1], c = st[2], d = st[3], e = st[4], f = st[5], g = st[6],
                        h = st[7];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
                   p[4 * i + 3];
        for (int i = 16; i < 64; i++) {
            uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        for (int i = 0; i < 64; i++) {
            uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
            uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        st[0] += a;
        st[1] += b;
        st[2] += c;
        st[3] += d;
        st[4] += e;
        st[5] += f;
        st[6] += g;
        st[7] += h;
    }
}

#ifdef HAVE_SHANI_BUILD
/* Processes n 64-byte blocks into st (a..h). */
__attribute__((target("sha,sse4.1,ssse3"))) static void shani_blocks(uint32_t st[8], const uint8_t *p,
                                                                     size_t n)
{
    /* Words are big-endian in the message: byte-swap each 32-bit lane. */
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    /* The instructions keep the state as ABEF and CDGH. */
    __m128i dcba = _mm_loadu_si128((const __m128i *)&st[0]);
    __m128i hgfe = _mm_loadu_si128((const __m128i *)&st[4]);
    __m128i badc = _mm_shuffle_epi32(dcba, 0xB1);
    __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);
    __m128i abef = _mm_alignr_epi8(badc, efgh, 8);
    __m128i cdgh = _mm_blend_epi16(efgh, badc, 0xF0);

    for (; n > 0; n--, p += 64) {
        __m128i abef0 = abef, cdgh0 = cdgh;
        __m128i w[4];
        for (int i = 0; i < 4; i++)
            w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), bswap);
        for (int r = 0; r < 16; r++) {
            /* Group r covers rounds 4r..4r+3; slot r&3 holds W[4r-16..] until replaced. */
            if (r >= 4) {
                __m128i t = _mm_sha256msg1_epu32(w[r & 3], w[(r + 1) & 3]);
                t = _mm_add_epi32(t, _mm_alignr_epi8(w[(r + 3) & 3], w[(r + 2) & 3], 4));
                w[r & 3] = _mm_sha256msg2_epu32(t, w[(r + 3) & 3]);
            }
            __m128i wk = _mm_add_epi32(w[r & 3], _mm_loadu_si128((const __m128i *)&K[4 * r]));
            cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk);
            wk = _mm_shuffle_epi32(wk, 0x0E);
            /* Two rounds later C,D,G,H are the former A,B,E,F: the roles swap
             * and swap back within the pair, so no move is needed. */
            abef = _mm_sha256rnds2_epu32(abef, cdgh, wk);
        }
        abef = _mm_add_epi32(abef, abef0);
        cdgh = _mm_add_epi32(cdgh, cdgh0);
    }

    __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
    __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    dcba = _mm_blend_epi16(feba, dchg, 0xF0);
    hgfe = _mm_alignr_epi8(dchg, feba, 8);
    _mm_storeu_si128((__m128i *)&st[0], dcba);
    _mm_storeu_si128((__m128i *)&st[4], hgfe);
}

static int shani_state = -1; /* -1 unknown, 0 no, 1 yes */

static bool shani_available(void)
{
    if (shani_state < 0) {
        unsigned a, b, c, d;
        bool ok = false;
        if (__get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSSE3) && (c & bit_SSE4_1) &&
            __get_cpuid_count(7, 0, &a, &b, &c, &d))
            ok = (b & (1u << 29)) != 0;
        shani_state = ok;
    }
    return shani_state == 1;
}
#endif

static bool force_portable;

void kk_sha256_force_portable(bool on)
{
    force_portable = on;
}

bool kk_sha256_accelerated(void)
{
#ifdef HAVE_SHANI_BUILD
    return shani_available();
#else
    return false;
#endif
}

static void blocks(uint32_t st[8], const uint8_t *p, size_t n)
{
#ifdef HAVE_SHANI_BUILD
    if (!force_portable && shani_available()) {
        shani_blocks(st, p, n);
        return;
    }
#endif
    portable_blocks(st, p, n);
}

void kk_sha256_init(struct kk_sha256 *c)
{
    memcpy(c->st, H0, sizeof(H0));
    c->total = 0;
    c->n = 0;
}

void kk_sha256_update(struct kk_sha256 *c, const void *data, size_t len)
{
    const uint8_t *p = data;
    c->total += len;
    if (c->n) {
        size_t take = 64 - c->n < len ? 64 - c->n : len;
        memcpy(c->buf + c->n, p, take);
        c->n += take;
        p += take;
        len -= take;
        if (c->n < 64)
            return;
        blocks(c->st, c->buf, 1);
        c->n = 0;
    }
    if (len >= 64) {
        blocks(c->st, p, len / 64);
        p += len / 64 * 64;
        len %= 64;
    }
    if (len) {
        memcpy(c->buf, p, len);
        c->n = len;
    }
}

void kk_sha256_final(struct kk_sha256 *c, uint8_t out[32])
{
    /* The tail, 0x80, zeros and the bit length: one or two blocks. */
    uint8_t last[128];
    size_t rem = c->n;
    uint64_t bits = c->total * 8;
    memcpy(last, c->buf, rem);
    last[rem] = 0x80;
    size_t nb = rem + 9 <= 64 ? 1 : 2;
    memset(last + rem + 1, 0, nb * 64 - rem - 1 - 8);
    for (int i = 0; i < 8; i++)
        last[nb * 64 - 1 - i] = (uint8_t)(bits >> (8 * i));
    blocks(c->st, last, nb);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(c->st[i] >> 24);
        out[4 * i + 1] = (uint8_t)(c->st[i] >> 16);
        out[4 * i + 2] = (uint8_t)(c->st[i] >> 8);
        out[4 * i + 3] = (uint8_t)c->st[i];
    }
}

void kk_sha256(const void *data, size_t len, uint8_t out[32])
{
    struct kk_sha256 c;
    kk_sha256_init(&c);
    kk_sha256_update(&c, data, len);
    kk_sha256_final(&c, out);
}

static const char hexd[] = "0123456789abcdef";

/* Three digests are hex-encoded per signed request: a byte -> two-char
 * table halves the work of nibble lookups. */
static char hex_pairs[256][2];
static int hex_ready;

void kk_hex_encode(char *out, const uint8_t *in, size_t n)
{
    if (!hex_ready) {
        for (int i = 0; i < 256; i++) {
            hex_pairs[i][0] = hexd[i >> 4];
            hex_pairs[i][1] = hexd[i & 15];
        }
        hex_ready = 1;
    }
    for (size_t i = 0; i < n; i++)
        memcpy(out + 2 * i, hex_pairs[in[i]], 2);
    out[2 * n] = '\0';
}

void kk_sha256_hex(const void *data, size_t len, char out[65])
{
    uint8_t d[32];
    kk_sha256(data, len, d);
    kk_hex_encode(out, d, 32);
}

void kk_hmac_sha256_setkey(struct kk_hmac_sha256_key *k, const void *key, size_t keylen)
{
    uint8_t pad[64], kh[32];
    if (keylen > 64) {
        kk_sha256(key, keylen, kh);
        key = kh;
        keylen = 32;
    }
    memset(pad, 0x36, sizeof(pad));
    for (size_t i = 0; i < keylen; i++)
        pad[i] ^= ((const uint8_t *)key)[i];
    kk_sha256_init(&k->inner);
    kk_sha256_update(&k->inner, pad, 64);
    for (size_t i = 0; i < 64; i++)
        pad[i] ^= 0x36 ^ 0x5c;
    kk_sha256_init(&k->outer);
    kk_sha256_update(&k->outer, pad, 64);
    /* Key material does not stay on the stack. */
    memset(pad, 0, sizeof(pad));
    memset(kh, 0, sizeof(kh));
}

void kk_hmac_sha256_run(const struct kk_hmac_sha256_key *k, const void *msg, size_t len, uint8_t out[32])
{
    struct kk_sha256 c = k->inner;
    uint8_t ih[32];
    kk_sha256_update(&c, msg, len);
    kk_sha256_final(&c, ih);
    c = k->outer;
    kk_sha256_update(&c, ih, 32);
    kk_sha256_final(&c, out);
}

void kk_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t len, uint8_t out[32])
{
    struct kk_hmac_sha256_key k;
    kk_hmac_sha256_setkey(&k, key, keylen);
    kk_hmac_sha256_run(&k, msg, len, out);
    memset(&k, 0, sizeof(k));
}

/* AWS Signature Version 4 (kinesis.md §2).
 *
 * The canonical request is never materialised on the hot path: its pieces
 * stream into a SHA-256 context (and into canonical_out only when a test asks
 * for it), so signing a Kinesis call costs one SHA-256 over a few hundred
 * bytes plus one HMAC, with no allocation (kk/sha256.h: contexts on the
 * stack).  The signing key is derived once per (UTC day, region, service,
 * credentials generation), and its HMAC pads are hashed then too, so the
 * per-request HMAC costs 2 compressions for the string to sign + 1. */
#include "kk/aws.h"

#include "kk/err.h"

#include "kk/sha256.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_SIGNED_HEADERS 64

/* A string piece; join / append_pieces replace printf on the per-request path. */
struct piece {
    const char *p;
    size_t n;
};

/* Writes the pieces and a NUL into dst; returns the length, or -1 when they do not fit. */
static int join(char *dst, size_t cap, const struct piece *pc, size_t n)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        if (pc[i].n >= cap - len)
            return -1;
        memcpy(dst + len, pc[i].p, pc[i].n);
        len += pc[i].n;
    }
    dst[len] = '\0';
    return (int)len;
}

/* Appends the pieces to b in one reservation (all or nothing). */
static int append_pieces(struct kk_buf *b, const struct piece *pc, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += pc[i].n;
    char *d = kk_buf_reserve(b, total);
    if (!d)
        return total > b->max - b->len ? KK_ETOOBIG : KK_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        memcpy(d, pc[i].p, pc[i].n);
        d += pc[i].n;
    }
    kk_buf_commit(b, total);
    return 0;
}

/* Decimal digits of v into out (no NUL); returns their count (at most 20). */
static size_t put_u64(char *out, uint64_t v)
{
    char d[20];
    size_t n = 0, i = 0;
    do {
        d[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        out[i++] = d[--n];
    return i;
}

void kk_sigv4_init(struct kk_sigv4 *s, const char *region, const char *service)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->region, sizeof(s->region), "%s", region);
    snprintf(s->service, sizeof(s->service), "%s", service);
}

/* The cached key, re-derived when the day or the credentials changed. */
static int signing_key(struct kk_sigv4 *s, const struct kk_aws_creds *creds, const char *date8)
{
    uint8_t k[32];
    char secret[4 + sizeof(creds->secret_key)];

    if (s->have_key && s->generation == creds->generation && memcmp(s->date, date8, 8) == 0)
        return 0;
    size_t sl = strnlen(creds->secret_key, sizeof(creds->secret_key));
    memcpy(secret, "AWS4", 4);
    memcpy(secret + 4, creds->secret_key, sl);
    kk_hmac_sha256(secret, 4 + sl, date8, 8, k);
    kk_hmac_sha256(k, 32, s->region, strlen(s->region), k);
    kk_hmac_sha256(k, 32, s->service, strlen(s->service), k);
    kk_hmac_sha256(k, 32, "aws4_request", 12, s->key);
    kk_hmac_sha256_setkey(&s->key_ctx, s->key, 32);
    memset(secret, 0, sizeof(secret)); /* do not leave the secret on the stack */
    memset(k, 0, sizeof(k));
    memcpy(s->date, date8, 8);
    s->date[8] = '\0';
    s->generation = creds->generation;
    s->have_key = true;
    s->derivations++;
    return 0;
}

/* Sink for canonical-request bytes: the running hash, plus a copy on request. */
struct sink {
    struct kk_sha256 sha;
    struct kk_buf *copy;
    int rc;
};

static void emit(struct sink *k, const void *p, size_t n)
{
    if (n == 0 || k->rc)
        return;
    kk_sha256_update(&k->sha, p, n);
    if (k->copy)
        k->rc = kk_buf_append(k->copy, p, n);
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Value with leading/trailing whitespace trimmed and inner runs (folded lines
 * included, quotes not special) collapsed to one space. */
static void emit_value(struct sink *k, const char *v)
{
    const char *p = v;
    while (*p && is_ws(*p))
        p++;
    int pending_space = 0;
    while (*p) {
        const char *run = p;
        while (*p && !is_ws(*p))
            p++;
        if (p > run) {
            if (pending_space)
                emit(k, " ", 1);
            emit(k, run, (size_t)(p - run));
            pending_space = 0;
        }
        while (*p && is_ws(*p)) {
            p++;
            pending_space = 1;
        }
    }
}

static void emit_lower(struct sink *k, const char *name, char *list, size_t *list_len, size_t list_cap)
{
    char tmp[64];
    size_t n = 0;
    for (const char *p = name; *p; p++) {
        char c = *p >= 'A' && *p <= 'Z' ? (char)(*p + 32) : *p;
        tmp[n++] = c;
        if (*list_len < list_cap)
            list[(*list_len)++] = c;
        if (n == sizeof(tmp)) {
            emit(k, tmp, n);
            n = 0;
        }
    }
    emit(k, tmp, n);
}

int kk_sigv4_sign(struct kk_sigv4 *s, const struct kk_aws_creds *creds, const char *amz_date,
                  const char *method, const char *path, const char *query,
                  const struct kk_sigv4_header *headers, size_t n_headers, const char *payload_sha256_hex,
                  struct kk_buf *canonical_out, struct kk_buf *sts_out, char signature_out[65],
                  struct kk_buf *auth_out)
{
    uint16_t order[MAX_SIGNED_HEADERS];
    char signed_list[1024];
    size_t sl = 0, i, j;
    struct sink k;
    uint8_t digest[32], sig[32];
    char hash_hex[65], sig_hex[65], sts[512];
    int rc = 0, n;

    if (n_headers > MAX_SIGNED_HEADERS || strlen(amz_date) != 16 || !creds->access_key[0] ||
        !creds->secret_key[0])
        return KK_EINVAL;
    /* Stable insertion sort of header indices by lowercase name: headers come
     * few and usually sorted already, and duplicates keep request order. */
    for (i = 0; i < n_headers; i++) {
        for (j = i; j > 0 && strcasecmp(headers[order[j - 1]].name, headers[i].name) > 0; j--)
            order[j] = order[j - 1];
        order[j] = (uint16_t)i;
    }

    memset(&k, 0, sizeof(k));
    k.copy = canonical_out;
    kk_sha256_init(&k.sha);
    emit(&k, method, strlen(method));
    emit(&k, "\n", 1);
    emit(&k, path, strlen(path));
    emit(&k, "\n", 1);
    emit(&k, query, strlen(query));
    emit(&k, "\n", 1);
    for (i = 0; i < n_headers; i++) {
        const struct kk_sigv4_header *h = &headers[order[i]];
        if (i > 0 && strcasecmp(headers[order[i - 1]].name, h->name) == 0) {
            emit(&k, ",", 1); /* duplicate: joined in order */
        } else {
            if (i > 0)
                emit(&k, "\n", 1);
            if (sl && sl < sizeof(signed_list))
                signed_list[sl++] = ';';
            emit_lower(&k, h->name, signed_list, &sl, sizeof(signed_list));
            emit(&k, ":", 1);
        }
        emit_value(&k, h->value);
    }
    if (n_headers)
        emit(&k, "\n", 1);
    if (sl >= sizeof(signed_list)) {
        rc = KK_ETOOBIG;
        goto out;
    }
    emit(&k, "\n", 1);
    emit(&k, signed_list, sl);
    emit(&k, "\n", 1);
    emit(&k, payload_sha256_hex, strlen(payload_sha256_hex));
    rc = k.rc;
    if (rc)
        goto out;
    kk_sha256_final(&k.sha, digest);
    kk_hex_encode(hash_hex, digest, 32);

    {
        /* "AWS4-HMAC-SHA256\n<date>\n<YYYYMMDD>/<region>/<service>/aws4_request\n<hash>",
         * assembled by hand: this runs per request and printf is costly. */
        struct piece pc[] = {{"AWS4-HMAC-SHA256\n", 17}, {amz_date, 16}, {"\n", 1}, {amz_date, 8}, {"/", 1},
                             {s->region, strlen(s->region)}, {"/", 1}, {s->service, strlen(s->service)},
                             {"/aws4_request\n", 14}, {hash_hex, 64}};
        n = join(sts, sizeof(sts), pc, sizeof(pc) / sizeof(pc[0]));
    }
    if (n < 0) {
        rc = KK_ETOOBIG;
        goto out;
    }
    if (sts_out) {
        rc = kk_buf_append(sts_out, sts, (size_t)n);
        if (rc)
            goto out;
    }
    rc = signing_key(s, creds, amz_date);
    if (rc)
        goto out;
    kk_hmac_sha256_run(&s->key_ctx, sts, (size_t)n, sig);
    kk_hex_encode(sig_hex, sig, 32);
    if (signature_out)
        memcpy(signature_out, sig_hex, 65);
    if (auth_out) {
        struct piece pc[] = {{"AWS4-HMAC-SHA256 Credential=", 28},
                             {creds->access_key, strlen(creds->access_key)},
                             {"/", 1},
                             {amz_date, 8},
                             {"/", 1},
                             {s->region, strlen(s->region)},
                             {"/", 1},
                             {s->service, strlen(s->service)},
                             {"/aws4_request, SignedHeaders=", 29},
                             {signed_list, sl},
                             {", Signature=", 12},
                             {sig_hex, 64}};
        rc = append_pieces(auth_out, pc, sizeof(pc) / sizeof(pc[0]));
    }
out:
    return rc;
}

static int has_crlf(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

int kk_sigv4_kinesis_head(struct kk_sigv4 *s, const struct kk_aws_creds *creds, const char *host_header,
                          const char *target, const char *payload_sha256_hex, size_t content_length,
                          int64_t now_epoch_s, struct kk_buf *head)
{
    char amz_date[17];
    struct tm tm;
    time_t t = (time_t)now_epoch_s;
    size_t start = head->len;
    int rc;
    bool tok = creds->session_token[0] != '\0';

    /* Values go on the wire verbatim: refuse anything that could split a header. */
    if (has_crlf(host_header) || has_crlf(target) || has_crlf(creds->session_token))
        return KK_EINVAL;
    /* The date changes once a second: format it then, not per request. */
    if (!s->have_amz_date || s->amz_date_epoch != now_epoch_s) {
        if (!gmtime_r(&t, &tm))
            return KK_EINVAL;
        strftime(s->amz_date, sizeof(s->amz_date), "%Y%m%dT%H%M%SZ", &tm);
        s->amz_date_epoch = now_epoch_s;
        s->have_amz_date = true;
    }
    memcpy(amz_date, s->amz_date, sizeof(amz_date));

    /* Already in canonical order, so the signer's sort is a no-op pass. */
    struct kk_sigv4_header h[5];
    size_t n = 0;
    h[n++] = (struct kk_sigv4_header){"content-type", "application/x-amz-json-1.1"};
    h[n++] = (struct kk_sigv4_header){"host", host_header};
    h[n++] = (struct kk_sigv4_header){"x-amz-date", amz_date};
    if (tok)
        h[n++] = (struct kk_sigv4_header){"x-amz-security-token", creds->session_token};
    h[n++] = (struct kk_sigv4_header){"x-amz-target", target};

    char clen[20];
    static const char ct[] = "\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: ";
    struct piece pc[] = {{"POST / HTTP/1.1\r\nHost: ", 23},
                         {host_header, strlen(host_header)},
                         {ct, sizeof(ct) - 1},
                         {target, strlen(target)},
                         {"\r\nX-Amz-Date: ", 14},
                         {amz_date, 16},
                         {"\r\n", 2},
                         {"X-Amz-Security-Token: ", tok ? 22 : 0},
                         {creds->session_token, tok ? strlen(creds->session_token) : 0},
                         {"\r\n", tok ? 2 : 0},
                         {"Content-Length: ", 16},
                         {clen, put_u64(clen, content_length)},
                         {"\r\nAuthorization: ", 17}};
    rc = append_pieces(head, pc, sizeof(pc) / sizeof(pc[0]));
    if (!rc)
        rc = kk_sigv4_sign(s, creds, amz_date, "POST", "/", "", h, n, payload_sha256_hex, NULL, NULL, NULL,
                           head);
    if (!rc)
        rc = kk_buf_append(head, "\r\n\r\n", 4);
    if (rc)
        head->len = start;
    return rc;
}

/* AWS Signature Version 4 (kinesis.md §2).
 *
 * The canonical request is never materialised on the hot path: its pieces
 * stream into a SHA-256 context (and into canonical_out only when a test asks
 * for it), so signing a Kinesis call costs one SHA-256 over a few hundred
 * bytes plus two HMACs, with no allocation.  The signing key is derived once
 * per (UTC day, region, service, credentials generation). */
#include "kk/aws.h"

#include "kk/err.h"

#include <mbedtls/md.h>
#include <mbedtls/sha256.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_SIGNED_HEADERS 64

static const char hexd[] = "0123456789abcdef";

static void hex_encode(char *out, const uint8_t *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexd[in[i] >> 4];
        out[2 * i + 1] = hexd[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void kk_sha256_hex(const void *data, size_t len, char out[65])
{
    uint8_t d[32];
    mbedtls_sha256_ret(data, len, d, 0);
    hex_encode(out, d, 32);
}

static int hmac(const uint8_t *key, size_t keylen, const void *msg, size_t len, uint8_t out[32])
{
    const mbedtls_md_info_t *md = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    return mbedtls_md_hmac(md, key, keylen, msg, len, out) ? KK_EINVAL : 0;
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
    int rc;

    if (s->have_key && s->generation == creds->generation && memcmp(s->date, date8, 8) == 0)
        return 0;
    size_t sl = strnlen(creds->secret_key, sizeof(creds->secret_key));
    memcpy(secret, "AWS4", 4);
    memcpy(secret + 4, creds->secret_key, sl);
    rc = hmac((const uint8_t *)secret, 4 + sl, date8, 8, k);
    if (!rc)
        rc = hmac(k, 32, s->region, strlen(s->region), k);
    if (!rc)
        rc = hmac(k, 32, s->service, strlen(s->service), k);
    if (!rc)
        rc = hmac(k, 32, "aws4_request", 12, s->key);
    memset(secret, 0, sizeof(secret)); /* do not leave the secret on the stack */
    memset(k, 0, sizeof(k));
    if (rc) {
        s->have_key = false;
        return rc;
    }
    memcpy(s->date, date8, 8);
    s->date[8] = '\0';
    s->generation = creds->generation;
    s->have_key = true;
    s->derivations++;
    return 0;
}

/* Sink for canonical-request bytes: the running hash, plus a copy on request. */
struct sink {
    mbedtls_sha256_context sha;
    struct kk_buf *copy;
    int rc;
};

static void emit(struct sink *k, const void *p, size_t n)
{
    if (n == 0 || k->rc)
        return;
    mbedtls_sha256_update_ret(&k->sha, p, n);
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
    mbedtls_sha256_init(&k.sha);
    mbedtls_sha256_starts_ret(&k.sha, 0);
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
    mbedtls_sha256_finish_ret(&k.sha, digest);
    hex_encode(hash_hex, digest, 32);

    n = snprintf(sts, sizeof(sts), "AWS4-HMAC-SHA256\n%s\n%.8s/%s/%s/aws4_request\n%s", amz_date, amz_date,
                 s->region, s->service, hash_hex);
    if (n < 0 || (size_t)n >= sizeof(sts)) {
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
    rc = hmac(s->key, 32, sts, (size_t)n, sig);
    if (rc)
        goto out;
    hex_encode(sig_hex, sig, 32);
    if (signature_out)
        memcpy(signature_out, sig_hex, 65);
    if (auth_out)
        rc = kk_buf_printf(auth_out,
                           "AWS4-HMAC-SHA256 Credential=%s/%.8s/%s/%s/aws4_request, SignedHeaders=%.*s, "
                           "Signature=%s",
                           creds->access_key, amz_date, s->region, s->service, (int)sl, signed_list, sig_hex);
out:
    mbedtls_sha256_free(&k.sha);
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
    if (has_crlf(host_header) || has_crlf(target) || has_crlf(creds->session_token) || !gmtime_r(&t, &tm))
        return KK_EINVAL;
    strftime(amz_date, sizeof(amz_date), "%Y%m%dT%H%M%SZ", &tm);

    /* Already in canonical order, so the signer's sort is a no-op pass. */
    struct kk_sigv4_header h[5];
    size_t n = 0;
    h[n++] = (struct kk_sigv4_header){"content-type", "application/x-amz-json-1.1"};
    h[n++] = (struct kk_sigv4_header){"host", host_header};
    h[n++] = (struct kk_sigv4_header){"x-amz-date", amz_date};
    if (tok)
        h[n++] = (struct kk_sigv4_header){"x-amz-security-token", creds->session_token};
    h[n++] = (struct kk_sigv4_header){"x-amz-target", target};

    rc = kk_buf_printf(head,
                       "POST / HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-amz-json-1.1\r\n"
                       "X-Amz-Target: %s\r\nX-Amz-Date: %s\r\n",
                       host_header, target, amz_date);
    if (!rc && tok) {
        rc = kk_buf_append_str(head, "X-Amz-Security-Token: ");
        if (!rc)
            rc = kk_buf_append_str(head, creds->session_token);
        if (!rc)
            rc = kk_buf_append(head, "\r\n", 2);
    }
    if (!rc)
        rc = kk_buf_printf(head, "Content-Length: %zu\r\nAuthorization: ", content_length);
    if (!rc)
        rc = kk_sigv4_sign(s, creds, amz_date, "POST", "/", "", h, n, payload_sha256_hex, NULL, NULL, NULL,
                           head);
    if (!rc)
        rc = kk_buf_append(head, "\r\n\r\n", 4);
    if (rc)
        head->len = start;
    return rc;
}

/* AWS plumbing for the Kinesis target: credentials, endpoint resolution and
 * Signature Version 4 (kinesis.md §1.1, §2, §5).  No I/O except reading the
 * shared credentials file at resolve time. */
#ifndef KK_AWS_H
#define KK_AWS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kk/buf.h"
#include "kk/config.h"
#include "kk/sha256.h"

/* ---- credentials ----------------------------------------------------------
 * A provider yields credentials; static ones never expire.  The interface is
 * ready for asynchronous, expiring providers (container, IMDS, web identity
 * come later): callers ask kk_aws_creds_get at send time and treat
 * expires_ms (wall clock, 0 = never) as a hint to refresh. */
struct kk_aws_creds {
    char access_key[128];
    char secret_key[128];
    char session_token[2048]; /* "" when none */
    int64_t expires_ms;       /* 0: no expiry */
    uint64_t generation;      /* changes whenever the values change; unique in the process */
};

struct kk_aws_provider;

/* Resolution order: properties aws_key + aws_secret_key (+ token); else env
 * AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN); else the
 * shared credentials file (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials)
 * profile (property profile, else AWS_PROFILE, else "default").  Fails with
 * KK_ECREDS and a message naming what was tried (never a secret value).
 * Half a pair (aws_key without aws_secret_key, or the env equivalent) is an
 * error, not a reason to fall through to the next source. */
int kk_aws_provider_new(const struct kk_props *target_props, struct kk_aws_provider **out, char *err,
                        size_t errlen);
/* Current credentials (pointer valid until the next refresh). */
const struct kk_aws_creds *kk_aws_creds_get(struct kk_aws_provider *p);
/* Re-reads the source (after an auth error); returns 0 or KK_ECREDS. */
int kk_aws_provider_refresh(struct kk_aws_provider *p);
/* Where the credentials came from: "config", "env", "profile <name>". */
const char *kk_aws_provider_source(const struct kk_aws_provider *p);
void kk_aws_provider_free(struct kk_aws_provider *p);

/* ---- endpoint ------------------------------------------------------------- */
struct kk_aws_endpoint {
    char region[64];
    char host[256];
    uint16_t port;
    bool tls;
    char host_header[280]; /* "host" or "host:port" when the port is not the scheme default */
};

/* Property endpoint (http:// or https://), else AWS_ENDPOINT_URL_KINESIS,
 * else AWS_ENDPOINT_URL, else https://kinesis.<region>.amazonaws.com
 * (.amazonaws.com.cn for cn-*; kinesis-fips. when use_fips is true, property
 * use_fips else env AWS_USE_FIPS_ENDPOINT=true; GovCloud regions keep their
 * regular host, which is already FIPS).  URL form: scheme://host[:port][/]
 * with host a name, IPv4 or [IPv6] (out->host without brackets); anything
 * after the authority but a single "/" is a KK_ECONFIG error.
 * Region: property region, else AWS_REGION, else AWS_DEFAULT_REGION;
 * missing -> KK_ECONFIG with a clear message. */
int kk_aws_endpoint_resolve(const struct kk_props *target_props, struct kk_aws_endpoint *out, char *err,
                            size_t errlen);

/* ---- SigV4 ---------------------------------------------------------------- */
struct kk_sigv4 {
    /* Signing key cache: one derived key per (secret, generation, date, region). */
    char region[64];
    char service[32];
    char date[9];          /* YYYYMMDD of the cached key */
    uint64_t generation;   /* creds generation of the cached key */
    uint8_t key[32];
    struct kk_hmac_sha256_key key_ctx; /* key's HMAC pads, pre-hashed (one HMAC per request) */
    bool have_key;
    uint64_t derivations;  /* how many keys were derived (tests) */
    /* kk_sigv4_kinesis_head: X-Amz-Date of the last second signed */
    int64_t amz_date_epoch;
    char amz_date[17];
    bool have_amz_date;
};

void kk_sigv4_init(struct kk_sigv4 *s, const char *region, const char *service);

/* Hex SHA-256 of a payload (64 chars + NUL).  Defined in src/core/sha256.c
 * (kk/sha256.h), declared here too for existing callers. */
void kk_sha256_hex(const void *data, size_t len, char out[65]);

/* Appends a complete, signed HTTP/1.1 request head for a Kinesis JSON call:
 *   POST / HTTP/1.1, Host, Content-Type: application/x-amz-json-1.1,
 *   X-Amz-Target: <target>, X-Amz-Date, [X-Amz-Security-Token],
 *   Content-Length, Authorization, blank line.
 * Signs content-type;host;x-amz-date;[x-amz-security-token;]x-amz-target
 * (the botocore set, kinesis-vectors.md variant A/B).  now_epoch_s is wall
 * clock seconds, taken at send time by the caller. */
int kk_sigv4_kinesis_head(struct kk_sigv4 *s, const struct kk_aws_creds *creds, const char *host_header,
                          const char *target, const char *payload_sha256_hex, size_t content_length,
                          int64_t now_epoch_s, struct kk_buf *head);

/* General signer used by the test suite (and by the one above):
 * method, path, query (canonical, already encoded; "" for none), headers as
 * name/value pairs in request order (names any case; values raw: the signer
 * trims and collapses), payload hash hex.  X-Amz-Date (and the token header
 * when sign_token) must already be among the headers.  Writes the canonical
 * request, string to sign and signature (hex) when the out buffers are
 * non-NULL, and the Authorization header value to auth. */
struct kk_sigv4_header {
    const char *name;
    const char *value;
};
int kk_sigv4_sign(struct kk_sigv4 *s, const struct kk_aws_creds *creds, const char *amz_date /* YYYYMMDDTHHMMSSZ */,
                  const char *method, const char *path, const char *query,
                  const struct kk_sigv4_header *headers, size_t n_headers, const char *payload_sha256_hex,
                  struct kk_buf *canonical_out, struct kk_buf *sts_out, char signature_out[65],
                  struct kk_buf *auth_out);

#endif

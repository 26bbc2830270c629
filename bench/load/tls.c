/* Server-side TLS for the fake Kinesis: mbedTLS 2.28 with memory BIOs, so
 * the libuv socket code in kinesis.c stays the same for http and https.
 *
 * A fresh key and self-signed certificate per run: nothing secret is kept
 * in the tree, and the gateway under test verifies it like any endpoint
 * (tls_ca_file = the written PEM, hostname localhost).
 */
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tls.h"

#define TLS_IN_MAX (1u << 20) /* ciphertext waiting for mbedtls_ssl_read */
#define TLS_OUT_MAX (32u << 20)

struct ktls_server {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_pk_context key;
    mbedtls_x509_crt cert;
    mbedtls_ssl_config conf;
};

struct ktls_conn {
    mbedtls_ssl_context ssl;
    struct kk_buf in; /* ciphertext not yet taken by mbedTLS: in.base[in_off..in.len) */
    size_t in_off;
    struct kk_buf out;
    bool established;
};

/* subjectAltName: SEQUENCE { [2] "localhost", [2] "127.0.0.1" } (DER). */
/* subjectAltName: DNS:localhost, DNS:127.0.0.1, IP:127.0.0.1 (the gateway
 * checks IP hosts against iPAddress entries, tag 0x87). */
static const unsigned char san_der[] = {0x30, 0x1c, 0x82, 0x09, 'l', 'o', 'c', 'a', 'l', 'h', 'o', 's', 't',
                                        0x82, 0x09, '1',  '2',  '7', '.', '0', '.', '0', '.', '1', 0x87, 0x04,
                                        127,  0,    0,    1};

static int fail(char *err, size_t errlen, const char *what, int rc)
{
    char m[128];
    mbedtls_strerror(rc, m, sizeof(m));
    snprintf(err, errlen, "%s: %s (-0x%04x)", what, m, (unsigned)-rc);
    return -1;
}

int ktls_server_new(const char *cert_path, struct ktls_server **out, char *err, size_t errlen)
{
    static const char pers[] = "kubemq-kinesis-load tls";
    unsigned char pem[4096];
    mbedtls_x509write_cert w;
    mbedtls_mpi serial;
    int rc;
    *out = NULL;
    struct ktls_server *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    mbedtls_entropy_init(&s->entropy);
    mbedtls_ctr_drbg_init(&s->drbg);
    mbedtls_pk_init(&s->key);
    mbedtls_x509_crt_init(&s->cert);
    mbedtls_ssl_config_init(&s->conf);
    mbedtls_x509write_crt_init(&w);
    mbedtls_mpi_init(&serial);

    rc = mbedtls_ctr_drbg_seed(&s->drbg, mbedtls_entropy_func, &s->entropy, (const unsigned char *)pers,
                               sizeof(pers) - 1);
    if (rc != 0) {
        rc = fail(err, errlen, "drbg seed", rc);
        goto out;
    }
    rc = mbedtls_pk_setup(&s->key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
    if (rc == 0)
        rc = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(s->key), mbedtls_ctr_drbg_random,
                                 &s->drbg);
    if (rc != 0) {
        rc = fail(err, errlen, "key generation", rc);
        goto out;
    }
    mbedtls_x509write_crt_set_version(&w, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&w, &s->key);
    mbedtls_x509write_crt_set_issuer_key(&w, &s->key);
    rc = mbedtls_mpi_fill_random(&serial, 16, mbedtls_ctr_drbg_random, &s->drbg);
    if (rc == 0)
        rc = mbedtls_mpi_set_bit(&serial, 126, 0); /* positive, 16 bytes at most */
    if (rc == 0)
        rc = mbedtls_x509write_crt_set_serial(&w, &serial);
    if (rc == 0)
        rc = mbedtls_x509write_crt_set_subject_name(&w, "CN=localhost,O=kubemq-kinesis-load");
    if (rc == 0)
        rc = mbedtls_x509write_crt_set_issuer_name(&w, "CN=localhost,O=kubemq-kinesis-load");
    if (rc == 0)
        rc = mbedtls_x509write_crt_set_validity(&w, "20200101000000", "20491231235959");
    /* Its own trust anchor: a self-signed CA certificate that is also the leaf. */
    if (rc == 0)
        rc = mbedtls_x509write_crt_set_basic_constraints(&w, 1, 0);
    if (rc == 0)
        rc = mbedtls_x509write_crt_set_subject_key_identifier(&w);
    if (rc == 0)
        rc = mbedtls_x509write_crt_set_extension(&w, MBEDTLS_OID_SUBJECT_ALT_NAME,
                                                 MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), 0, san_der,
                                                 sizeof(san_der));
    if (rc == 0)
        rc = mbedtls_x509write_crt_pem(&w, pem, sizeof(pem), mbedtls_ctr_drbg_random, &s->drbg);
    if (rc == 0)
        rc = mbedtls_x509_crt_parse(&s->cert, pem, strlen((char *)pem) + 1);
    if (rc != 0) {
        rc = fail(err, errlen, "certificate", rc);
        goto out;
    }
    FILE *f = fopen(cert_path, "w");
    if (!f || fputs((char *)pem, f) < 0 || fclose(f) != 0) {
        if (f)
            fclose(f);
        snprintf(err, errlen, "cannot write %s", cert_path);
        rc = -1;
        goto out;
    }
    rc = mbedtls_ssl_config_defaults(&s->conf, MBEDTLS_SSL_IS_SERVER, MBEDTLS_SSL_TRANSPORT_STREAM,
                                     MBEDTLS_SSL_PRESET_DEFAULT);
    if (rc == 0) {
        mbedtls_ssl_conf_rng(&s->conf, mbedtls_ctr_drbg_random, &s->drbg);
        mbedtls_ssl_conf_authmode(&s->conf, MBEDTLS_SSL_VERIFY_NONE);
        rc = mbedtls_ssl_conf_own_cert(&s->conf, &s->cert, &s->key);
    }
    if (rc != 0) {
        rc = fail(err, errlen, "ssl config", rc);
        goto out;
    }
    *out = s;
out:
    mbedtls_x509write_crt_free(&w);
    mbedtls_mpi_free(&serial);
    if (rc != 0)
        ktls_server_free(s);
    return rc == 0 ? 0 : -1;
}

void ktls_server_free(struct ktls_server *s)
{
    if (!s)
        return;
    mbedtls_ssl_config_free(&s->conf);
    mbedtls_x509_crt_free(&s->cert);
    mbedtls_pk_free(&s->key);
    mbedtls_ctr_drbg_free(&s->drbg);
    mbedtls_entropy_free(&s->entropy);
    free(s);
}

/* ---- memory BIO ----------------------------------------------------------------- */
static int bio_send(void *ctx, const unsigned char *p, size_t n)
{
    struct ktls_conn *c = ctx;
    return kk_buf_append(&c->out, p, n) == 0 ? (int)n : MBEDTLS_ERR_SSL_ALLOC_FAILED;
}

static int bio_recv(void *ctx, unsigned char *p, size_t n)
{
    struct ktls_conn *c = ctx;
    size_t have = c->in.len - c->in_off;
    if (have == 0)
        return MBEDTLS_ERR_SSL_WANT_READ;
    if (n > have)
        n = have;
    memcpy(p, c->in.base + c->in_off, n);
    c->in_off += n;
    return (int)n;
}

struct ktls_conn *ktls_conn_new(struct ktls_server *s)
{
    struct ktls_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    mbedtls_ssl_init(&c->ssl);
    kk_buf_init(&c->in, TLS_IN_MAX);
    kk_buf_init(&c->out, TLS_OUT_MAX);
    if (mbedtls_ssl_setup(&c->ssl, &s->conf) != 0) {
        ktls_conn_free(c);
        return NULL;
    }
    mbedtls_ssl_set_bio(&c->ssl, c, bio_send, bio_recv, NULL);
    return c;
}

void ktls_conn_free(struct ktls_conn *c)
{
    if (!c)
        return;
    mbedtls_ssl_free(&c->ssl);
    kk_buf_free(&c->in);
    kk_buf_free(&c->out);
    free(c);
}

struct kk_buf *ktls_out(struct ktls_conn *c)
{
    return &c->out;
}

bool ktls_established(const struct ktls_conn *c)
{
    return c->established;
}

int ktls_input(struct ktls_conn *c, const char *p, size_t n,
               bool (*on_plain)(void *user, const char *p, size_t n), void *user)
{
    /* One record's plaintext at most; the loop is single-threaded. */
    static unsigned char plain[MBEDTLS_SSL_IN_CONTENT_LEN];
    int rc = 0;
    if (n && kk_buf_append(&c->in, p, n) != 0)
        return -1;
    if (!c->established) {
        int r = mbedtls_ssl_handshake(&c->ssl);
        if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE)
            goto out;
        if (r != 0) {
            rc = -1;
            goto out;
        }
        c->established = true;
    }
    for (;;) {
        int r = mbedtls_ssl_read(&c->ssl, plain, sizeof(plain));
        if (r > 0) {
            if (!on_plain(user, (const char *)plain, (size_t)r))
                break;
            continue;
        }
        if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE)
            break;
        rc = r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || r == 0 ? 1 : -1;
        break;
    }
out:
    if (c->in_off == c->in.len) {
        kk_buf_reset(&c->in);
        c->in_off = 0;
    } else if (c->in_off > 0) {
        kk_buf_consume(&c->in, c->in_off);
        c->in_off = 0;
    }
    return rc;
}

int ktls_write(struct ktls_conn *c, const char *p, size_t n)
{
    while (n > 0) {
        int r = mbedtls_ssl_write(&c->ssl, (const unsigned char *)p, n);
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

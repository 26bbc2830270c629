/* Server-side TLS for the fake Kinesis (private to bench/load).
 *
 * mbedTLS 2.28 over memory buffers: the caller owns the socket and moves
 * ciphertext in (ktls_input) and out (the conn's `out` buffer, which it
 * writes to the socket and resets).  The server key (EC P-256) and a
 * self-signed certificate for DNS:localhost and DNS:127.0.0.1 (mbedTLS
 * clients match DNS names only) are generated at start; the certificate is
 * written as PEM to a file for clients to trust (tls_ca_file).
 */
#ifndef KK_BENCH_TLS_H
#define KK_BENCH_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "kk/buf.h"

struct ktls_server;

/* Generates the key and certificate, writes the certificate PEM to
 * cert_path, prepares the server config.  0, or -1 with a message in err. */
int ktls_server_new(const char *cert_path, struct ktls_server **out, char *err, size_t errlen);
void ktls_server_free(struct ktls_server *s);

/* One TLS session.  Opaque; allocated by ktls_conn_new, freed by
 * ktls_conn_free (NULL is fine). */
struct ktls_conn;
struct ktls_conn *ktls_conn_new(struct ktls_server *s);
void ktls_conn_free(struct ktls_conn *c);

/* Ciphertext waiting to go to the peer (handshake records, close_notify,
 * encrypted replies).  The caller writes and then resets or takes it
 * (taking: copy the struct, then kk_buf_init the original). */
struct kk_buf *ktls_out(struct ktls_conn *c);

/* Feeds ciphertext from the socket; runs the handshake, then calls
 * on_plain(user, p, n) for each decrypted chunk (p valid during the call
 * only).  on_plain returns false to stop (connection closing).  Returns 0,
 * 1 when the peer sent close_notify, or -1 on a TLS error. */
int ktls_input(struct ktls_conn *c, const char *p, size_t n,
               bool (*on_plain)(void *user, const char *p, size_t n), void *user);

/* Encrypts n plaintext bytes into ktls_out.  0 or -1. */
int ktls_write(struct ktls_conn *c, const char *p, size_t n);

/* True once the handshake finished. */
bool ktls_established(const struct ktls_conn *c);

#endif

/* Error space of kubemq-kinesis.
 *
 * Every fallible function returns int: 0 on success or a negative code.
 * Codes from libuv (negative errno, UV_E*) pass through unchanged; our own
 * codes live below KK_ERR_BASE so the two spaces never collide.
 * kk_strerror() names both.  Adapters for mbedTLS, nghttp2, llhttp and
 * protobuf-c translate at the boundary (see the module that owns each).
 */
#ifndef KK_ERR_H
#define KK_ERR_H

#define KK_ERR_BASE (-10000)

/* XX(name, message).  Order is ABI for nothing: add freely. */
#define KK_ERR_MAP(XX)                                                   \
    XX(NOMEM, "out of memory")                                           \
    XX(INVAL, "invalid argument")                                        \
    XX(TOOBIG, "size limit exceeded")                                    \
    XX(PARSE, "malformed input")                                         \
    XX(CONFIG, "invalid configuration")                                  \
    XX(TLS, "TLS failure")                                               \
    XX(TLS_VERIFY, "TLS certificate verification failed")                \
    XX(HTTP, "HTTP protocol error")                                      \
    XX(H2, "HTTP/2 protocol error")                                      \
    XX(GRPC, "gRPC call failed")                                         \
    XX(TIMEOUT, "timed out")                                             \
    XX(CLOSED, "connection closed")                                      \
    XX(CANCELED, "canceled")                                             \
    XX(BUSY, "resource busy")                                            \
    XX(NOTFOUND, "not found")                                            \
    XX(CREDS, "no AWS credentials")                                      \
    XX(AWS, "AWS service error")                                         \
    XX(SHUTDOWN, "shutting down")

enum kk_err {
    KK_OK = 0,
    KK__ERR_FIRST = KK_ERR_BASE,
#define KK__ERR_ENUM(name, msg) KK_E##name,
    KK_ERR_MAP(KK__ERR_ENUM)
#undef KK__ERR_ENUM
    KK__ERR_LAST
};

/* Static text for any code: ours, libuv's, or "unknown error". Never NULL. */
const char *kk_strerror(int code);

/* Short symbolic name ("KK_ETIMEOUT", "ECONNRESET", ...). Never NULL. */
const char *kk_errname(int code);

#endif

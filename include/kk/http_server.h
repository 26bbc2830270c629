/* A small HTTP/1.1 server on the loop (llhttp) for the gateway's API.
 * Bounded request size, keep-alive, one request at a time per connection.
 *
 * The handler gets an exchange; it must call kk_http_reply exactly once,
 * now or later (asynchronous handlers, e.g. POST /bindings/request).  If the
 * client went away meanwhile, the reply is dropped and the exchange freed.
 */
#ifndef KK_HTTP_SERVER_H
#define KK_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct kk_http_server;
struct kk_http_exchange;

struct kk_http_request_view {
    const char *method; /* "GET", "POST", ... */
    const char *path;   /* without query string */
    const char *query;  /* after '?', or "" */
    const char *body;
    size_t body_len;
};

typedef void (*kk_http_handler)(void *user, struct kk_http_exchange *ex,
                                const struct kk_http_request_view *req);

/* Listens on host:port (an IPv4 or IPv6 literal; port 0 picks one, see
 * kk_http_server_port).  Requests over max_body bytes get 413, heads over
 * 8 KiB 431, malformed requests 400 (then the connection closes), all
 * without reaching the handler.  Expect: 100-continue is answered. */
int kk_http_server_start(uv_loop_t *loop, const char *host, uint16_t port, size_t max_body,
                         kk_http_handler handler, void *user, struct kk_http_server **out);
uint16_t kk_http_server_port(const struct kk_http_server *srv);

/* A connection waiting for (the rest of) a request longer than ms is closed;
 * default 60000 (0 restores it).  Applies to waits that start afterwards.
 * At most 256 connections are kept; more are accepted and closed. */
void kk_http_server_set_idle_timeout(struct kk_http_server *srv, uint32_t ms);

/* Sends the response (Content-Length framing) and frees ex. body is copied. */
void kk_http_reply(struct kk_http_exchange *ex, int status, const char *content_type,
                   const char *body, size_t len);

/* Closes the listener and every connection; outstanding exchanges stay
 * valid until replied to.  done runs once when every handle is closed. */
void kk_http_server_close(struct kk_http_server *srv, void (*done)(void *arg), void *arg);

#endif

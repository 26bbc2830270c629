/* The Request / Response JSON of kubemq-targets (connector-behaviour.md §3).
 *
 * Request  {"metadata":{k:v,...},"data":"<base64>"}: decoded into a
 *          kk_request whose strings all live in one allocation.
 * Response {"metadata":{sorted},"data":"<base64>"|null,"is_error":b,"error":"..."}
 *          encoded byte-compatible with Go encoding/json (sorted keys, HTML
 *          escaping of < > &, standard base64, "metadata":{} when empty).
 */
#ifndef KK_REQUEST_H
#define KK_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kk/buf.h"

struct kk_kv {
    const char *key;
    const char *value;
};

struct kk_request {
    struct kk_kv *md;     /* sorted by key, unique keys */
    size_t n_md;
    const uint8_t *data;  /* decoded payload; NULL when absent/null */
    size_t data_len;
    void *_mem;           /* the single allocation behind everything above */
};

/* Parses body as Request JSON.  On failure returns KK_EPARSE (KK_ENOMEM if
 * the one allocation fails) and writes a message (without the "invalid
 * request format, " prefix) to err; req is then zeroed.  Like Go: field names
 * match case-insensitively, unknown fields are skipped, metadata null values
 * become "", a JSON null body gives an empty request, and an empty body
 * gives "empty request".  data "" gives data non-NULL with data_len 0.
 * Cost: two passes over body, one malloc, no copy of the base64 text. */
int kk_request_parse(struct kk_request *req, const char *body, size_t len, char *err, size_t errlen);

/* do_not_parse_payload: metadata empty, data = body (copied). */
int kk_request_raw(struct kk_request *req, const char *body, size_t len);

/* Returns a new request = req's metadata with extra merged in (extra wins
 * only for keys req lacks or has empty: the binding's `metadata` property
 * fills gaps), and a copy of req's data: out owns everything (one allocation)
 * and req may be freed right after.  extra need not be sorted; among equal
 * extra keys the last wins.  Used by the metadata middleware. */
int kk_request_merge_md(struct kk_request *out, const struct kk_request *req, const struct kk_kv *extra,
                        size_t n_extra);

/* parse (or raw when raw is true) with extra metadata merged in the same
 * single allocation, with merge_md's rule (request keys win unless empty):
 * equals parse/raw + merge_md without copying the data a second time.  For
 * the metadata middleware on the hot path. */
int kk_request_decode(struct kk_request *req, const char *body, size_t len, bool raw,
                      const struct kk_kv *extra, size_t n_extra, char *err, size_t errlen);

void kk_request_free(struct kk_request *req);

/* The value of key when present and non-empty, else NULL (kubemq-targets
 * treats an empty value as absent). */
const char *kk_request_get(const struct kk_request *req, const char *key);

/* Appends Response JSON to out.  md may be NULL/0 ("metadata":{}), need not
 * be sorted; data NULL gives "data":null. */
int kk_response_json(struct kk_buf *out, const struct kk_kv *md, size_t n_md, const uint8_t *data,
                     size_t data_len, bool is_error, const char *error);

/* Appends s as a JSON string literal with Go's escaping (incl. \u003c etc.). */
int kk_json_string(struct kk_buf *out, const char *s, size_t len);

#endif

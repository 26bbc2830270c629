/* Request JSON bodies ({"metadata":{...},"data":"<base64>"}) for each
 * method, built once before a run so sending copies no JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kk/b64.h"
#include "kk/buf.h"
#include "kk/err.h"
#include "load.h"

static int append_b64(struct kk_buf *b, const uint8_t *p, size_t n)
{
    char *d = kk_buf_reserve(b, kk_b64_encoded_len(n));
    if (!d)
        return KK_ENOMEM;
    kk_buf_commit(b, kk_b64_encode(d, p, n));
    return 0;
}

int build_request_body(const struct load_opts *o, uint32_t key, char **out, size_t *len)
{
    struct kk_buf b, inner;
    int rc = 0;
    uint8_t *raw = malloc(o->payload_bytes + 1);
    kk_buf_init(&b, (size_t)1 << 30);
    kk_buf_init(&inner, (size_t)1 << 30);
    if (!raw) {
        rc = KK_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < o->payload_bytes; i++)
        raw[i] = (uint8_t)('a' + (i + key) % 26);
    const char *m = o->method;
    rc = kk_buf_printf(&b, "{\"metadata\":{\"method\":\"%s\"", m);
    if (!rc && strcmp(m, "list_streams") != 0)
        rc = kk_buf_printf(&b, ",\"stream_name\":\"%s\"", o->stream);
    if (rc)
        goto out;
    if (strcmp(m, "put_record") == 0) {
        rc = kk_buf_printf(&b, ",\"partition_key\":\"pk-%u\"},\"data\":\"", key);
        if (!rc)
            rc = append_b64(&b, raw, o->payload_bytes);
        if (!rc)
            rc = kk_buf_append_str(&b, "\"}");
    } else if (strcmp(m, "put_records") == 0) {
        /* data = base64 of {"<partition key>":"<base64 record>",...} */
        rc = kk_buf_append_str(&inner, "{");
        for (uint32_t i = 0; !rc && i < o->batch; i++) {
            rc = kk_buf_printf(&inner, "%s\"pk-%u-%u\":\"", i ? "," : "", key, i);
            if (!rc)
                rc = append_b64(&inner, raw, o->payload_bytes);
            if (!rc)
                rc = kk_buf_append_str(&inner, "\"");
        }
        if (!rc)
            rc = kk_buf_append_str(&inner, "}");
        if (!rc)
            rc = kk_buf_append_str(&b, "},\"data\":\"");
        if (!rc)
            rc = append_b64(&b, (const uint8_t *)inner.base, inner.len);
        if (!rc)
            rc = kk_buf_append_str(&b, "\"}");
    } else if (strcmp(m, "get_shard_iterator") == 0) {
        rc = kk_buf_append_str(
            &b, ",\"shard_id\":\"shardId-000000000000\",\"shard_iterator_type\":\"TRIM_HORIZON\"},"
                "\"data\":null}");
    } else if (strcmp(m, "get_records") == 0) {
        rc = kk_buf_append_str(&b, ",\"shard_iterator_id\":\"AAAAAAAAAAFakeIteratorFromKubemqKinesisLoad\","
                                   "\"limit\":\"100\"},\"data\":null}");
    } else if (strcmp(m, "create_stream") == 0) {
        rc = kk_buf_append_str(&b, ",\"shard_count\":\"1\"},\"data\":null}");
    } else {
        rc = kk_buf_append_str(&b, "},\"data\":null}");
    }
    if (!rc && kk_buf_append(&b, "", 1) == 0) {
        *out = b.base;
        *len = b.len - 1;
        b.base = NULL;
    }
out:
    free(raw);
    kk_buf_free(&inner);
    kk_buf_free(&b);
    return rc;
}

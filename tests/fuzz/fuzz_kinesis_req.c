/* Fuzz target: Kinesis request validation and body (kk_kinesis_req_parse,
 * kk_kinesis_body, and the put_records retry cycle in include/kk/kinesis.h).
 *
 * Input: a Request JSON (parsed with kk_request_parse first, as the binding
 * does).  Invariants: validation either fails with a message or succeeds;
 * a valid request gives a body that is strict JSON (no raw control byte,
 * cJSON parses all of it to an object) carrying the request's stream name,
 * partition key and data unchanged; for put_records the body lists every
 * entry, a partial-failure answer leaves exactly the failed entries pending
 * and the next body lists only those, and the combined output lists every
 * entry in request order with the right FailedRecordCount.  Validation also
 * runs with small limits (the size-limit paths). */
#include <cjson/cJSON.h>
#include <string.h>

#include "fuzz.h"
#include "kk/b64.h"
#include "kk/buf.h"
#include "kk/err.h"
#include "kk/kinesis.h"
#include "kk/request.h"

static cJSON *strict_json(const struct kk_buf *b)
{
    const char *end = NULL;

    for (size_t i = 0; i < b->len; i++)
        FZ_CHECK((unsigned char)b->base[i] >= 0x20);
    cJSON *root = cJSON_ParseWithLengthOpts(b->base, b->len, &end, 0);
    FZ_CHECK(cJSON_IsObject(root) && end == b->base + b->len);
    return root;
}

/* s as Go's encoder writes it: each byte of an invalid UTF-8 sequence
 * becomes U+FFFD (put_records keys come from cJSON, which keeps such bytes,
 * while Go's decoder and our kk_json_string replace them).  Heap. */
static char *go_utf8(const char *s)
{
    size_t n = strlen(s), o = 0;
    char *out = malloc(3 * n + 1);
    const unsigned char *p = (const unsigned char *)s, *end = p + n;

    FZ_CHECK(out);
    while (p < end) {
        size_t l = fz_utf8_len(p, end);
        if (l) {
            memcpy(out + o, p, l);
            o += l;
            p += l;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            p++;
        }
    }
    out[o] = '\0';
    return out;
}

static void check_str(const cJSON *o, const char *name, const char *want)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!want) {
        FZ_CHECK(v == NULL);
        return;
    }
    FZ_CHECK(cJSON_IsString(v));
    FZ_CHECK(strcmp(v->valuestring, want) == 0);
}

/* Answers the last put_records body: entries at odd positions fail. */
static void answer(struct kk_kinesis_req *r, bool fail_odd)
{
    struct kk_buf ans, out;
    bool has_data;
    char *it;
    size_t failed, want_failed = 0;

    kk_buf_init(&ans, (size_t)1 << 24);
    kk_buf_init(&out, (size_t)1 << 24);
    FZ_CHECK(kk_buf_append_str(&ans, "{\"FailedRecordCount\":0,\"Records\":[") == 0);
    for (size_t k = 0; k < r->n_sent; k++) {
        if (fail_odd && k % 2)
            FZ_CHECK(kk_buf_printf(&ans,
                                   "%s{\"ErrorCode\":\"ProvisionedThroughputExceededException\","
                                   "\"ErrorMessage\":\"slow <down> %zu\"}",
                                   k ? "," : "", k) == 0);
        else
            FZ_CHECK(kk_buf_printf(&ans, "%s{\"SequenceNumber\":\"4959%zu\",\"ShardId\":\"shardId-%zu\"}",
                                   k ? "," : "", k, k) == 0);
        want_failed += fail_odd && k % 2;
    }
    FZ_CHECK(kk_buf_append_str(&ans, "]}") == 0);
    FZ_CHECK(kk_kinesis_output(r, ans.base, ans.len, &out, &has_data, &it, &failed) == 0);
    FZ_CHECK(failed == want_failed && kk_kinesis_pending(r) == failed);
    FZ_CHECK((kk_kinesis_first_failed(r) == NULL) == (failed == 0));
    free(it);
    kk_buf_free(&ans);
    kk_buf_free(&out);
}

static void check_put_records(struct kk_kinesis_req *r, const cJSON *body)
{
    const cJSON *recs = cJSON_GetObjectItemCaseSensitive(body, "Records");
    struct kk_buf b, out;
    size_t pending;

    FZ_CHECK(r->n_entries > 0 && r->n_sent == r->n_entries);
    FZ_CHECK(cJSON_IsArray(recs) && (size_t)cJSON_GetArraySize(recs) == r->n_entries);
    size_t i = 0;
    for (const cJSON *c = recs->child; c; c = c->next, i++) {
        const struct kk_kinesis_entry *e = &r->entries[i];
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(c, "Data");
        FZ_CHECK(r->sent[i] == i);
        FZ_CHECK(cJSON_IsString(d) && strlen(d->valuestring) == e->b64_len);
        FZ_CHECK(memcmp(d->valuestring, e->b64, e->b64_len) == 0);
        uint8_t *raw = malloc(kk_b64_decoded_max(e->b64_len));
        FZ_CHECK(raw && kk_b64_decode(raw, e->b64, e->b64_len) == (long)e->raw_len);
        free(raw);
        char *key = go_utf8(e->key);
        check_str(c, "PartitionKey", key);
        free(key);
        check_str(c, "ExplicitHashKey", r->explicit_hash_key);
    }
    /* half fail, retry those, then all succeed */
    answer(r, true);
    pending = kk_kinesis_pending(r);
    kk_buf_init(&b, (size_t)1 << 26);
    FZ_CHECK(kk_kinesis_body(r, &b) == 0);
    FZ_CHECK(r->n_sent == pending);
    for (size_t k = 0; k < r->n_sent; k++)
        FZ_CHECK(r->entries[r->sent[k]].state == KK_KENTRY_FAILED && (k == 0 || r->sent[k] > r->sent[k - 1]));
    cJSON_Delete(strict_json(&b));
    answer(r, false);
    FZ_CHECK(kk_kinesis_pending(r) == 0);

    kk_buf_init(&out, (size_t)1 << 26);
    FZ_CHECK(kk_kinesis_put_records_output(r, &out) == 0);
    cJSON *o = strict_json(&out);
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, "FailedRecordCount");
    const cJSON *orecs = cJSON_GetObjectItemCaseSensitive(o, "Records");
    FZ_CHECK(cJSON_IsNumber(f) && f->valuedouble == 0);
    FZ_CHECK(cJSON_IsArray(orecs) && (size_t)cJSON_GetArraySize(orecs) == r->n_entries);
    cJSON_Delete(o);
    kk_buf_free(&out);
    kk_buf_free(&b);
}

static void check_valid(struct kk_kinesis_req *r)
{
    struct kk_buf b;

    FZ_CHECK(r->op >= 0 && r->op < KK_KOP__COUNT);
    FZ_CHECK(kk_kinesis_method_name(r->op) && kk_kinesis_amz_target(r->op));
    kk_buf_init(&b, (size_t)1 << 26);
    FZ_CHECK(kk_kinesis_body(r, &b) == 0);
    cJSON *body = strict_json(&b);
    switch (r->op) {
    case KK_KOP_PUT_RECORD: {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(body, "Data");
        FZ_CHECK(cJSON_IsString(d));
        size_t n = strlen(d->valuestring);
        uint8_t *raw = malloc(kk_b64_decoded_max(n));
        FZ_CHECK(raw && kk_b64_decode(raw, d->valuestring, n) == (long)r->data_len);
        FZ_CHECK(r->data_len == 0 || memcmp(raw, r->data, r->data_len) == 0);
        free(raw);
        check_str(body, "PartitionKey", r->partition_key);
        check_str(body, "StreamName", r->stream);
        check_str(body, "ExplicitHashKey", r->explicit_hash_key);
        break;
    }
    case KK_KOP_PUT_RECORDS:
        check_str(body, "StreamName", r->stream);
        check_put_records(r, body);
        break;
    case KK_KOP_CREATE_STREAM:
    case KK_KOP_DELETE_STREAM:
    case KK_KOP_LIST_SHARDS:
        check_str(body, "StreamName", r->stream);
        break;
    case KK_KOP_GET_SHARD_ITERATOR: {
        check_str(body, "StreamName", r->stream);
        check_str(body, "ShardId", r->shard_id);
        check_str(body, "ShardIteratorType", r->iterator_type);
        const cJSON *ts = cJSON_GetObjectItemCaseSensitive(body, "Timestamp");
        FZ_CHECK((ts != NULL) == r->has_timestamp);
        if (ts) /* epoch seconds with millisecond precision */
            FZ_CHECK(cJSON_IsNumber(ts) && ts->valuedouble >= 0 &&
                     (int64_t)(ts->valuedouble * 1000.0 + (ts->valuedouble >= 0 ? 0.5 : -0.5)) ==
                         r->timestamp_ms);
        break;
    }
    case KK_KOP_GET_RECORDS:
        check_str(body, "ShardIterator", r->shard_iterator);
        break;
    case KK_KOP_LIST_STREAM_CONSUMERS:
        check_str(body, "StreamARN", r->stream_arn);
        break;
    case KK_KOP_CREATE_STREAM_CONSUMER:
        check_str(body, "StreamARN", r->stream_arn);
        check_str(body, "ConsumerName", r->consumer_name);
        break;
    default:
        break;
    }
    cJSON_Delete(body);
    kk_buf_free(&b);
}

int kk_fuzz_kinesis_req(const uint8_t *data, size_t size)
{
    static const struct kk_kinesis_limits def = {KK_KINESIS_MAX_RECORD_BYTES, KK_KINESIS_MAX_REQUEST_BYTES};
    static const struct kk_kinesis_limits small = {48, 96};
    struct kk_request req;
    struct kk_kinesis_req r;
    char err[64], *msg = NULL;
    int rc;

    if (kk_request_parse(&req, (const char *)data, size, err, sizeof(err)) != 0)
        return 0;
    rc = kk_kinesis_req_parse(&r, &req, &def, &msg);
    if (rc == 0) {
        FZ_CHECK(msg == NULL);
        check_valid(&r);
    } else {
        FZ_CHECK(rc == KK_EINVAL || rc == KK_ENOMEM);
        FZ_CHECK(rc == KK_ENOMEM || (msg && msg[0]));
    }
    kk_kinesis_req_free(&r);
    free(msg);
    msg = NULL;

    rc = kk_kinesis_req_parse(&r, &req, &small, &msg);
    FZ_CHECK(rc == 0 ? msg == NULL : msg != NULL);
    kk_kinesis_req_free(&r);
    free(msg);
    kk_request_free(&req);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return kk_fuzz_kinesis_req(data, size);
}

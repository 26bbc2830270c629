/* Fuzz target: Kinesis answers (kk_kinesis_output,
 * kk_kinesis_put_records_output, kk_kinesis_error_parse in
 * include/kk/kinesis.h).  The answer body comes from the network, so every
 * byte of it is untrusted.
 *
 * Input: byte 0 the operation, byte 1 mode (bit 0: error answer; bit 1: the
 * x-amzn-ErrorType header is the first line of the rest), bytes 2-3 the HTTP
 * status (big-endian, mod 600), then the body.
 * Invariants, 2xx: success or KK_EPARSE; the output is strict JSON (cJSON
 * parses all of it, no raw control byte) — it goes verbatim into the
 * Response "data"; get_shard_iterator returns the body's ShardIterator;
 * put_records keeps pending == failed <= entries and its combined output
 * agrees (FailedRecordCount, one record per entry).
 * Error answers: always a code and a "<Code>: <message>" text, the class of
 * a known code agrees with kk_kinesis_classify, unknown ones follow the
 * status (5xx and 429 retryable). */
#include <cjson/cJSON.h>
#include <string.h>

#include "fuzz.h"
#include "kk/buf.h"
#include "kk/err.h"
#include "kk/kinesis.h"
#include "kk/request.h"

/* One valid request per operation (put_records: three entries). */
static const char *const requests[KK_KOP__COUNT] = {
    [KK_KOP_LIST_STREAMS] = "{\"metadata\":{\"method\":\"list_streams\"}}",
    [KK_KOP_LIST_STREAM_CONSUMERS] =
        "{\"metadata\":{\"method\":\"list_stream_consumers\",\"stream_arn\":\"a\"}}",
    [KK_KOP_CREATE_STREAM] = "{\"metadata\":{\"method\":\"create_stream\",\"stream_name\":\"s\"}}",
    [KK_KOP_DELETE_STREAM] = "{\"metadata\":{\"method\":\"delete_stream\",\"stream_name\":\"s\"}}",
    [KK_KOP_PUT_RECORD] =
        "{\"metadata\":{\"method\":\"put_record\",\"stream_name\":\"s\",\"partition_key\":\"k\"},"
        "\"data\":\"aGk=\"}",
    /* data = {"k1":"QQ==","k2":"Qg==","k3":"Qw=="} */
    [KK_KOP_PUT_RECORDS] = "{\"metadata\":{\"method\":\"put_records\",\"stream_name\":\"s\"},"
                           "\"data\":\"eyJrMSI6IlFRPT0iLCJrMiI6IlFnPT0iLCJrMyI6IlF3PT0ifQ==\"}",
    [KK_KOP_GET_RECORDS] =
        "{\"metadata\":{\"method\":\"get_records\",\"stream_name\":\"s\",\"shard_iterator_id\":\"it\"}}",
    [KK_KOP_GET_SHARD_ITERATOR] = "{\"metadata\":{\"method\":\"get_shard_iterator\",\"stream_name\":\"s\","
                                  "\"shard_id\":\"sh\",\"shard_iterator_type\":\"LATEST\"}}",
    [KK_KOP_LIST_SHARDS] = "{\"metadata\":{\"method\":\"list_shards\",\"stream_name\":\"s\"}}",
    [KK_KOP_CREATE_STREAM_CONSUMER] =
        "{\"metadata\":{\"method\":\"create_stream_consumer\",\"stream_arn\":\"a\","
        "\"consumer_name\":\"c\"}}",
};

static cJSON *strict_json(const struct kk_buf *b)
{
    const char *end = NULL;

    for (size_t i = 0; i < b->len; i++)
        FZ_CHECK((unsigned char)b->base[i] >= 0x20);
    cJSON *root = cJSON_ParseWithLengthOpts(b->base, b->len, &end, 0);
    FZ_CHECK(cJSON_IsObject(root) && end == b->base + b->len);
    return root;
}

static void check_error(int status, const char *body, size_t len, const char *hdr)
{
    struct kk_kinesis_error e;
    bool thr;

    FZ_CHECK(kk_kinesis_error_parse(status, body, len, hdr, &e) == 0);
    FZ_CHECK(e.code && e.code[0] && e.text && e.text[0]);
    FZ_CHECK(e.cls >= KK_KCLASS_OK && e.cls <= KK_KCLASS_AUTH);
    bool generic =
        strcmp(e.code, "Unknown") == 0 || strcmp(e.code, "HTTP4xx") == 0 || strcmp(e.code, "HTTP5xx") == 0;
    if (!generic) {
        FZ_CHECK(kk_kinesis_classify(e.code, status, &thr) == e.cls);
        FZ_CHECK(thr == e.throttle);
        FZ_CHECK(strstr(e.text, e.code) != NULL);
    } else {
        FZ_CHECK(e.cls == (status >= 500 || status == 429 ? KK_KCLASS_RETRYABLE : KK_KCLASS_PERMANENT));
        FZ_CHECK(!e.throttle);
    }
    kk_kinesis_error_free(&e);
    FZ_CHECK(e.text == NULL);
}

int kk_fuzz_kinesis_resp(const uint8_t *data, size_t size)
{
    struct kk_request req;
    struct kk_kinesis_req r;
    struct kk_kinesis_limits lim = {KK_KINESIS_MAX_RECORD_BYTES, KK_KINESIS_MAX_REQUEST_BYTES};
    struct kk_buf out, body;
    char err[128], *msg = NULL, *it = NULL;
    bool has_data;
    size_t failed;

    if (size < 4)
        return 0;
    enum kk_kinesis_op op = (enum kk_kinesis_op)(data[0] % KK_KOP__COUNT);
    int mode = data[1], status = ((int)data[2] << 8 | data[3]) % 600;
    const char *p = (const char *)data + 4;
    size_t n = size - 4;

    if (mode & 1) {
        char *hdr = NULL;
        if (mode & 2) {
            const char *nl = memchr(p, '\n', n);
            size_t hl = nl ? (size_t)(nl - p) : n;
            hdr = strndup(p, hl);
            FZ_CHECK(hdr);
            p += nl ? hl + 1 : hl;
            n -= nl ? hl + 1 : hl;
        }
        check_error(status, p, n, hdr);
        free(hdr);
        return 0;
    }

    FZ_CHECK(kk_request_parse(&req, requests[op], strlen(requests[op]), err, sizeof(err)) == 0);
    FZ_CHECK(kk_kinesis_req_parse(&r, &req, &lim, &msg) == 0);
    kk_buf_init(&body, (size_t)1 << 20);
    kk_buf_init(&out, (size_t)1 << 26);
    FZ_CHECK(kk_kinesis_body(&r, &body) == 0);

    int rc = kk_kinesis_output(&r, p, n, &out, &has_data, &it, &failed);
    if (rc != 0) {
        FZ_CHECK(rc == KK_EPARSE || rc == KK_ENOMEM || rc == KK_ETOOBIG);
        FZ_CHECK(!has_data);
    } else if (op == KK_KOP_PUT_RECORDS) {
        FZ_CHECK(!has_data && failed <= r.n_entries && kk_kinesis_pending(&r) == failed);
        FZ_CHECK((kk_kinesis_first_failed(&r) == NULL) == (failed == 0));
        FZ_CHECK(kk_kinesis_put_records_output(&r, &out) == 0);
        cJSON *o = strict_json(&out);
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, "FailedRecordCount");
        const cJSON *recs = cJSON_GetObjectItemCaseSensitive(o, "Records");
        FZ_CHECK(cJSON_IsNumber(f) && (size_t)f->valuedouble == failed);
        FZ_CHECK(cJSON_IsArray(recs) && (size_t)cJSON_GetArraySize(recs) == r.n_entries);
        cJSON_Delete(o);
    } else if (op == KK_KOP_CREATE_STREAM || op == KK_KOP_DELETE_STREAM) {
        FZ_CHECK(!has_data && out.len == 0);
    } else {
        FZ_CHECK(has_data);
        cJSON_Delete(strict_json(&out));
        if (op == KK_KOP_GET_SHARD_ITERATOR) {
            cJSON *in = cJSON_ParseWithLength(p, n);
            const cJSON *s = cJSON_GetObjectItemCaseSensitive(in, "ShardIterator");
            FZ_CHECK(cJSON_IsString(s) ? it && strcmp(it, s->valuestring) == 0 : it == NULL);
            cJSON_Delete(in);
        }
    }
    free(it);
    kk_buf_free(&out);
    kk_buf_free(&body);
    kk_kinesis_req_free(&r);
    kk_request_free(&req);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return kk_fuzz_kinesis_resp(data, size);
}

/* Unit tests of src/kinesis/ops.c: validation texts, request bodies,
 * output JSON (aws-sdk-go v1 shapes), error normalisation, PutRecords
 * partial-failure bookkeeping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kk/b64.h"
#include "kk/buf.h"
#include "kk/err.h"
#include "kk/kinesis.h"
#include "kk/request.h"

static const struct kk_kinesis_limits lim = {KK_KINESIS_MAX_RECORD_BYTES, KK_KINESIS_MAX_REQUEST_BYTES};

struct fx {
    struct kk_request req;
    struct kk_kinesis_req r;
    char *err;
    int rc;
};

/* Parses a Request JSON, then validates it as the target would. */
static void load(struct fx *f, const char *json, const struct kk_kinesis_limits *l)
{
    char perr[256];
    memset(f, 0, sizeof(*f));
    int rc = kk_request_parse(&f->req, json, strlen(json), perr, sizeof(perr));
    if (rc != 0)
        fail_msg("request parse: %s", perr);
    f->rc = kk_kinesis_req_parse(&f->r, &f->req, l ? l : &lim, &f->err);
}

static void unload(struct fx *f)
{
    kk_kinesis_req_free(&f->r);
    kk_request_free(&f->req);
    free(f->err);
}

static void expect_error(const char *json, const char *text)
{
    struct fx f;
    load(&f, json, NULL);
    assert_int_equal(f.rc, KK_EINVAL);
    assert_non_null(f.err);
    assert_string_equal(f.err, text);
    unload(&f);
}

static void expect_body(const char *json, const char *body)
{
    struct fx f;
    struct kk_buf b;
    load(&f, json, NULL);
    if (f.rc != 0)
        fail_msg("validation: %s", f.err);
    kk_buf_init(&b, 1 << 20);
    assert_int_equal(kk_kinesis_body(&f.r, &b), 0);
    assert_int_equal(kk_buf_append(&b, "", 1), 0);
    assert_string_equal(b.base, body);
    kk_buf_free(&b);
    unload(&f);
}

static void test_unknown_method(void **state)
{
    (void)state;
    const char *all = "invalid method type, method type should be one of the following: :list_streams, "
                      ":list_stream_consumers, :create_stream, :delete_stream, :put_record, :put_records, "
                      ":get_records, :get_shard_iterator, :list_shards, :create_stream_consumer,";
    expect_error("{\"metadata\":{\"method\":\"bogus\",\"stream_name\":\"s\"}}", all);
    expect_error("{\"metadata\":{\"method\":\"PUT_RECORD\"}}", all);
}

static void test_validation_texts(void **state)
{
    (void)state;
    const char *nostream = "error parsing stream_name, value of key stream_name cannot be empty";
    const char *need_stream[] = {"create_stream", "delete_stream", "put_record",
                                 "put_records",   "get_records",   "get_shard_iterator",
                                 "list_shards",   "put",           "create"};
    for (size_t i = 0; i < sizeof(need_stream) / sizeof(need_stream[0]); i++) {
        char js[256];
        snprintf(js, sizeof(js), "{\"metadata\":{\"method\":\"%s\",\"stream_name\":\"\"},\"data\":\"YQ==\"}",
                 need_stream[i]);
        expect_error(js, nostream);
    }
    expect_error("{\"metadata\":{\"method\":\"put_record\",\"stream_name\":\"s\"},\"data\":\"YQ==\"}",
                 "partition_key is required when using put_record,error parsing partition_key, value of key "
                 "partition_key cannot be empty");
    expect_error(
        "{\"metadata\":{\"method\":\"put_record\",\"stream_name\":\"s\",\"partition_key\":\"k\"}}",
        "InvalidParameter: 1 validation error(s) found.\n- missing required field, PutRecordInput.Data.\n");
    expect_error(
        "{\"metadata\":{\"method\":\"get_shard_iterator\",\"stream_name\":\"s\"}}",
        "shard_id is required when using get_shard_iterator error parsing shard_id, value of key shard_id "
        "cannot be empty");
    expect_error(
        "{\"metadata\":{\"method\":\"get_shard_iterator\",\"stream_name\":\"s\",\"shard_id\":\"x\"}}",
        "shard_iterator_type is required when using get_shard_iterator,error parsing shard_iterator_type, "
        "value of key shard_iterator_type cannot be empty");
    expect_error(
        "{\"metadata\":{\"method\":\"get_records\",\"stream_name\":\"s\"}}",
        "shard_iterator_id is required when using get_records,error parsing shard_iterator_id, value of "
        "key shard_iterator_id cannot be empty");
    expect_error("{\"metadata\":{\"method\":\"get_records\",\"shard_iterator_id\":\"it\"}}", nostream);
    expect_error(
        "{\"metadata\":{\"method\":\"list_stream_consumers\"}}",
        "stream_arn error is required when using list_stream_consumers,parsing stream_arn, value of key "
        "stream_arn cannot be empty");
    expect_error(
        "{\"metadata\":{\"method\":\"create_stream_consumer\",\"consumer_name\":\"c\"}}",
        "stream_arn error is required when using create_stream_consumer,parsing stream_arn, value of key "
        "stream_arn cannot be empty");
    expect_error(
        "{\"metadata\":{\"method\":\"create_stream_consumer\",\"stream_arn\":\"a\"}}",
        "consumer_name error is required when using create_stream_consumer,parsing consumer_name, value "
        "of key consumer_name cannot be empty");
    expect_error("{\"metadata\":{\"method\":\"get_shard_iterator\",\"stream_name\":\"s\",\"shard_id\":\"x\","
                 "\"shard_iterator_type\":\"AT_SEQUENCE_NUMBER\"}}",
                 "starting_sequence_number is required when using shard_iterator_type AT_SEQUENCE_NUMBER");
    expect_error("{\"metadata\":{\"method\":\"get_shard_iterator\",\"stream_name\":\"s\",\"shard_id\":\"x\","
                 "\"shard_iterator_type\":\"AT_TIMESTAMP\",\"timestamp\":\"yesterday\"}}",
                 "error parsing timestamp, yesterday is neither RFC 3339 nor epoch seconds");
}

static void test_put_defaults(void **state)
{
    (void)state;
    struct fx f;
    /* No method: put = put_record with a generated key; "stream" alias. */
    load(&f, "{\"metadata\":{\"stream\":\"alias\"},\"data\":\"aGk=\"}", NULL);
    assert_int_equal(f.rc, 0);
    assert_int_equal(f.r.op, KK_KOP_PUT_RECORD);
    assert_string_equal(f.r.stream, "alias");
    assert_int_equal(strlen(f.r.partition_key), 16);
    assert_int_equal(strspn(f.r.partition_key, "0123456789abcdef"), 16);
    char first[17];
    strcpy(first, f.r.partition_key);
    unload(&f);
    load(&f, "{\"metadata\":{\"method\":\"put\",\"stream\":\"alias\"},\"data\":\"aGk=\"}", NULL);
    assert_int_equal(f.rc, 0);
    assert_string_not_equal(f.r.partition_key, first); /* random, so records spread */
    unload(&f);
    /* stream_name wins over stream. */
    load(&f,
         "{\"metadata\":{\"method\":\"put\",\"stream\":\"b\",\"stream_name\":\"a\",\"partition_key\":\"k\"},"
         "\"data\":\"aGk=\"}",
         NULL);
    assert_int_equal(f.rc, 0);
    assert_string_equal(f.r.stream, "a");
    assert_string_equal(f.r.partition_key, "k");
    unload(&f);
    /* create = create_stream; shard_count default 1, invalid -> 1. */
    load(&f, "{\"metadata\":{\"method\":\"create\",\"stream\":\"s\"}}", NULL);
    assert_int_equal(f.rc, 0);
    assert_int_equal(f.r.op, KK_KOP_CREATE_STREAM);
    assert_int_equal(f.r.shard_count, 1);
    unload(&f);
    load(&f, "{\"metadata\":{\"method\":\"create_stream\",\"stream_name\":\"s\",\"shard_count\":\"x3\"}}",
         NULL);
    assert_int_equal(f.r.shard_count, 1);
    unload(&f);
    /* An empty (non-nil) payload passes, as in the SDK. */
    load(&f,
         "{\"metadata\":{\"method\":\"put_record\",\"stream_name\":\"s\",\"partition_key\":\"k\"},\"data\":"
         "\"\"}",
         NULL);
    unload(&f);
}

static void test_put_limits(void **state)
{
    (void)state;
    expect_error(
        "{\"metadata\":{\"stream\":\"s\",\"explicit_hash_key\":\"340282366920938463463374607431768211456\"},"
        "\"data\":\"aGk=\"}",
        "invalid explicit_hash_key, must be a decimal integer from 0 to 2^128-1");
    expect_error("{\"metadata\":{\"stream\":\"s\",\"explicit_hash_key\":\"12a\"},\"data\":\"aGk=\"}",
                 "invalid explicit_hash_key, must be a decimal integer from 0 to 2^128-1");
    expect_body("{\"metadata\":{\"stream\":\"s\",\"partition_key\":\"k\",\"explicit_hash_key\":"
                "\"340282366920938463463374607431768211455\"},\"data\":\"aGk=\"}",
                "{\"Data\":\"aGk=\",\"ExplicitHashKey\":\"340282366920938463463374607431768211455\","
                "\"PartitionKey\":\"k\",\"StreamName\":\"s\"}");
    /* 257-char key */
    char key[258];
    memset(key, 'k', 257);
    key[257] = 0;
    char js[512];
    snprintf(js, sizeof(js), "{\"metadata\":{\"stream\":\"s\",\"partition_key\":\"%s\"},\"data\":\"aGk=\"}",
             key);
    expect_error(js, "InvalidParameter: 1 validation error(s) found.\n"
                     "- maximum field size of 256, PutRecordInput.PartitionKey.\n");
    /* data + key over max_record_bytes */
    struct kk_kinesis_limits small = {10, 100};
    struct fx f;
    load(&f, "{\"metadata\":{\"stream\":\"s\",\"partition_key\":\"kk\"},\"data\":\"MTIzNDU2Nzg5\"}", &small);
    assert_int_equal(f.rc, KK_EINVAL);
    assert_string_equal(f.err, "record size 11 (data + partition key) exceeds max_record_bytes 10");
    unload(&f);
    load(&f, "{\"metadata\":{\"stream\":\"s\",\"partition_key\":\"k\"},\"data\":\"MTIzNDU2Nzg5\"}", &small);
    assert_int_equal(f.rc, 0);
    unload(&f);
}

/* Request JSON whose data is base64 of a put_records object with n entries. */
static char *put_records_json(size_t n, size_t payload)
{
    struct kk_buf inner, out;
    kk_buf_init(&inner, 64 << 20);
    kk_buf_init(&out, 64 << 20);
    uint8_t *p = calloc(1, payload + 1);
    memset(p, 'x', payload);
    char *b = malloc(kk_b64_encoded_len(payload) + 1);
    b[kk_b64_encode(b, p, payload)] = 0;
    kk_buf_append_str(&inner, "{");
    for (size_t i = 0; i < n; i++)
        kk_buf_printf(&inner, "%s\"k%zu\":\"%s\"", i ? "," : "", i, b);
    kk_buf_append_str(&inner, "}");
    kk_buf_append_str(&out, "{\"metadata\":{\"method\":\"put_records\",\"stream_name\":\"s\"},\"data\":\"");
    char *dst = kk_buf_reserve(&out, kk_b64_encoded_len(inner.len) + 8);
    kk_buf_commit(&out, kk_b64_encode(dst, (const uint8_t *)inner.base, inner.len));
    kk_buf_append(&out, "\"}", 3);
    free(p);
    free(b);
    kk_buf_free(&inner);
    return out.base;
}

static void test_put_records_validation(void **state)
{
    (void)state;
    struct fx f;
    char *js = put_records_json(501, 1);
    load(&f, js, NULL);
    assert_int_equal(f.rc, KK_EINVAL);
    assert_string_equal(f.err, "put_records accepts at most 500 records, got 501");
    unload(&f);
    free(js);
    js = put_records_json(500, 1);
    load(&f, js, NULL);
    assert_int_equal(f.rc, 0);
    assert_int_equal(f.r.n_entries, 500);
    unload(&f);
    free(js);
    /* 6 x 1 MiB - 16 > 5 MiB total */
    js = put_records_json(6, 1024 * 1024 - 16);
    load(&f, js, NULL);
    assert_int_equal(f.rc, KK_EINVAL);
    assert_non_null(strstr(f.err, "exceeds max_request_bytes 5242880"));
    unload(&f);
    free(js);
    /* one record over 1 MiB */
    js = put_records_json(1, 1024 * 1024);
    load(&f, js, NULL);
    assert_int_equal(f.rc, KK_EINVAL);
    assert_string_equal(f.err,
                        "record 0 size 1048578 (data + partition key) exceeds max_record_bytes 1048576");
    unload(&f);
    free(js);
    /* {"a":"!!"} bad base64; [1] not an object; {} empty; absent data */
    expect_error(
        "{\"metadata\":{\"method\":\"put_records\",\"stream_name\":\"s\"},\"data\":\"eyJhIjoiISEifQ==\"}",
        "illegal base64 data at input byte 0");
    expect_error("{\"metadata\":{\"method\":\"put_records\",\"stream_name\":\"s\"},\"data\":\"WzFd\"}",
                 "json: cannot unmarshal array into Go value of type map[string][]uint8");
    expect_error("{\"metadata\":{\"method\":\"put_records\",\"stream_name\":\"s\"},\"data\":\"e30=\"}",
                 "InvalidParameter: 1 validation error(s) found.\n- minimum field size of 1, "
                 "PutRecordsInput.Records.\n");
    expect_error("{\"metadata\":{\"method\":\"put_records\",\"stream_name\":\"s\"}}",
                 "unexpected end of JSON input");
}

static void test_bodies(void **state)
{
    (void)state;
    expect_body("{\"metadata\":{\"method\":\"list_streams\"}}", "{}");
    expect_body("{\"metadata\":{\"method\":\"list_stream_consumers\",\"stream_arn\":\"arn:x\"}}",
                "{\"StreamARN\":\"arn:x\"}");
    expect_body("{\"metadata\":{\"method\":\"create_stream\",\"stream_name\":\"s\",\"shard_count\":\"3\"}}",
                "{\"ShardCount\":3,\"StreamName\":\"s\"}");
    expect_body("{\"metadata\":{\"method\":\"delete_stream\",\"stream_name\":\"s\"}}",
                "{\"StreamName\":\"s\"}");
    expect_body("{\"metadata\":{\"method\":\"list_shards\",\"stream_name\":\"s<&>\"}}",
                "{\"StreamName\":\"s\\u003c\\u0026\\u003e\"}");
    expect_body(
        "{\"metadata\":{\"method\":\"put_record\",\"stream_name\":\"s\",\"partition_key\":\"k\\\"q\"},"
        "\"data\":\"AAEC/w==\"}",
        "{\"Data\":\"AAEC/w==\",\"PartitionKey\":\"k\\\"q\",\"StreamName\":\"s\"}");
    /* {"a":"aGk=","b":"eW8="} */
    expect_body("{\"metadata\":{\"method\":\"put_records\",\"stream_name\":\"s\"},"
                "\"data\":\"eyJhIjoiYUdrPSIsImIiOiJlVzg9In0=\"}",
                "{\"Records\":[{\"Data\":\"aGk=\",\"PartitionKey\":\"a\"},{\"Data\":\"eW8=\","
                "\"PartitionKey\":\"b\"}],"
                "\"StreamName\":\"s\"}");
    expect_body(
        "{\"metadata\":{\"method\":\"get_records\",\"stream_name\":\"s\",\"shard_iterator_id\":\"IT\","
        "\"limit\":\"25\"}}",
        "{\"Limit\":25,\"ShardIterator\":\"IT\"}");
    expect_body(
        "{\"metadata\":{\"method\":\"get_records\",\"stream_name\":\"s\",\"shard_iterator_id\":\"IT\"}}",
        "{\"Limit\":1,\"ShardIterator\":\"IT\"}");
    expect_body(
        "{\"metadata\":{\"method\":\"get_shard_iterator\",\"stream_name\":\"s\",\"shard_id\":"
        "\"shardId-000000000000\",\"shard_iterator_type\":\"TRIM_HORIZON\"}}",
        "{\"ShardId\":\"shardId-000000000000\",\"ShardIteratorType\":\"TRIM_HORIZON\",\"StreamName\":\"s\"}");
    expect_body(
        "{\"metadata\":{\"method\":\"get_shard_iterator\",\"stream_name\":\"s\",\"shard_id\":\"x\","
        "\"shard_iterator_type\":\"AFTER_SEQUENCE_NUMBER\",\"starting_sequence_number\":\"495\"}}",
        "{\"ShardId\":\"x\",\"ShardIteratorType\":\"AFTER_SEQUENCE_NUMBER\",\"StartingSequenceNumber\":"
        "\"495\",\"StreamName\":\"s\"}");
    expect_body("{\"metadata\":{\"method\":\"get_shard_iterator\",\"stream_name\":\"s\",\"shard_id\":\"x\","
                "\"shard_iterator_type\":\"AT_TIMESTAMP\",\"timestamp\":\"2021-02-10T12:34:56.789Z\"}}",
                "{\"ShardId\":\"x\",\"ShardIteratorType\":\"AT_TIMESTAMP\",\"StreamName\":\"s\","
                "\"Timestamp\":1612960496.789}");
    expect_body("{\"metadata\":{\"method\":\"get_shard_iterator\",\"stream_name\":\"s\",\"shard_id\":\"x\","
                "\"shard_iterator_type\":\"AT_TIMESTAMP\",\"timestamp\":\"1612960496\"}}",
                "{\"ShardId\":\"x\",\"ShardIteratorType\":\"AT_TIMESTAMP\",\"StreamName\":\"s\","
                "\"Timestamp\":1612960496.000}");
    expect_body(
        "{\"metadata\":{\"method\":\"create_stream_consumer\",\"stream_arn\":\"arn:s\",\"consumer_name\":"
        "\"c\"}}",
        "{\"ConsumerName\":\"c\",\"StreamARN\":\"arn:s\"}");
    assert_string_equal(kk_kinesis_amz_target(KK_KOP_CREATE_STREAM_CONSUMER),
                        "Kinesis_20131202.RegisterStreamConsumer");
    assert_string_equal(kk_kinesis_amz_target(KK_KOP_PUT_RECORDS), "Kinesis_20131202.PutRecords");
}

static void expect_output(const char *req_json, const char *resp, const char *out_json, const char *iter)
{
    struct fx f;
    struct kk_buf out;
    bool has = false;
    char *it = NULL;
    size_t failed = 0;
    load(&f, req_json, NULL);
    assert_int_equal(f.rc, 0);
    kk_buf_init(&out, 1 << 20);
    assert_int_equal(kk_kinesis_output(&f.r, resp, strlen(resp), &out, &has, &it, &failed), 0);
    if (!out_json) {
        assert_false(has);
        assert_int_equal(out.len, 0);
    } else {
        assert_true(has);
        kk_buf_append(&out, "", 1);
        assert_string_equal(out.base, out_json);
    }
    if (iter)
        assert_string_equal(it, iter);
    else
        assert_null(it);
    free(it);
    kk_buf_free(&out);
    unload(&f);
}

static void test_outputs(void **state)
{
    (void)state;
    expect_output("{\"metadata\":{\"method\":\"list_streams\"}}",
                  "{\"StreamNames\":[\"s1\",\"s2\"],\"HasMoreStreams\":false}",
                  "{\"HasMoreStreams\":false,\"StreamNames\":[\"s1\",\"s2\"]}", NULL);
    expect_output("{\"metadata\":{\"method\":\"list_streams\"}}", "{\"StreamNames\":[]}",
                  "{\"HasMoreStreams\":null,\"StreamNames\":[]}", NULL);
    expect_output(
        "{\"metadata\":{\"method\":\"put_record\",\"stream_name\":\"s\",\"partition_key\":\"k\"},"
        "\"data\":\"aGk=\"}",
        "{\"ShardId\":\"shardId-000000000000\",\"SequenceNumber\":\"4959\"}",
        "{\"EncryptionType\":null,\"SequenceNumber\":\"4959\",\"ShardId\":\"shardId-000000000000\"}", NULL);
    expect_output("{\"metadata\":{\"method\":\"get_shard_iterator\",\"stream_name\":\"s\",\"shard_id\":\"x\","
                  "\"shard_iterator_type\":\"LATEST\"}}",
                  "{\"ShardIterator\":\"AAAA/+==\"}", "{\"ShardIterator\":\"AAAA/+==\"}", "AAAA/+==");
    expect_output(
        "{\"metadata\":{\"method\":\"get_records\",\"stream_name\":\"s\",\"shard_iterator_id\":\"I\"}}",
        "{\"Records\":[{\"SequenceNumber\":\"1\",\"ApproximateArrivalTimestamp\":1612960496.7891,"
        "\"Data\":\"aGk=\",\"PartitionKey\":\"a<b\"},{\"SequenceNumber\":\"2\","
        "\"ApproximateArrivalTimestamp\":1612960496,\"Data\":\"\",\"PartitionKey\":\"b\","
        "\"EncryptionType\":\"KMS\"}],\"NextShardIterator\":\"N\",\"MillisBehindLatest\":0}",
        "{\"ChildShards\":null,\"MillisBehindLatest\":0,\"NextShardIterator\":\"N\",\"Records\":["
        "{\"ApproximateArrivalTimestamp\":\"2021-02-10T12:34:56.789Z\",\"Data\":\"aGk=\","
        "\"EncryptionType\":null,\"PartitionKey\":\"a\\u003cb\",\"SequenceNumber\":\"1\"},"
        "{\"ApproximateArrivalTimestamp\":\"2021-02-10T12:34:56Z\",\"Data\":\"\",\"EncryptionType\":"
        "\"KMS\",\"PartitionKey\":\"b\",\"SequenceNumber\":\"2\"}]}",
        NULL);
    expect_output(
        "{\"metadata\":{\"method\":\"get_records\",\"stream_name\":\"s\",\"shard_iterator_id\":\"I\"}}",
        "{\"Records\":[],\"NextShardIterator\":null,\"MillisBehindLatest\":5,\"ChildShards\":[{\"ShardId\":"
        "\"c\",\"ParentShards\":[\"p\"],\"HashKeyRange\":{\"StartingHashKey\":\"0\",\"EndingHashKey\":\"9\"}}"
        "]}",
        "{\"ChildShards\":[{\"HashKeyRange\":{\"EndingHashKey\":\"9\",\"StartingHashKey\":\"0\"},"
        "\"ParentShards\":[\"p\"],\"ShardId\":\"c\"}],\"MillisBehindLatest\":5,\"NextShardIterator\":null,"
        "\"Records\":[]}",
        NULL);
    expect_output(
        "{\"metadata\":{\"method\":\"list_shards\",\"stream_name\":\"s\"}}",
        "{\"Shards\":[{\"ShardId\":\"shardId-000000000000\",\"HashKeyRange\":{\"StartingHashKey\":\"0\","
        "\"EndingHashKey\":\"340282366920938463463374607431768211455\"},\"SequenceNumberRange\":{"
        "\"StartingSequenceNumber\":\"4959\"}}]}",
        "{\"NextToken\":null,\"Shards\":[{\"AdjacentParentShardId\":null,\"HashKeyRange\":{"
        "\"EndingHashKey\":\"340282366920938463463374607431768211455\",\"StartingHashKey\":\"0\"},"
        "\"ParentShardId\":null,\"SequenceNumberRange\":{\"EndingSequenceNumber\":null,"
        "\"StartingSequenceNumber\":\"4959\"},\"ShardId\":\"shardId-000000000000\"}]}",
        NULL);
    expect_output(
        "{\"metadata\":{\"method\":\"list_stream_consumers\",\"stream_arn\":\"a\"}}",
        "{\"Consumers\":[{\"ConsumerName\":\"c\",\"ConsumerARN\":\"arn:c\",\"ConsumerStatus\":\"ACTIVE\","
        "\"ConsumerCreationTimestamp\":1.5}]}",
        "{\"Consumers\":[{\"ConsumerARN\":\"arn:c\",\"ConsumerCreationTimestamp\":"
        "\"1970-01-01T00:00:01.5Z\",\"ConsumerName\":\"c\",\"ConsumerStatus\":\"ACTIVE\"}],"
        "\"NextToken\":null}",
        NULL);
    expect_output("{\"metadata\":{\"method\":\"list_stream_consumers\",\"stream_arn\":\"a\"}}", "{}",
                  "{\"Consumers\":null,\"NextToken\":null}", NULL);
    expect_output(
        "{\"metadata\":{\"method\":\"create_stream_consumer\",\"stream_arn\":\"a\",\"consumer_name\":"
        "\"c\"}}",
        "{\"Consumer\":{\"ConsumerName\":\"c\",\"ConsumerARN\":\"arn:c\",\"ConsumerStatus\":\"CREATING\","
        "\"ConsumerCreationTimestamp\":1612960496.25}}",
        "{\"Consumer\":{\"ConsumerARN\":\"arn:c\",\"ConsumerCreationTimestamp\":"
        "\"2021-02-10T12:34:56.25Z\",\"ConsumerName\":\"c\",\"ConsumerStatus\":\"CREATING\"}}",
        NULL);
    expect_output("{\"metadata\":{\"method\":\"create_stream\",\"stream_name\":\"s\"}}", "", NULL, NULL);
    expect_output("{\"metadata\":{\"method\":\"delete_stream\",\"stream_name\":\"s\"}}", "", NULL, NULL);
}

static void test_put_records_partial(void **state)
{
    (void)state;
    struct fx f;
    struct kk_buf b, out;
    bool has;
    char *it;
    size_t failed;
    /* {"a":"aGk=","b":"eW8=","c":"eg=="} */
    load(&f,
         "{\"metadata\":{\"method\":\"put_records\",\"stream_name\":\"s\"},"
         "\"data\":\"eyJhIjoiYUdrPSIsImIiOiJlVzg9IiwiYyI6ImVnPT0ifQ==\"}",
         NULL);
    assert_int_equal(f.rc, 0);
    kk_buf_init(&b, 1 << 20);
    kk_buf_init(&out, 1 << 20);
    assert_int_equal(kk_kinesis_body(&f.r, &b), 0);
    const char *r1 =
        "{\"FailedRecordCount\":2,\"Records\":[{\"ErrorCode\":\"ProvisionedThroughputExceededException\","
        "\"ErrorMessage\":\"Rate exceeded for shard\"},{\"SequenceNumber\":\"2\",\"ShardId\":\"s0\"},"
        "{\"ErrorCode\":\"InternalFailure\",\"ErrorMessage\":\"oops\"}]}";
    assert_int_equal(kk_kinesis_output(&f.r, r1, strlen(r1), &out, &has, &it, &failed), 0);
    assert_int_equal(failed, 2);
    assert_string_equal(kk_kinesis_first_failed(&f.r)->err_code, "ProvisionedThroughputExceededException");
    kk_buf_reset(&b);
    assert_int_equal(kk_kinesis_body(&f.r, &b), 0);
    kk_buf_append(&b, "", 1);
    assert_string_equal(b.base, "{\"Records\":[{\"Data\":\"aGk=\",\"PartitionKey\":\"a\"},{\"Data\":\"eg==\","
                                "\"PartitionKey\":\"c\"}],\"StreamName\":\"s\"}");
    /* Second answer covers the subset: a succeeds, c still fails. */
    const char *r2 =
        "{\"FailedRecordCount\":1,\"EncryptionType\":\"NONE\",\"Records\":[{\"SequenceNumber\":\"3\","
        "\"ShardId\":\"s1\"},{\"ErrorCode\":\"InternalFailure\",\"ErrorMessage\":\"again\"}]}";
    assert_int_equal(kk_kinesis_output(&f.r, r2, strlen(r2), &out, &has, &it, &failed), 0);
    assert_int_equal(failed, 1);
    assert_int_equal(kk_kinesis_put_records_output(&f.r, &out), 0);
    kk_buf_append(&out, "", 1);
    assert_string_equal(
        out.base, "{\"EncryptionType\":\"NONE\",\"FailedRecordCount\":1,\"Records\":["
                  "{\"ErrorCode\":null,\"ErrorMessage\":null,\"SequenceNumber\":\"3\",\"ShardId\":\"s1\"},"
                  "{\"ErrorCode\":null,\"ErrorMessage\":null,\"SequenceNumber\":\"2\",\"ShardId\":\"s0\"},"
                  "{\"ErrorCode\":\"InternalFailure\",\"ErrorMessage\":\"again\",\"SequenceNumber\":null,"
                  "\"ShardId\":null}]}");
    /* A reply whose length does not match what was sent is malformed. */
    const char *bad = "{\"Records\":[]}";
    assert_int_equal(kk_kinesis_output(&f.r, bad, strlen(bad), &out, &has, &it, &failed), KK_EPARSE);
    kk_buf_free(&b);
    kk_buf_free(&out);
    unload(&f);
}

static void test_errors(void **state)
{
    (void)state;
    struct kk_kinesis_error e;
    const char *b1 =
        "{\"__type\":\"ResourceNotFoundException\",\"message\":\"Stream foo under account 123 not found.\"}";
    assert_int_equal(kk_kinesis_error_parse(400, b1, strlen(b1), NULL, &e), 0);
    assert_string_equal(e.text, "ResourceNotFoundException: Stream foo under account 123 not found.");
    assert_string_equal(e.code, "ResourceNotFoundException");
    assert_int_equal(e.cls, KK_KCLASS_PERMANENT);
    kk_kinesis_error_free(&e);
    const char *b2 =
        "{\"__type\":\"com.amazon.coral.service#SerializationException\",\"Message\":\"bad b64\"}";
    assert_int_equal(kk_kinesis_error_parse(400, b2, strlen(b2), NULL, &e), 0);
    assert_string_equal(e.text, "SerializationException: bad b64");
    kk_kinesis_error_free(&e);
    /* the header wins and is cut at ':' */
    const char *b3 = "{\"__type\":\"Other\",\"message\":\"Rate exceeded\"}";
    assert_int_equal(
        kk_kinesis_error_parse(400, b3, strlen(b3),
                               "ProvisionedThroughputExceededException:http://internal.amazon.com/x", &e),
        0);
    assert_string_equal(e.text, "ProvisionedThroughputExceededException: Rate exceeded");
    assert_int_equal(e.cls, KK_KCLASS_RETRYABLE);
    assert_true(e.throttle);
    kk_kinesis_error_free(&e);
    const char *b4 = "{\"__type\":\"UnknownOperationException\"}";
    assert_int_equal(kk_kinesis_error_parse(400, b4, strlen(b4), NULL, &e), 0);
    assert_string_equal(e.text, "UnknownOperationException: ");
    assert_int_equal(e.cls, KK_KCLASS_PERMANENT);
    kk_kinesis_error_free(&e);
    assert_int_equal(kk_kinesis_error_parse(503, "<html>", 6, NULL, &e), 0);
    assert_string_equal(e.text, "UnknownError: status code: 503");
    assert_int_equal(e.cls, KK_KCLASS_RETRYABLE);
    kk_kinesis_error_free(&e);
    assert_int_equal(
        kk_kinesis_error_parse(403, "{\"__type\":\"ExpiredTokenException\",\"message\":\"x\"}", 48, NULL, &e),
        0);
    assert_int_equal(e.cls, KK_KCLASS_AUTH);
    kk_kinesis_error_free(&e);
    assert_int_equal(kk_kinesis_classify("InvalidSignatureException", 400, NULL), KK_KCLASS_AUTH);
    assert_int_equal(kk_kinesis_classify("LimitExceededException", 400, NULL), KK_KCLASS_RETRYABLE);
    assert_int_equal(kk_kinesis_classify("InternalFailure", 0, NULL), KK_KCLASS_RETRYABLE);
    assert_int_equal(kk_kinesis_classify("ValidationException", 400, NULL), KK_KCLASS_PERMANENT);
    assert_int_equal(kk_kinesis_classify("Whatever", 502, NULL), KK_KCLASS_RETRYABLE);
    assert_int_equal(kk_kinesis_error_transport(KK_ETIMEOUT, &e), 0);
    assert_int_equal(e.cls, KK_KCLASS_RETRYABLE);
    assert_string_equal(e.code, "KK_ETIMEOUT");
    kk_kinesis_error_free(&e);
    assert_int_equal(kk_kinesis_error_transport(KK_ETOOBIG, &e), 0);
    assert_int_equal(e.cls, KK_KCLASS_PERMANENT);
    kk_kinesis_error_free(&e);
    assert_int_equal(kk_kinesis_error_transport(KK_ETLS_VERIFY, &e), 0);
    assert_int_equal(e.cls, KK_KCLASS_PERMANENT);
    kk_kinesis_error_free(&e);
}

/* Signature errors echo the canonical request (with the session token) and
 * the string to sign: neither reaches the error text. */
static void test_error_scrub(void **state)
{
    (void)state;
    struct kk_kinesis_error e;
    const char *b1 = "{\"__type\":\"InvalidSignatureException\",\"message\":\"The request signature we "
                     "calculated does not match the signature you provided. Check your AWS Secret Access Key "
                     "and signing method. Consult the service documentation for details.\\n\\nThe Canonical "
                     "String for this request should have been\\n'POST\\n/\\n\\nhost:h\\n"
                     "x-amz-security-token:SESSIONTOK123\\n'\\n\\nThe String-to-Sign should have been\\n"
                     "'AWS4-HMAC-SHA256\\n20260101T000000Z\\n20260101/us-east-1/kinesis/aws4_request\\nx'\"}";
    assert_int_equal(kk_kinesis_error_parse(400, b1, strlen(b1), NULL, &e), 0);
    assert_string_equal(e.text,
                        "InvalidSignatureException: The request signature we calculated does not match "
                        "the signature you provided. Check your AWS Secret Access Key and signing "
                        "method. Consult the service documentation for details.");
    assert_int_equal(e.cls, KK_KCLASS_AUTH);
    kk_kinesis_error_free(&e);
    /* any class: a token header, a query token and a credential are masked */
    const char *b2 =
        "{\"__type\":\"ValidationException\",\"message\":\"X-Amz-Security-Token:SESSIONTOK123\\r\\n"
        "q?X-Amz-Security-Token=SESSIONTOK123&a=b Authorization=AWS4-HMAC-SHA256 "
        "Credential=AKIDSESSIONTOK123/20260101/us-east-1/kinesis/aws4_request, "
        "Signature=abcdef\"}";
    assert_int_equal(kk_kinesis_error_parse(400, b2, strlen(b2), NULL, &e), 0);
    assert_null(strstr(e.text, "SESSIONTOK123"));
    assert_null(strstr(e.text, "abcdef"));
    assert_string_equal(e.text,
                        "ValidationException: X-Amz-Security-Token:***\r\nq?X-Amz-Security-Token=***&a=b "
                        "Authorization=AWS4-HMAC-SHA256 Credential=***/20260101/us-east-1/kinesis/"
                        "aws4_request, Signature=***");
    kk_kinesis_error_free(&e);
    /* an auth error without the echo is kept whole */
    const char *b3 = "{\"__type\":\"ExpiredTokenException\",\"message\":\"The security token included in the "
                     "request is expired\"}";
    assert_int_equal(kk_kinesis_error_parse(400, b3, strlen(b3), NULL, &e), 0);
    assert_string_equal(e.text,
                        "ExpiredTokenException: The security token included in the request is expired");
    kk_kinesis_error_free(&e);
}

/* A partition key given twice gives two records (Go's map would keep one). */
static void test_put_records_duplicate_keys(void **state)
{
    (void)state;
    /* {"a":"aGk=","a":"eW8="} */
    expect_body("{\"metadata\":{\"method\":\"put_records\",\"stream_name\":\"s\"},"
                "\"data\":\"eyJhIjoiYUdrPSIsImEiOiJlVzg9In0=\"}",
                "{\"Records\":[{\"Data\":\"aGk=\",\"PartitionKey\":\"a\"},{\"Data\":\"eW8=\","
                "\"PartitionKey\":\"a\"}],\"StreamName\":\"s\"}");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unknown_method),
        cmocka_unit_test(test_validation_texts),
        cmocka_unit_test(test_put_defaults),
        cmocka_unit_test(test_put_limits),
        cmocka_unit_test(test_put_records_validation),
        cmocka_unit_test(test_bodies),
        cmocka_unit_test(test_outputs),
        cmocka_unit_test(test_put_records_partial),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_error_scrub),
        cmocka_unit_test(test_put_records_duplicate_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

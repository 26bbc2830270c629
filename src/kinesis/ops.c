/* Kinesis operations: validation, request bodies, outputs, errors.
 * Pure functions; the target (target.c) does the I/O around them. */
#include "kk/kinesis.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kk/b64.h"
#include "kk/clock.h"
#include "kk/err.h"
#include "kk/rand.h"

/* kubemq-targets' method names, in the order of its method map (§7.2);
 * the unknown-method error lists them in this fixed order. */
static const char *const method_names[KK_KOP__COUNT] = {
    "list_streams", "list_stream_consumers", "create_stream",      "delete_stream", "put_record",
    "put_records",  "get_records",           "get_shard_iterator", "list_shards",   "create_stream_consumer",
};

static const char *const amz_targets[KK_KOP__COUNT] = {
    "Kinesis_20131202.ListStreams",  "Kinesis_20131202.ListStreamConsumers",
    "Kinesis_20131202.CreateStream", "Kinesis_20131202.DeleteStream",
    "Kinesis_20131202.PutRecord",    "Kinesis_20131202.PutRecords",
    "Kinesis_20131202.GetRecords",   "Kinesis_20131202.GetShardIterator",
    "Kinesis_20131202.ListShards",   "Kinesis_20131202.RegisterStreamConsumer",
};

const char *kk_kinesis_method_name(enum kk_kinesis_op op)
{
    return (unsigned)op < KK_KOP__COUNT ? method_names[op] : "unknown";
}

const char *kk_kinesis_amz_target(enum kk_kinesis_op op)
{
    return (unsigned)op < KK_KOP__COUNT ? amz_targets[op] : "";
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s);
    char *p = malloc(n + 1);
    if (p)
        memcpy(p, s, n + 1);
    return p;
}

static char *xprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

/* ---- validation ---------------------------------------------------------- */

/* Go strconv.Atoi on 32 bits; anything else gives def (kubemq-targets'
 * ParseInt). */
static long parse_int(const char *s, long def)
{
    if (!s)
        return def;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < INT32_MIN || v > INT32_MAX || s[0] == ' ')
        return def;
    return v;
}

static size_t utf8_chars(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            c++;
    return c;
}

/* Decimal 0 .. 2^128-1. */
static bool valid_hash_key(const char *s)
{
    static const char max[] = "340282366920938463463374607431768211455";
    size_t n = strlen(s);
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    while (n > 1 && *s == '0') {
        s++;
        n--;
    }
    if (n != sizeof(max) - 1)
        return n < sizeof(max) - 1;
    return strcmp(s, max) <= 0;
}

/* Checks standard base64 with padding as Go's StdEncoding decodes it;
 * returns the decoded length or -1 (*bad = offending byte offset). */
static long b64_check(const char *s, size_t n, size_t *bad)
{
    static signed char tab[256];
    if (!tab['A']) {
        memset(tab, 0, sizeof(tab));
        for (int c = 'A'; c <= 'Z'; c++)
            tab[c] = 1;
        for (int c = 'a'; c <= 'z'; c++)
            tab[c] = 1;
        for (int c = '0'; c <= '9'; c++)
            tab[c] = 1;
        tab['+'] = tab['/'] = 1;
    }
    size_t pad = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '=') {
            if (i + 2 < n || i % 4 < 2 || (i + 2 == n && s[i + 1] != '=')) {
                *bad = i;
                return -1;
            }
            pad = n - i;
            break;
        }
        if (!tab[c]) {
            *bad = i;
            return -1;
        }
    }
    if (n % 4) {
        *bad = n / 4 * 4;
        return -1;
    }
    return (long)(n / 4 * 3 - pad);
}

static const char *md(const struct kk_request *req, const char *k)
{
    return kk_request_get(req, k);
}

static int fail(char **err, char *msg)
{
    *err = msg;
    return msg ? KK_EINVAL : KK_ENOMEM;
}

static int parse_put_records(struct kk_kinesis_req *r, const struct kk_request *req,
                             const struct kk_kinesis_limits *lim, char **err)
{
    if (!req->data || req->data_len == 0)
        return fail(err, xstrdup("unexpected end of JSON input"));
    cJSON *root = cJSON_ParseWithLength((const char *)req->data, req->data_len);
    if (!root)
        return fail(err, xstrdup("invalid character in JSON input for put_records data"));
    r->_json = root;
    if (!cJSON_IsObject(root)) {
        const char *what = cJSON_IsArray(root)    ? "array"
                           : cJSON_IsString(root) ? "string"
                           : cJSON_IsNumber(root) ? "number"
                           : cJSON_IsBool(root)   ? "bool"
                                                  : "null";
        if (cJSON_IsNull(root))
            return fail(err, xprintf("InvalidParameter: 1 validation error(s) found.\n"
                                     "- missing required field, PutRecordsInput.Records.\n"));
        return fail(err, xprintf("json: cannot unmarshal %s into Go value of type map[string][]uint8", what));
    }
    /* One entry per member, in document order, duplicates included: with a
     * partition key given twice, Go's map (kubemq-targets) keeps only the
     * last value and sends one record; we send every entry, so no record is
     * dropped without a word (see kinesis.h). */
    size_t n = 0;
    for (cJSON *c = root->child; c; c = c->next)
        n++;
    if (n == 0)
        return fail(err, xstrdup("InvalidParameter: 1 validation error(s) found.\n"
                                 "- minimum field size of 1, PutRecordsInput.Records.\n"));
    if (n > KK_KINESIS_MAX_ENTRIES)
        return fail(err,
                    xprintf("put_records accepts at most %d records, got %zu", KK_KINESIS_MAX_ENTRIES, n));
    r->entries = calloc(n, sizeof(*r->entries));
    r->sent = calloc(n, sizeof(*r->sent));
    if (!r->entries || !r->sent)
        return KK_ENOMEM;
    size_t total = 0, i = 0;
    for (cJSON *c = root->child; c; c = c->next, i++) {
        struct kk_kinesis_entry *e = &r->entries[i];
        e->key = c->string;
        e->key_len = strlen(c->string);
        if (cJSON_IsNull(c))
            return fail(err, xprintf("InvalidParameter: 1 validation error(s) found.\n"
                                     "- missing required field, PutRecordsInput.Records[%zu].Data.\n",
                                     i));
        if (!cJSON_IsString(c))
            return fail(err, xprintf("json: cannot unmarshal %s into Go value of type []uint8",
                                     cJSON_IsNumber(c) ? "number"
                                     : cJSON_IsBool(c) ? "bool"
                                                       : "object"));
        e->b64 = c->valuestring;
        e->b64_len = strlen(c->valuestring);
        size_t bad = 0;
        long raw = b64_check(e->b64, e->b64_len, &bad);
        if (raw < 0)
            return fail(err, xprintf("illegal base64 data at input byte %zu", bad));
        e->raw_len = (size_t)raw;
        size_t kc = utf8_chars(e->key, e->key_len);
        if (kc < 1)
            return fail(err,
                        xprintf("InvalidParameter: 1 validation error(s) found.\n"
                                "- minimum field size of 1, PutRecordsInput.Records[%zu].PartitionKey.\n",
                                i));
        if (kc > 256)
            return fail(err,
                        xprintf("InvalidParameter: 1 validation error(s) found.\n"
                                "- maximum field size of 256, PutRecordsInput.Records[%zu].PartitionKey.\n",
                                i));
        if (e->raw_len + e->key_len > lim->max_record_bytes)
            return fail(err,
                        xprintf("record %zu size %zu (data + partition key) exceeds max_record_bytes %zu", i,
                                e->raw_len + e->key_len, lim->max_record_bytes));
        total += e->raw_len + e->key_len;
    }
    if (total > lim->max_request_bytes)
        return fail(err, xprintf("put_records size %zu (data + partition keys) exceeds max_request_bytes %zu",
                                 total, lim->max_request_bytes));
    r->n_entries = n;
    return 0;
}

int kk_kinesis_req_parse(struct kk_kinesis_req *r, const struct kk_request *req,
                         const struct kk_kinesis_limits *lim, char **err)
{
    memset(r, 0, sizeof(*r));
    *err = NULL;
    int rc = 0;
    const char *m = md(req, "method");
    bool legacy_put = false;
    if (!m || strcmp(m, "put") == 0) {
        r->op = KK_KOP_PUT_RECORD;
        legacy_put = true;
    } else if (strcmp(m, "create") == 0) {
        r->op = KK_KOP_CREATE_STREAM;
    } else {
        int op = -1;
        for (int i = 0; i < KK_KOP__COUNT; i++)
            if (strcmp(m, method_names[i]) == 0)
                op = i;
        if (op < 0) {
            char buf[512];
            size_t o = (size_t)snprintf(buf, sizeof(buf),
                                        "invalid method type, method type should be one of the following:");
            for (int i = 0; i < KK_KOP__COUNT; i++)
                o += (size_t)snprintf(buf + o, sizeof(buf) - o, " :%s,", method_names[i]);
            return fail(err, xstrdup(buf));
        }
        r->op = (enum kk_kinesis_op)op;
    }
    r->shard_count = parse_int(md(req, "shard_count"), 1);
    r->limit = parse_int(md(req, "limit"), 1);
    r->stream = md(req, "stream_name");
    if (!r->stream)
        r->stream = md(req, "stream");
    if (!r->stream && r->op != KK_KOP_LIST_STREAMS && r->op != KK_KOP_LIST_STREAM_CONSUMERS &&
        r->op != KK_KOP_CREATE_STREAM_CONSUMER)
        return fail(err, xstrdup("error parsing stream_name, value of key stream_name cannot be empty"));

    switch (r->op) {
    case KK_KOP_PUT_RECORD:
        r->partition_key = md(req, "partition_key");
        if (!r->partition_key) {
            if (!legacy_put)
                return fail(err, xstrdup("partition_key is required when using put_record,error parsing "
                                         "partition_key, value of key partition_key cannot be empty"));
            /* Random keys spread unkeyed records over the shards. */
            snprintf(r->gen_key, sizeof(r->gen_key), "%016llx", (unsigned long long)kk_rand64());
            r->partition_key = r->gen_key;
        }
        if (utf8_chars(r->partition_key, strlen(r->partition_key)) > 256)
            return fail(err, xstrdup("InvalidParameter: 1 validation error(s) found.\n"
                                     "- maximum field size of 256, PutRecordInput.PartitionKey.\n"));
        r->explicit_hash_key = md(req, "explicit_hash_key");
        if (r->explicit_hash_key && !valid_hash_key(r->explicit_hash_key))
            return fail(err,
                        xstrdup("invalid explicit_hash_key, must be a decimal integer from 0 to 2^128-1"));
        if (!req->data)
            return fail(err, xstrdup("InvalidParameter: 1 validation error(s) found.\n"
                                     "- missing required field, PutRecordInput.Data.\n"));
        if (req->data_len + strlen(r->partition_key) > lim->max_record_bytes)
            return fail(err, xprintf("record size %zu (data + partition key) exceeds max_record_bytes %zu",
                                     req->data_len + strlen(r->partition_key), lim->max_record_bytes));
        r->data = req->data;
        r->data_len = req->data_len;
        break;
    case KK_KOP_PUT_RECORDS:
        r->explicit_hash_key = md(req, "explicit_hash_key");
        if (r->explicit_hash_key && !valid_hash_key(r->explicit_hash_key))
            return fail(err,
                        xstrdup("invalid explicit_hash_key, must be a decimal integer from 0 to 2^128-1"));
        rc = parse_put_records(r, req, lim, err);
        if (rc < 0)
            return rc;
        break;
    case KK_KOP_GET_SHARD_ITERATOR:
        r->shard_id = md(req, "shard_id");
        if (!r->shard_id)
            return fail(err, xstrdup("shard_id is required when using get_shard_iterator error parsing "
                                     "shard_id, value of key shard_id cannot be empty"));
        r->iterator_type = md(req, "shard_iterator_type");
        if (!r->iterator_type)
            return fail(err,
                        xstrdup("shard_iterator_type is required when using get_shard_iterator,error "
                                "parsing shard_iterator_type, value of key shard_iterator_type cannot be "
                                "empty"));
        r->starting_seq = md(req, "starting_sequence_number");
        if (!r->starting_seq && (strcmp(r->iterator_type, "AT_SEQUENCE_NUMBER") == 0 ||
                                 strcmp(r->iterator_type, "AFTER_SEQUENCE_NUMBER") == 0))
            return fail(err, xprintf("starting_sequence_number is required when using shard_iterator_type %s",
                                     r->iterator_type));
        {
            const char *ts = md(req, "timestamp");
            if (ts) {
                int64_t ns;
                char *end;
                double sec = strtod(ts, &end);
                /* Kinesis takes epoch seconds >= 0; bound them so the
                 * milliseconds fit and print as a plain decimal. */
                if (end != ts && *end == '\0' && isfinite(sec) && sec >= 0 && sec < 1e13) {
                    r->timestamp_ms = (int64_t)llround(sec * 1000.0);
                } else if (kk_parse_rfc3339(ts, &ns) == 0 && ns >= 0) {
                    r->timestamp_ms = ns / 1000000;
                } else {
                    return fail(
                        err,
                        xprintf("error parsing timestamp, %s is neither RFC 3339 nor epoch seconds", ts));
                }
                r->has_timestamp = true;
            } else if (strcmp(r->iterator_type, "AT_TIMESTAMP") == 0) {
                return fail(err,
                            xstrdup("timestamp is required when using shard_iterator_type AT_TIMESTAMP"));
            }
        }
        break;
    case KK_KOP_GET_RECORDS:
        r->shard_iterator = md(req, "shard_iterator_id");
        if (!r->shard_iterator)
            return fail(err, xstrdup("shard_iterator_id is required when using get_records,error parsing "
                                     "shard_iterator_id, value of key shard_iterator_id cannot be empty"));
        break;
    case KK_KOP_LIST_STREAM_CONSUMERS:
        r->stream_arn = md(req, "stream_arn");
        if (!r->stream_arn)
            return fail(err, xstrdup("stream_arn error is required when using list_stream_consumers,parsing "
                                     "stream_arn, value of key stream_arn cannot be empty"));
        break;
    case KK_KOP_CREATE_STREAM_CONSUMER:
        r->stream_arn = md(req, "stream_arn");
        if (!r->stream_arn)
            return fail(err, xstrdup("stream_arn error is required when using create_stream_consumer,parsing "
                                     "stream_arn, value of key stream_arn cannot be empty"));
        r->consumer_name = md(req, "consumer_name");
        if (!r->consumer_name)
            return fail(err, xstrdup("consumer_name error is required when using create_stream_consumer,"
                                     "parsing consumer_name, value of key consumer_name cannot be empty"));
        break;
    default:
        break;
    }
    return 0;
}

void kk_kinesis_req_free(struct kk_kinesis_req *r)
{
    for (size_t i = 0; r->entries && i < r->n_entries; i++) {
        free(r->entries[i].seq);
        free(r->entries[i].shard_id);
        free(r->entries[i].err_code);
        free(r->entries[i].err_msg);
    }
    free(r->entries);
    free(r->sent);
    free(r->encryption_type);
    cJSON_Delete(r->_json);
    memset(r, 0, sizeof(*r));
}

size_t kk_kinesis_pending(const struct kk_kinesis_req *r)
{
    size_t n = 0;
    for (size_t i = 0; i < r->n_entries; i++)
        n += r->entries[i].state != KK_KENTRY_OK;
    return n;
}

const struct kk_kinesis_entry *kk_kinesis_first_failed(const struct kk_kinesis_req *r)
{
    for (size_t i = 0; i < r->n_entries; i++)
        if (r->entries[i].state == KK_KENTRY_FAILED)
            return &r->entries[i];
    return NULL;
}

/* ---- request bodies ------------------------------------------------------ */

/* ,"name": (no printf: this runs several times per request body) */
static int put_name(struct kk_buf *b, const char *name, bool comma)
{
    size_t n = strlen(name);
    char *d = kk_buf_reserve(b, n + 4);
    if (!d)
        return n + 4 > b->max - b->len ? KK_ETOOBIG : KK_ENOMEM;
    size_t o = 0;
    if (comma)
        d[o++] = ',';
    d[o++] = '"';
    memcpy(d + o, name, n);
    o += n;
    d[o++] = '"';
    d[o++] = ':';
    kk_buf_commit(b, o);
    return 0;
}

static int put_str(struct kk_buf *b, const char *name, const char *v, bool comma)
{
    int rc = put_name(b, name, comma);
    if (rc == 0)
        rc = kk_json_string(b, v, strlen(v));
    return rc;
}

static int put_b64(struct kk_buf *b, const uint8_t *p, size_t n)
{
    size_t el = kk_b64_encoded_len(n);
    char *dst = kk_buf_reserve(b, el + 2);
    if (!dst)
        return KK_ETOOBIG;
    dst[0] = '"';
    kk_b64_encode(dst + 1, p, n);
    dst[el + 1] = '"';
    kk_buf_commit(b, el + 2);
    return 0;
}

int kk_kinesis_body(struct kk_kinesis_req *r, struct kk_buf *b)
{
    int rc = 0;
    rc = kk_buf_append_str(b, "{");
    if (rc < 0)
        return rc;
    switch (r->op) {
    case KK_KOP_LIST_STREAMS:
        break;
    case KK_KOP_LIST_STREAM_CONSUMERS:
        rc = put_str(b, "StreamARN", r->stream_arn, false);
        break;
    case KK_KOP_CREATE_STREAM:
        rc = kk_buf_printf(b, "\"ShardCount\":%ld", r->shard_count);
        if (rc == 0)
            rc = put_str(b, "StreamName", r->stream, true);
        break;
    case KK_KOP_DELETE_STREAM:
    case KK_KOP_LIST_SHARDS:
        rc = put_str(b, "StreamName", r->stream, false);
        break;
    case KK_KOP_PUT_RECORD:
        rc = kk_buf_append_str(b, "\"Data\":");
        if (rc == 0)
            rc = put_b64(b, r->data, r->data_len);
        if (rc == 0 && r->explicit_hash_key)
            rc = put_str(b, "ExplicitHashKey", r->explicit_hash_key, true);
        if (rc == 0)
            rc = put_str(b, "PartitionKey", r->partition_key, true);
        if (rc == 0)
            rc = put_str(b, "StreamName", r->stream, true);
        break;
    case KK_KOP_PUT_RECORDS:
        rc = kk_buf_append_str(b, "\"Records\":[");
        r->n_sent = 0;
        for (size_t i = 0; rc == 0 && i < r->n_entries; i++) {
            struct kk_kinesis_entry *e = &r->entries[i];
            if (e->state == KK_KENTRY_OK)
                continue;
            /* The payload is already base64: copy it, no decode/encode. */
            rc = kk_buf_printf(b, "%s{\"Data\":\"", r->n_sent ? "," : "");
            if (rc == 0)
                rc = kk_buf_append(b, e->b64, e->b64_len);
            if (rc == 0)
                rc = kk_buf_append_str(b, "\"");
            if (rc == 0 && r->explicit_hash_key)
                rc = put_str(b, "ExplicitHashKey", r->explicit_hash_key, true);
            if (rc == 0)
                rc = put_str(b, "PartitionKey", e->key, true);
            if (rc == 0)
                rc = kk_buf_append_str(b, "}");
            r->sent[r->n_sent++] = (uint32_t)i;
        }
        if (rc == 0)
            rc = kk_buf_append_str(b, "]");
        if (rc == 0)
            rc = put_str(b, "StreamName", r->stream, true);
        break;
    case KK_KOP_GET_RECORDS:
        rc = kk_buf_printf(b, "\"Limit\":%ld", r->limit);
        if (rc == 0)
            rc = put_str(b, "ShardIterator", r->shard_iterator, true);
        break;
    case KK_KOP_GET_SHARD_ITERATOR:
        rc = put_str(b, "ShardId", r->shard_id, false);
        if (rc == 0)
            rc = put_str(b, "ShardIteratorType", r->iterator_type, true);
        if (rc == 0 && r->starting_seq)
            rc = put_str(b, "StartingSequenceNumber", r->starting_seq, true);
        if (rc == 0)
            rc = put_str(b, "StreamName", r->stream, true);
        if (rc == 0 && r->has_timestamp)
            rc = kk_buf_printf(b, ",\"Timestamp\":%lld.%03lld", (long long)(r->timestamp_ms / 1000),
                               (long long)(r->timestamp_ms % 1000));
        break;
    case KK_KOP_CREATE_STREAM_CONSUMER:
        rc = put_str(b, "ConsumerName", r->consumer_name, false);
        if (rc == 0)
            rc = put_str(b, "StreamARN", r->stream_arn, true);
        break;
    default:
        rc = KK_EINVAL;
    }
    if (rc == 0)
        rc = kk_buf_append_str(b, "}");
    return rc;
}

/* ---- errors -------------------------------------------------------------- */

struct code_info {
    const char *code;
    enum kk_kclass cls;
    bool throttle;
};

static const struct code_info codes[] = {
    {"ProvisionedThroughputExceededException", KK_KCLASS_RETRYABLE, true},
    {"LimitExceededException", KK_KCLASS_RETRYABLE, true},
    {"ThrottlingException", KK_KCLASS_RETRYABLE, true},
    {"Throttling", KK_KCLASS_RETRYABLE, true},
    {"KMSThrottlingException", KK_KCLASS_RETRYABLE, true},
    {"RequestLimitExceeded", KK_KCLASS_RETRYABLE, true},
    {"InternalFailure", KK_KCLASS_RETRYABLE, false},
    {"InternalFailureException", KK_KCLASS_RETRYABLE, false},
    {"ServiceUnavailable", KK_KCLASS_RETRYABLE, false},
    {"ServiceUnavailableException", KK_KCLASS_RETRYABLE, false},
    {"ExpiredToken", KK_KCLASS_AUTH, false},
    {"ExpiredTokenException", KK_KCLASS_AUTH, false},
    {"UnrecognizedClientException", KK_KCLASS_AUTH, false},
    {"InvalidClientTokenId", KK_KCLASS_AUTH, false},
    {"IncompleteSignature", KK_KCLASS_AUTH, false},
    {"IncompleteSignatureException", KK_KCLASS_AUTH, false},
    {"MissingAuthenticationToken", KK_KCLASS_AUTH, false},
    {"MissingAuthenticationTokenException", KK_KCLASS_AUTH, false},
    {"InvalidSignatureException", KK_KCLASS_AUTH, false},
    {"RequestExpired", KK_KCLASS_AUTH, false},
    {"ResourceNotFoundException", KK_KCLASS_PERMANENT, false},
    {"ResourceInUseException", KK_KCLASS_PERMANENT, false},
    {"InvalidArgumentException", KK_KCLASS_PERMANENT, false},
    {"ValidationException", KK_KCLASS_PERMANENT, false},
    {"SerializationException", KK_KCLASS_PERMANENT, false},
    {"AccessDeniedException", KK_KCLASS_PERMANENT, false},
    {"ExpiredIteratorException", KK_KCLASS_PERMANENT, false},
    {"ExpiredNextTokenException", KK_KCLASS_PERMANENT, false},
    {"UnknownOperationException", KK_KCLASS_PERMANENT, false},
    {"KMSAccessDeniedException", KK_KCLASS_PERMANENT, false},
    {"KMSDisabledException", KK_KCLASS_PERMANENT, false},
    {"KMSInvalidStateException", KK_KCLASS_PERMANENT, false},
    {"KMSNotFoundException", KK_KCLASS_PERMANENT, false},
    {"KMSOptInRequired", KK_KCLASS_PERMANENT, false},
};

static const struct code_info *find_code(const char *code, size_t n)
{
    /* Error path only: a short linear table. */
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (strlen(codes[i].code) == n && memcmp(codes[i].code, code, n) == 0)
            return &codes[i];
    return NULL;
}

enum kk_kclass kk_kinesis_classify(const char *code, int status, bool *throttle)
{
    const struct code_info *ci = code ? find_code(code, strlen(code)) : NULL;
    if (throttle)
        *throttle = ci ? ci->throttle : false;
    if (ci && (ci->cls != KK_KCLASS_PERMANENT || status < 500))
        return ci->cls;
    return status >= 500 || status == 429 ? KK_KCLASS_RETRYABLE : KK_KCLASS_PERMANENT;
}

void kk_kinesis_error_free(struct kk_kinesis_error *e)
{
    free(e->text);
    e->text = NULL;
}

/* botocore: cut at the first ':', keep what follows the last '#'. */
static void normalise_code(const char *s, const char **out, size_t *n)
{
    size_t len = strcspn(s, ":");
    const char *start = s;
    for (size_t i = 0; i < len; i++)
        if (s[i] == '#')
            start = s + i + 1;
    *out = start;
    *n = len - (size_t)(start - s);
}

/* AWS signature errors echo the canonical request and the string to sign,
 * which carry the session token (x-amz-security-token) and the credential
 * scope; other errors may quote a header too.  Such text must not reach a
 * reply or a log.  For auth-class errors the message is cut before "The
 * Canonical String"; in any message what follows a secret-bearing marker is
 * masked (to the line end for a header, to a separator for a parameter). */
static const struct {
    const char *mark;
    const char *stop;
} masks[] = {
    {"x-amz-security-token:", "\r\n"},
    {"x-amz-security-token=", "&'\" \t\r\n"},
    {"credential=", "/,'\" \t\r\n"},
    {"signature=", "&,'\" \t\r\n"},
};

static char *clean_message(const char *msg, bool auth)
{
    size_t n = strlen(msg);
    if (auth) {
        const char *cut = strstr(msg, "The Canonical String");
        if (cut)
            n = (size_t)(cut - msg);
        while (n > 0 && (msg[n - 1] == ' ' || msg[n - 1] == '\n' || msg[n - 1] == '\r' || msg[n - 1] == '\t'))
            n--;
    }
    /* Each mask replaces a value after a marker of >= 10 characters by "***". */
    char *out = malloc(n + 3 * (n / 10 + 1) + 1);
    if (!out)
        return NULL;
    size_t o = 0, i = 0;
    while (i < n) {
        size_t skip = 0;
        for (size_t m = 0; m < sizeof(masks) / sizeof(masks[0]) && !skip; m++) {
            size_t ml = strlen(masks[m].mark);
            if (ml <= n - i && strncasecmp(msg + i, masks[m].mark, ml) == 0) {
                memcpy(out + o, msg + i, ml);
                o += ml;
                size_t v = i + ml;
                while (v < n && !strchr(masks[m].stop, msg[v]))
                    v++;
                if (v > i + ml) {
                    memcpy(out + o, "***", 3);
                    o += 3;
                }
                skip = v - i;
            }
        }
        if (skip) {
            i += skip;
        } else {
            out[o++] = msg[i++];
        }
    }
    out[o] = '\0';
    return out;
}

int kk_kinesis_error_parse(int status, const char *body, size_t len, const char *code_hdr,
                           struct kk_kinesis_error *e)
{
    memset(e, 0, sizeof(*e));
    cJSON *root = body && len ? cJSON_ParseWithLength(body, len) : NULL;
    const char *type = NULL, *msg = NULL;
    if (cJSON_IsObject(root)) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "__type");
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "message");
        if (!cJSON_IsString(m))
            m = cJSON_GetObjectItemCaseSensitive(root, "Message");
        type = cJSON_IsString(t) ? t->valuestring : NULL;
        msg = cJSON_IsString(m) ? m->valuestring : NULL;
    }
    const char *src = code_hdr && *code_hdr ? code_hdr : type;
    const char *code = NULL;
    size_t cn = 0;
    if (src)
        normalise_code(src, &code, &cn);
    const struct code_info *ci = cn ? find_code(code, cn) : NULL;
    if (cn) {
        char *clean = clean_message(msg ? msg : "", ci && ci->cls == KK_KCLASS_AUTH);
        e->text = clean ? xprintf("%.*s: %s", (int)cn, code, clean) : NULL;
        free(clean);
        e->code = ci ? ci->code : "Unknown";
    } else {
        e->text = xprintf("UnknownError: status code: %d", status);
        e->code = status >= 500 ? "HTTP5xx" : "HTTP4xx";
    }
    e->throttle = ci ? ci->throttle : false;
    if (ci && (ci->cls != KK_KCLASS_PERMANENT || status < 500))
        e->cls = ci->cls;
    else
        e->cls = status >= 500 || status == 429 ? KK_KCLASS_RETRYABLE : KK_KCLASS_PERMANENT;
    cJSON_Delete(root);
    return e->text ? 0 : KK_ENOMEM;
}

int kk_kinesis_error_transport(int err, struct kk_kinesis_error *e)
{
    memset(e, 0, sizeof(*e));
    e->code = kk_errname(err);
    /* A certificate that fails verification, an oversized answer or our own
     * cancel will not get better by sending again. */
    e->cls = (err == KK_ETLS_VERIFY || err == KK_ETOOBIG || err == KK_ECANCELED || err == KK_ESHUTDOWN ||
              err == KK_ENOMEM || err == KK_EINVAL)
                 ? KK_KCLASS_PERMANENT
                 : KK_KCLASS_RETRYABLE;
    e->text = xprintf("RequestError: send request failed, caused by: %s (%s)", kk_strerror(err), e->code);
    return e->text ? 0 : KK_ENOMEM;
}

/* ---- outputs: aws-sdk-go v1 structs as encoding/json writes them --------- */

enum ftype { F_STR, F_INT, F_BOOL, F_TIME, F_BLOB, F_OBJ, F_STRS, F_OBJS };

struct shape;
struct field {
    const char *name;
    enum ftype t;
    const struct shape *sub;
};
struct shape {
    const struct field *f;
    size_t n;
};
#define SHAPE(name, ...)                                                                                     \
    static const struct field name##_f[] = {__VA_ARGS__};                                                    \
    static const struct shape name = {name##_f, sizeof(name##_f) / sizeof(name##_f[0])}

SHAPE(s_hash_range, {"EndingHashKey", F_STR, NULL}, {"StartingHashKey", F_STR, NULL});
SHAPE(s_seq_range, {"EndingSequenceNumber", F_STR, NULL}, {"StartingSequenceNumber", F_STR, NULL});
SHAPE(s_shard, {"AdjacentParentShardId", F_STR, NULL}, {"HashKeyRange", F_OBJ, &s_hash_range},
      {"ParentShardId", F_STR, NULL}, {"SequenceNumberRange", F_OBJ, &s_seq_range}, {"ShardId", F_STR, NULL});
SHAPE(s_child_shard, {"HashKeyRange", F_OBJ, &s_hash_range}, {"ParentShards", F_STRS, NULL},
      {"ShardId", F_STR, NULL});
SHAPE(s_record, {"ApproximateArrivalTimestamp", F_TIME, NULL}, {"Data", F_BLOB, NULL},
      {"EncryptionType", F_STR, NULL}, {"PartitionKey", F_STR, NULL}, {"SequenceNumber", F_STR, NULL});
SHAPE(s_consumer, {"ConsumerARN", F_STR, NULL}, {"ConsumerCreationTimestamp", F_TIME, NULL},
      {"ConsumerName", F_STR, NULL}, {"ConsumerStatus", F_STR, NULL});
SHAPE(o_list_streams, {"HasMoreStreams", F_BOOL, NULL}, {"StreamNames", F_STRS, NULL});
SHAPE(o_list_consumers, {"Consumers", F_OBJS, &s_consumer}, {"NextToken", F_STR, NULL});
SHAPE(o_register_consumer, {"Consumer", F_OBJ, &s_consumer});
SHAPE(o_put_record, {"EncryptionType", F_STR, NULL}, {"SequenceNumber", F_STR, NULL},
      {"ShardId", F_STR, NULL});
SHAPE(o_get_shard_iterator, {"ShardIterator", F_STR, NULL});
SHAPE(o_get_records, {"ChildShards", F_OBJS, &s_child_shard}, {"MillisBehindLatest", F_INT, NULL},
      {"NextShardIterator", F_STR, NULL}, {"Records", F_OBJS, &s_record});
SHAPE(o_list_shards, {"NextToken", F_STR, NULL}, {"Shards", F_OBJS, &s_shard});

static int emit_shape(struct kk_buf *b, const cJSON *obj, const struct shape *sh);

static int emit_str(struct kk_buf *b, const cJSON *v)
{
    if (!cJSON_IsString(v))
        return kk_buf_append_str(b, "null");
    return kk_json_string(b, v->valuestring, strlen(v->valuestring));
}

static int emit_value(struct kk_buf *b, const cJSON *v, const struct field *f)
{
    char tmp[40];
    if (!v || cJSON_IsNull(v))
        return kk_buf_append_str(b, "null");
    switch (f->t) {
    case F_STR:
        return emit_str(b, v);
    case F_BLOB:
        /* Kinesis sends standard base64; Go decodes and re-encodes it the same way. */
        /* Only valid base64 passes through (it needs no escaping); anything
         * else from the endpoint must not reach the reply JSON verbatim. */
        if (!cJSON_IsString(v))
            return kk_buf_append_str(b, "null");
        size_t bad, len = strlen(v->valuestring);
        if (b64_check(v->valuestring, len, &bad) < 0)
            return kk_buf_append_str(b, "null");
        return kk_buf_printf(b, "\"%s\"", v->valuestring);
    case F_INT:
        /* Beyond 2^53 a double is no longer an exact integer (and casting
         * 1e300 is undefined): such an answer is not a count. */
        if (!cJSON_IsNumber(v) || !(fabs(v->valuedouble) < 9e15))
            return kk_buf_append_str(b, "null");
        return kk_buf_printf(b, "%lld", (long long)v->valuedouble);
    case F_BOOL:
        if (!cJSON_IsBool(v))
            return kk_buf_append_str(b, "null");
        return kk_buf_append_str(b, cJSON_IsTrue(v) ? "true" : "false");
    case F_TIME: {
        if (!cJSON_IsNumber(v) || !(fabs(v->valuedouble) < 9e12))
            return kk_buf_append_str(b, "null");
        /* aws-sdk-go: whole seconds + the fraction rounded to milliseconds. */
        double d = v->valuedouble;
        double whole = trunc(d);
        int64_t ms = (int64_t)whole * 1000 + (int64_t)llround((d - whole) * 1000.0);
        int n = kk_fmt_rfc3339_ms(tmp, ms);
        int rc = kk_buf_append_str(b, "\"");
        if (rc == 0)
            rc = kk_buf_append(b, tmp, (size_t)n);
        if (rc == 0)
            rc = kk_buf_append_str(b, "\"");
        return rc;
    }
    case F_OBJ:
        if (!cJSON_IsObject(v))
            return kk_buf_append_str(b, "null");
        return emit_shape(b, v, f->sub);
    case F_STRS:
    case F_OBJS: {
        if (!cJSON_IsArray(v))
            return kk_buf_append_str(b, "null");
        int rc = kk_buf_append_str(b, "[");
        bool first = true;
        for (const cJSON *c = v->child; rc == 0 && c; c = c->next) {
            if (!first)
                rc = kk_buf_append_str(b, ",");
            first = false;
            if (rc == 0)
                rc = f->t == F_STRS      ? emit_str(b, c)
                     : cJSON_IsObject(c) ? emit_shape(b, c, f->sub)
                                         : kk_buf_append_str(b, "null");
        }
        if (rc == 0)
            rc = kk_buf_append_str(b, "]");
        return rc;
    }
    }
    return KK_EINVAL;
}

static int emit_shape(struct kk_buf *b, const cJSON *obj, const struct shape *sh)
{
    int rc = kk_buf_append_str(b, "{");
    for (size_t i = 0; rc == 0 && i < sh->n; i++) {
        rc = kk_buf_printf(b, "%s\"%s\":", i ? "," : "", sh->f[i].name);
        if (rc == 0)
            rc = emit_value(b, cJSON_GetObjectItemCaseSensitive(obj, sh->f[i].name), &sh->f[i]);
    }
    if (rc == 0)
        rc = kk_buf_append_str(b, "}");
    return rc;
}

static char *dup_str_item(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? xstrdup(v->valuestring) : NULL;
}

static void set_str(char **dst, char *v)
{
    free(*dst);
    *dst = v;
}

static int merge_put_records(struct kk_kinesis_req *r, const cJSON *root, size_t *failed)
{
    const cJSON *recs = cJSON_GetObjectItemCaseSensitive(root, "Records");
    if (!cJSON_IsArray(recs) || (size_t)cJSON_GetArraySize(recs) != r->n_sent)
        return KK_EPARSE;
    const cJSON *et = cJSON_GetObjectItemCaseSensitive(root, "EncryptionType");
    if (cJSON_IsString(et))
        set_str(&r->encryption_type, xstrdup(et->valuestring));
    size_t k = 0;
    for (const cJSON *c = recs->child; c; c = c->next, k++) {
        struct kk_kinesis_entry *e = &r->entries[r->sent[k]];
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(c, "ErrorCode");
        if (cJSON_IsString(code)) {
            e->state = KK_KENTRY_FAILED;
            set_str(&e->err_code, xstrdup(code->valuestring));
            set_str(&e->err_msg, dup_str_item(c, "ErrorMessage"));
            set_str(&e->seq, NULL);
            set_str(&e->shard_id, NULL);
        } else {
            e->state = KK_KENTRY_OK;
            set_str(&e->seq, dup_str_item(c, "SequenceNumber"));
            set_str(&e->shard_id, dup_str_item(c, "ShardId"));
            set_str(&e->err_code, NULL);
            set_str(&e->err_msg, NULL);
        }
    }
    *failed = kk_kinesis_pending(r);
    return 0;
}

static int opt_str(struct kk_buf *b, const char *s)
{
    return s ? kk_json_string(b, s, strlen(s)) : kk_buf_append_str(b, "null");
}

int kk_kinesis_put_records_output(const struct kk_kinesis_req *r, struct kk_buf *out)
{
    int rc = kk_buf_append_str(out, "{\"EncryptionType\":");
    if (rc == 0)
        rc = opt_str(out, r->encryption_type);
    if (rc == 0)
        rc = kk_buf_printf(out, ",\"FailedRecordCount\":%zu,\"Records\":[", kk_kinesis_pending(r));
    for (size_t i = 0; rc == 0 && i < r->n_entries; i++) {
        const struct kk_kinesis_entry *e = &r->entries[i];
        rc = kk_buf_append_str(out, i ? ",{\"ErrorCode\":" : "{\"ErrorCode\":");
        if (rc == 0)
            rc = opt_str(out, e->err_code);
        if (rc == 0)
            rc = kk_buf_append_str(out, ",\"ErrorMessage\":");
        if (rc == 0)
            rc = opt_str(out, e->err_msg);
        if (rc == 0)
            rc = kk_buf_append_str(out, ",\"SequenceNumber\":");
        if (rc == 0)
            rc = opt_str(out, e->seq);
        if (rc == 0)
            rc = kk_buf_append_str(out, ",\"ShardId\":");
        if (rc == 0)
            rc = opt_str(out, e->shard_id);
        if (rc == 0)
            rc = kk_buf_append_str(out, "}");
    }
    if (rc == 0)
        rc = kk_buf_append_str(out, "]}");
    return rc;
}

/* ---- PutRecord answers without cJSON ------------------------------------
 * The hot path answer is a flat object of plain strings
 * ({"SequenceNumber":"...","ShardId":"..."}).  Scanning it in place saves
 * the ~10 allocations of a cJSON tree per request.  Anything else (escapes,
 * control bytes, non-string values, nesting, bad syntax) returns
 * FAST_FALLBACK and the general cJSON path decides, so the output is the same
 * either way. */

#define FAST_FALLBACK 1 /* not a plain answer: use the general path */

struct flat_str {
    const char *p;
    size_t n;
    bool set;  /* first occurrence wins, as cJSON_GetObjectItemCaseSensitive */
    bool null; /* the value was JSON null */
};

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* A string without escapes or control bytes; p at the opening quote. */
static const char *plain_string(const char *p, const char *end, const char **s, size_t *n)
{
    if (p >= end || *p != '"')
        return NULL;
    const char *q = ++p;
    while (q < end && *q != '"') {
        if (*q == '\\' || (unsigned char)*q < 0x20)
            return NULL;
        q++;
    }
    if (q >= end)
        return NULL;
    *s = p;
    *n = (size_t)(q - p);
    return q + 1;
}

static int put_record_output_fast(const char *body, size_t len, struct kk_buf *out)
{
    static const char *const names[3] = {"EncryptionType", "SequenceNumber", "ShardId"};
    struct flat_str v[3];
    memset(v, 0, sizeof(v));
    const char *p = body, *end = body + len;
    p = skip_ws(p, end);
    if (p >= end || *p++ != '{')
        return FAST_FALLBACK;
    p = skip_ws(p, end);
    if (p < end && *p == '}') {
        p++;
    } else {
        for (;;) {
            const char *k, *s = NULL;
            size_t kn, sn = 0;
            bool null = false;
            p = plain_string(skip_ws(p, end), end, &k, &kn);
            if (!p)
                return FAST_FALLBACK;
            p = skip_ws(p, end);
            if (p >= end || *p++ != ':')
                return FAST_FALLBACK;
            p = skip_ws(p, end);
            if (end - p >= 4 && memcmp(p, "null", 4) == 0) {
                null = true;
                p += 4;
            } else {
                p = plain_string(p, end, &s, &sn);
                if (!p)
                    return FAST_FALLBACK;
            }
            for (int i = 0; i < 3; i++) {
                if (!v[i].set && strlen(names[i]) == kn && memcmp(names[i], k, kn) == 0) {
                    v[i] = (struct flat_str){s, sn, true, null};
                    break;
                }
            }
            p = skip_ws(p, end);
            if (p < end && *p == ',') {
                p++;
                continue;
            }
            if (p < end && *p == '}') {
                p++;
                break;
            }
            return FAST_FALLBACK;
        }
    }
    /* Only trailing white space: cJSON's verdict on anything else may differ. */
    if (skip_ws(p, end) != end)
        return FAST_FALLBACK;
    size_t start = out->len;
    int rc = 0;
    for (int i = 0; rc == 0 && i < 3; i++) {
        rc = i ? 0 : kk_buf_append_str(out, "{");
        if (rc == 0)
            rc = put_name(out, names[i], i > 0);
        if (rc == 0)
            rc = v[i].set && !v[i].null ? kk_json_string(out, v[i].p, v[i].n) : kk_buf_append_str(out, "null");
    }
    if (rc == 0)
        rc = kk_buf_append_str(out, "}");
    if (rc < 0)
        out->len = start;
    return rc;
}

int kk_kinesis_output(struct kk_kinesis_req *r, const char *body, size_t len, struct kk_buf *out,
                      bool *has_data, char **shard_iterator, size_t *failed)
{
    int rc = 0;
    *has_data = false;
    *shard_iterator = NULL;
    *failed = 0;
    if (r->op == KK_KOP_CREATE_STREAM || r->op == KK_KOP_DELETE_STREAM)
        return 0; /* empty 200 body, no Data in the reply */
    if (r->op == KK_KOP_PUT_RECORD) {
        rc = put_record_output_fast(body, len, out);
        if (rc != FAST_FALLBACK) {
            *has_data = rc == 0;
            return rc;
        }
        rc = 0;
    }
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!cJSON_IsObject(root)) {
        rc = KK_EPARSE;
        goto out;
    }
    const struct shape *sh = NULL;
    switch (r->op) {
    case KK_KOP_LIST_STREAMS:
        sh = &o_list_streams;
        break;
    case KK_KOP_LIST_STREAM_CONSUMERS:
        sh = &o_list_consumers;
        break;
    case KK_KOP_PUT_RECORD:
        sh = &o_put_record;
        break;
    case KK_KOP_PUT_RECORDS:
        rc = merge_put_records(r, root, failed);
        goto out;
    case KK_KOP_GET_RECORDS:
        sh = &o_get_records;
        break;
    case KK_KOP_GET_SHARD_ITERATOR: {
        sh = &o_get_shard_iterator;
        *shard_iterator = dup_str_item(root, "ShardIterator");
        break;
    }
    case KK_KOP_LIST_SHARDS:
        sh = &o_list_shards;
        break;
    case KK_KOP_CREATE_STREAM_CONSUMER:
        sh = &o_register_consumer;
        break;
    default:
        rc = KK_EINVAL;
        goto out;
    }
    rc = emit_shape(out, root, sh);
    if (rc == 0)
        *has_data = true;
out:
    cJSON_Delete(root);
    return rc;
}

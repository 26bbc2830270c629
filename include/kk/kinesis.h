/* The ten Kinesis operations of kubemq-targets' aws.kinesis target, as pure
 * functions (no I/O): request validation, request body JSON, response
 * parsing into the aws-sdk-go v1 output JSON, error normalisation and
 * classification (connector-behaviour.md §7, kinesis.md §1).
 *
 * Life of one request:
 *   kk_kinesis_req_parse    validates metadata/data before any I/O;
 *   kk_kinesis_body         writes the JSON body of the next attempt;
 *   kk_kinesis_response     turns the HTTP answer into output JSON or an error;
 *   kk_kinesis_req_free     when the request ends.
 * A kk_kinesis_req borrows strings from the kk_request it was parsed from:
 * that request must outlive it.
 */
#ifndef KK_KINESIS_H
#define KK_KINESIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kk/buf.h"
#include "kk/request.h"

enum kk_kinesis_op {
    KK_KOP_LIST_STREAMS = 0,
    KK_KOP_LIST_STREAM_CONSUMERS,
    KK_KOP_CREATE_STREAM,
    KK_KOP_DELETE_STREAM,
    KK_KOP_PUT_RECORD,
    KK_KOP_PUT_RECORDS,
    KK_KOP_GET_RECORDS,
    KK_KOP_GET_SHARD_ITERATOR,
    KK_KOP_LIST_SHARDS,
    KK_KOP_CREATE_STREAM_CONSUMER,
    KK_KOP__COUNT
};

/* "put_record", ... (the kubemq-targets method name). */
const char *kk_kinesis_method_name(enum kk_kinesis_op op);
/* "Kinesis_20131202.PutRecord", ... (the X-Amz-Target value). */
const char *kk_kinesis_amz_target(enum kk_kinesis_op op);

struct kk_kinesis_limits {
    size_t max_record_bytes;  /* data + partition key; default 1 MiB */
    size_t max_request_bytes; /* put_records raw total; default 5 MiB */
};
#define KK_KINESIS_MAX_RECORD_BYTES (1024u * 1024u)
#define KK_KINESIS_MAX_REQUEST_BYTES (5u * 1024u * 1024u)
#define KK_KINESIS_MAX_ENTRIES 500

enum kk_kentry_state { KK_KENTRY_PENDING = 0, KK_KENTRY_OK, KK_KENTRY_FAILED };

/* One put_records entry.  key and b64 point into the request's data
 * (not copied); the result strings are heap, owned by the entry.
 *
 * The entries are the members of the data object in document order, one
 * per member.  A partition key that appears twice gives two entries and two
 * records: kubemq-targets decodes into a Go map, which keeps only the last
 * value of a repeated key and silently drops the others; we deliberately
 * differ and lose nothing.  The output's Records follow the same order. */
struct kk_kinesis_entry {
    const char *key;
    size_t key_len;
    const char *b64; /* the base64 payload as given (already validated) */
    size_t b64_len;
    size_t raw_len;
    enum kk_kentry_state state;
    char *seq;      /* OK: SequenceNumber */
    char *shard_id; /* OK: ShardId */
    char *err_code; /* FAILED: ErrorCode */
    char *err_msg;  /* FAILED: ErrorMessage */
};

struct kk_kinesis_req {
    enum kk_kinesis_op op;
    const char *stream;        /* stream_name, else stream */
    const char *partition_key; /* given or gen_key */
    char gen_key[17];          /* 16 hex chars for put without a key */
    const char *explicit_hash_key;
    long shard_count;
    long limit;
    const char *shard_id;
    const char *iterator_type;
    const char *starting_seq;
    int64_t timestamp_ms; /* AT_TIMESTAMP */
    bool has_timestamp;
    const char *shard_iterator; /* shard_iterator_id */
    const char *stream_arn;
    const char *consumer_name;
    const uint8_t *data; /* put_record payload (borrowed) */
    size_t data_len;
    /* put_records */
    struct kk_kinesis_entry *entries;
    size_t n_entries;
    size_t n_sent;         /* entries in the last body built */
    uint32_t *sent;        /* their indices, request order */
    char *encryption_type; /* latest EncryptionType seen */
    void *_json;           /* parsed put_records data (entries point into it) */
};

/* Validates req for the method in its metadata (default "put").  On error
 * returns KK_EINVAL and *err = the exact kubemq-targets / SDK text (heap,
 * caller frees).  Either way r must later go to kk_kinesis_req_free
 * (a failed parse may leave entries allocated). */
int kk_kinesis_req_parse(struct kk_kinesis_req *r, const struct kk_request *req,
                         const struct kk_kinesis_limits *lim, char **err);
void kk_kinesis_req_free(struct kk_kinesis_req *r);

/* Appends the JSON body for the next attempt.  put_records: only entries
 * not yet OK (r->sent/n_sent record which ones, in order). */
int kk_kinesis_body(struct kk_kinesis_req *r, struct kk_buf *body);

/* Entries still not OK (put_records). */
size_t kk_kinesis_pending(const struct kk_kinesis_req *r);

enum kk_kclass {
    KK_KCLASS_OK = 0,
    KK_KCLASS_RETRYABLE,
    KK_KCLASS_PERMANENT,
    KK_KCLASS_AUTH, /* refresh credentials, then retry once */
};

/* Error of one attempt: normalised code (botocore rules) and class. */
struct kk_kinesis_error {
    enum kk_kclass cls;
    const char *code; /* static: a known code name, "HTTP<status>"-class names or "Unknown" */
    char *text;       /* heap: "<Code>: <message>" */
    bool throttle;
};
void kk_kinesis_error_free(struct kk_kinesis_error *e);

/* Normalises an AWS error answer (status >= 300, or a 200 with an unusable
 * body: pass status 0).  code_hdr is x-amzn-ErrorType or NULL. */
int kk_kinesis_error_parse(int status, const char *body, size_t len, const char *code_hdr,
                           struct kk_kinesis_error *e);
/* Classifies a known code string ("ProvisionedThroughputExceededException"). */
enum kk_kclass kk_kinesis_classify(const char *code, int status, bool *throttle);
/* The error of a transport failure (KK_ETIMEOUT, UV_ECONNRESET, ...). */
int kk_kinesis_error_transport(int err, struct kk_kinesis_error *e);

/* A 2xx answer.  For every op but put_records writes the output JSON to out
 * (nothing for create/delete_stream: *has_data = false) and, for
 * get_shard_iterator, *shard_iterator (heap).  For put_records, merges the
 * answer into r->entries (*failed = entries still failed) and writes
 * nothing: call kk_kinesis_put_records_output when reporting.  Returns
 * KK_EPARSE on a malformed answer. */
int kk_kinesis_output(struct kk_kinesis_req *r, const char *body, size_t len, struct kk_buf *out,
                      bool *has_data, char **shard_iterator, size_t *failed);

/* The combined PutRecordsOutput over every entry, in request order. */
int kk_kinesis_put_records_output(const struct kk_kinesis_req *r, struct kk_buf *out);

/* The first entry still failed, or NULL. */
const struct kk_kinesis_entry *kk_kinesis_first_failed(const struct kk_kinesis_req *r);

#endif

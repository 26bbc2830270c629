/* `kinesis` mode: a fast fake Kinesis endpoint (HTTP/1.1 keep-alive over
 * llhttp on the loop) with fault injection and SigV4 verification.
 *
 * kk_http_server hides request headers from its handler, and both the
 * operation (X-Amz-Target) and the signature live in headers, so this mode
 * has its own small server.  One request at a time per connection: parsing
 * pauses while an injected latency runs and resumes after the reply.
 */
#include <inttypes.h>
#include <llhttp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kk/aws.h"
#include "kk/buf.h"
#include "kk/clock.h"
#include "kk/err.h"
#include "kk/rand.h"
#include "load.h"
#include "tls.h"

#define MAX_HDRS 32
#define MAX_BODY (16u << 20)
#define MAX_HEAD (16u << 10)

enum op {
    OP_PUT_RECORD,
    OP_PUT_RECORDS,
    OP_LIST_SHARDS,
    OP_LIST_STREAMS,
    OP_CREATE,
    OP_DELETE,
    OP_DESCRIBE,
    OP_GET_ITER,
    OP_GET_RECORDS,
    OP_UNKNOWN,
    OP__COUNT
};
static const char *const op_names[OP__COUNT] = {"PutRecord",
                                                "PutRecords",
                                                "ListShards",
                                                "ListStreams",
                                                "CreateStream",
                                                "DeleteStream",
                                                "DescribeStreamSummary",
                                                "GetShardIterator",
                                                "GetRecords",
                                                "unknown"};

struct kstats {
    uint64_t requests, by_op[OP__COUNT], records, record_bytes, bad_sig, unsigned_reqs, throttled,
        partial_records, errors_5xx, connections, tls_errors, verified;
};

struct ksrv;
struct kconn {
    uv_tcp_t tcp;
    uv_timer_t delay;
    struct ksrv *k;
    llhttp_t parser;
    struct kk_buf head; /* header names/values, NUL separated */
    size_t hname[MAX_HDRS], hval[MAX_HDRS];
    unsigned nh;
    bool in_value;
    struct kk_buf body;
    struct kk_buf rest;  /* unparsed bytes while paused */
    struct kk_buf reply; /* response waiting for the injected latency */
    struct kk_buf outq;  /* plain HTTP, no latency: replies of this read, written by on_read */
    bool busy, closing, keep_alive;
    int handles;
    struct ktls_conn *tls; /* --tls: the session; NULL for plain HTTP */
    struct kconn *prev, *next;
    char rbuf[65536];
};

struct ksrv {
    uv_loop_t *loop;
    const struct load_opts *o;
    uv_tcp_t listener;
    uv_timer_t stop_timer, progress;
    uv_signal_t sig_int, sig_term;
    struct kconn *conns;
    struct kstats st;
    struct kk_sigv4 sig;
    struct kk_aws_creds creds;
    struct ktls_server *tls; /* --tls */
    uint64_t seq;
    uint64_t t_start_ms;
    bool stopping;
};

static void conn_close(struct kconn *c);

static void on_handle_closed(uv_handle_t *h)
{
    struct kconn *c = h->data;
    if (--c->handles == 0) {
        kk_buf_free(&c->head);
        kk_buf_free(&c->body);
        kk_buf_free(&c->rest);
        kk_buf_free(&c->reply);
        kk_buf_free(&c->outq);
        ktls_conn_free(c->tls);
        free(c);
    }
}

static void conn_close(struct kconn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    struct ksrv *k = c->k;
    if (c->prev)
        c->prev->next = c->next;
    else
        k->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->delay, on_handle_closed);
}

/* ---- headers -------------------------------------------------------------------- */
static const char *hdr(struct kconn *c, const char *name)
{
    for (unsigned i = 0; i < c->nh; i++)
        if (strcasecmp(c->head.base + c->hname[i], name) == 0)
            return c->head.base + c->hval[i];
    return NULL;
}

static int on_msg_begin(llhttp_t *p)
{
    struct kconn *c = p->data;
    kk_buf_reset(&c->head);
    kk_buf_reset(&c->body);
    c->nh = 0;
    c->in_value = false;
    return 0;
}

static int on_hfield(llhttp_t *p, const char *at, size_t n)
{
    struct kconn *c = p->data;
    if (c->in_value || c->nh == 0) {
        if (c->nh == MAX_HDRS)
            return -1;
        if (c->nh && kk_buf_append(&c->head, "", 1) != 0) /* end of previous value */
            return -1;
        c->hname[c->nh++] = c->head.len;
        c->in_value = false;
    }
    return kk_buf_append(&c->head, at, n) == 0 ? 0 : -1;
}

static int on_hvalue(llhttp_t *p, const char *at, size_t n)
{
    struct kconn *c = p->data;
    if (!c->in_value) {
        if (kk_buf_append(&c->head, "", 1) != 0)
            return -1;
        c->hval[c->nh - 1] = c->head.len;
        c->in_value = true;
    }
    return kk_buf_append(&c->head, at, n) == 0 ? 0 : -1;
}

static int on_headers_done(llhttp_t *p)
{
    struct kconn *c = p->data;
    if (c->nh && c->in_value)
        kk_buf_append(&c->head, "", 1);
    else if (c->nh) { /* field without value */
        kk_buf_append(&c->head, "", 1);
        c->hval[c->nh - 1] = c->head.len;
        kk_buf_append(&c->head, "", 1);
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    struct kconn *c = p->data;
    return kk_buf_append(&c->body, at, n) == 0 ? 0 : -1;
}

/* ---- SigV4 check ----------------------------------------------------------------- */
/* 1 good, 0 bad, -1 unsigned. */
static int verify_sig(struct ksrv *k, struct kconn *c)
{
    const char *auth = hdr(c, "authorization");
    const char *date = hdr(c, "x-amz-date");
    if (!auth || !date)
        return -1;
    const char *cred = strstr(auth, "Credential=");
    const char *sh = strstr(auth, "SignedHeaders=");
    const char *sg = strstr(auth, "Signature=");
    if (strncmp(auth, "AWS4-HMAC-SHA256 ", 17) != 0 || !cred || !sh || !sg)
        return 0;
    cred += 11;
    sh += 14;
    sg += 10;
    /* Credential=AKID/date/region/service/aws4_request */
    char akid[128], cdate[16], region[64], service[32];
    if (sscanf(cred, "%127[^/]/%15[^/]/%63[^/]/%31[^/]/", akid, cdate, region, service) != 4)
        return 0;
    if (k->o->access_key && strcmp(akid, k->o->access_key) != 0)
        return 0;
    if (strcmp(service, "kinesis") != 0 || strncmp(cdate, date, 8) != 0)
        return 0;
    if (strcmp(region, k->sig.region) != 0)
        kk_sigv4_init(&k->sig, region, "kinesis");
    snprintf(k->creds.access_key, sizeof(k->creds.access_key), "%s", akid);

    struct kk_sigv4_header h[MAX_HDRS];
    size_t nh = 0;
    const char *e = sh;
    while (*e && *e != ',' && *e != ' ') {
        const char *s = e;
        while (*e && *e != ';' && *e != ',' && *e != ' ')
            e++;
        size_t len = (size_t)(e - s);
        bool found = false;
        for (unsigned i = 0; i < c->nh && nh < MAX_HDRS; i++) {
            const char *nm = c->head.base + c->hname[i];
            if (strlen(nm) == len && strncasecmp(nm, s, len) == 0) {
                h[nh++] = (struct kk_sigv4_header){nm, c->head.base + c->hval[i]};
                found = true;
            }
        }
        if (!found)
            return 0;
        if (*e == ';')
            e++;
    }
    char hash[65], sig[65];
    kk_sha256_hex(c->body.base ? c->body.base : "", c->body.len, hash);
    if (kk_sigv4_sign(&k->sig, &k->creds, date, "POST", "/", "", h, nh, hash, NULL, NULL, sig, NULL) != 0)
        return 0;
    return strncmp(sig, sg, 64) == 0 && (sg[64] == 0 || sg[64] == ',' || sg[64] == ' ') ? 1 : 0;
}

/* ---- replies ------------------------------------------------------------------------ */
static bool chance(double p)
{
    return p > 0 && (double)kk_rand_below(1000000) < p * 1e6;
}

static void json_str_field(const struct kk_buf *body, const char *key, char *out, size_t cap)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":\"", key);
    out[0] = 0;
    const char *p = body->len ? memmem(body->base, body->len, pat, strlen(pat)) : NULL;
    if (!p)
        return;
    p += strlen(pat);
    size_t i = 0;
    const char *end = body->base + body->len;
    while (p < end && *p != '"' && i + 1 < cap)
        out[i++] = *p++;
    out[i] = 0;
}

/* Counts records and their raw bytes (base64 length -> decoded length). */
static uint64_t count_records(struct ksrv *k, const struct kk_buf *b)
{
    uint64_t n = 0;
    const char *p = b->base, *end = b->base + b->len;
    while (p && p < end) {
        const char *d = memmem(p, (size_t)(end - p), "\"Data\":\"", 8);
        if (!d)
            break;
        d += 8;
        const char *q = memchr(d, '"', (size_t)(end - d));
        if (!q)
            break;
        size_t l = (size_t)(q - d);
        size_t raw = l / 4 * 3;
        if (l >= 1 && d[l - 1] == '=')
            raw--;
        if (l >= 2 && d[l - 2] == '=')
            raw--;
        k->st.record_bytes += raw;
        n++;
        p = q + 1;
    }
    k->st.records += n;
    return n;
}

static void build_reply(struct kconn *c, int status, const char *body, size_t len)
{
    char rid[37];
    kk_uuid4(rid);
    const char *reason = status == 200   ? "OK"
                         : status == 400 ? "Bad Request"
                         : status == 403 ? "Forbidden"
                         : status == 500 ? "Internal Server Error"
                         : status == 503 ? "Service Unavailable"
                                         : "Error";
    kk_buf_reset(&c->reply);
    kk_buf_printf(&c->reply,
                  "HTTP/1.1 %d %s\r\nx-amzn-RequestId: %s\r\nContent-Type: application/x-amz-json-1.1\r\n"
                  "Content-Length: %zu\r\n%s\r\n",
                  status, reason, rid, len, c->keep_alive ? "" : "Connection: close\r\n");
    kk_buf_append(&c->reply, body, len);
}

static void error_body(struct kk_buf *out, const char *type, const char *msg)
{
    kk_buf_printf(out, "{\"__type\":\"%s\",\"message\":\"%s\"}", type, msg);
}

static void handle(struct ksrv *k, struct kconn *c)
{
    const struct load_opts *o = k->o;
    struct kk_buf out;
    kk_buf_init(&out, MAX_BODY);
    int status = 200;
    char stream[160];
    const char *target = hdr(c, "x-amz-target");
    enum op op = OP_UNKNOWN;
    if (target && strncmp(target, "Kinesis_20131202.", 17) == 0)
        for (int i = 0; i < OP_UNKNOWN; i++)
            if (strcmp(target + 17, op_names[i]) == 0)
                op = (enum op)i;
    k->st.requests++;
    k->st.by_op[op]++;
    json_str_field(&c->body, "StreamName", stream, sizeof(stream));
    if (!stream[0])
        snprintf(stream, sizeof(stream), "stream");

    /* --verify-every N: SHA-256 of every body would cost the fake as much CPU as the gateway
     * under test spends, on the same cores; a sample still catches a wrong signer. */
    if (o->secret && (o->verify_every <= 1 || k->st.requests % o->verify_every == 1)) {
        k->st.verified++;
        int v = verify_sig(k, c);
        if (v != 1) {
            if (v == 0)
                k->st.bad_sig++;
            else
                k->st.unsigned_reqs++;
            status = v == 0 ? 403 : 400;
            error_body(&out, v == 0 ? "InvalidSignatureException" : "MissingAuthenticationTokenException",
                       v == 0
                           ? "The request signature we calculated does not match the signature you provided."
                           : "Missing Authentication Token");
            goto reply;
        }
    }
    if (chance(o->error_rate)) {
        k->st.errors_5xx++;
        bool five = kk_rand_below(2);
        status = five ? 500 : 503;
        error_body(&out, five ? "InternalFailure" : "ServiceUnavailable", "injected failure");
        goto reply;
    }
    if ((op == OP_PUT_RECORD || op == OP_PUT_RECORDS) && chance(o->throttle_rate)) {
        k->st.throttled++;
        status = 400;
        kk_buf_printf(
            &out,
            "{\"__type\":\"ProvisionedThroughputExceededException\",\"message\":\"Rate exceeded for "
            "shard shardId-000000000000 in stream %s under account 000000000000.\"}",
            stream);
        goto reply;
    }
    switch (op) {
    case OP_PUT_RECORD:
        count_records(k, &c->body);
        kk_buf_printf(&out,
                      "{\"ShardId\":\"shardId-000000000000\",\"SequenceNumber\":\"4959%020" PRIu64
                      "\",\"EncryptionType\":\"NONE\"}",
                      ++k->seq);
        break;
    case OP_PUT_RECORDS: {
        uint64_t n = count_records(k, &c->body), failed = 0;
        kk_buf_append_str(&out, "{\"Records\":[");
        for (uint64_t i = 0; i < n; i++) {
            if (i)
                kk_buf_append(&out, ",", 1);
            if (chance(o->partial_rate)) {
                failed++;
                kk_buf_printf(&out,
                              "{\"ErrorCode\":\"ProvisionedThroughputExceededException\",\"ErrorMessage\":"
                              "\"Rate exceeded for shard shardId-000000000000 in stream %s under account "
                              "000000000000.\"}",
                              stream);
            } else {
                kk_buf_printf(
                    &out, "{\"SequenceNumber\":\"4959%020" PRIu64 "\",\"ShardId\":\"shardId-000000000000\"}",
                    ++k->seq);
            }
        }
        k->st.partial_records += failed;
        kk_buf_printf(&out, "],\"FailedRecordCount\":%" PRIu64 ",\"EncryptionType\":\"NONE\"}", failed);
        break;
    }
    case OP_LIST_SHARDS:
        kk_buf_append_str(
            &out, "{\"Shards\":[{\"ShardId\":\"shardId-000000000000\",\"HashKeyRange\":{"
                  "\"StartingHashKey\":\"0\",\"EndingHashKey\":"
                  "\"340282366920938463463374607431768211455\"},\"SequenceNumberRange\":{"
                  "\"StartingSequenceNumber\":\"49590000000000000000000000000000000000000000000000000000"
                  "\"}}]}");
        break;
    case OP_LIST_STREAMS:
        kk_buf_printf(&out, "{\"StreamNames\":[\"%s\"],\"HasMoreStreams\":false}",
                      o->stream ? o->stream : "stream");
        break;
    case OP_CREATE:
    case OP_DELETE:
        break; /* empty 200 body */
    case OP_DESCRIBE:
        kk_buf_printf(
            &out,
            "{\"StreamDescriptionSummary\":{\"StreamName\":\"%s\",\"StreamARN\":\"arn:aws:kinesis:"
            "%s:000000000000:stream/%s\",\"StreamStatus\":\"ACTIVE\",\"StreamModeDetails\":{"
            "\"StreamMode\":\"PROVISIONED\"},\"RetentionPeriodHours\":24,\"StreamCreationTimestamp\":"
            "1700000000,\"EnhancedMonitoring\":[{\"ShardLevelMetrics\":[]}],\"EncryptionType\":\"NONE\","
            "\"OpenShardCount\":1,\"ConsumerCount\":0}}",
            stream, k->sig.region[0] ? k->sig.region : "us-east-1", stream);
        break;
    case OP_GET_ITER:
        kk_buf_append_str(&out, "{\"ShardIterator\":\"AAAAAAAAAAFakeIteratorFromKubemqKinesisLoad\"}");
        break;
    case OP_GET_RECORDS:
        kk_buf_append_str(&out,
                          "{\"Records\":[],\"NextShardIterator\":\"AAAAAAAAAAFakeIteratorFromKubemqKinesis"
                          "Load\",\"MillisBehindLatest\":0}");
        break;
    default:
        status = 400;
        error_body(&out, "UnknownOperationException", "unknown operation");
        break;
    }
reply:
    build_reply(c, status, out.base ? out.base : "", out.len);
    kk_buf_free(&out);
}

/* ---- I/O ------------------------------------------------------------------------ */
static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    struct kconn *c = h->data;
    *b = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

struct wreq {
    uv_write_t req;
    char *data;
};

static void on_written(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    free(w->data);
    free(w);
}

static void feed(struct kconn *c, const char *p, size_t n);
static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);

/* Hands b's bytes to a write (b keeps its limit, starts empty); closes the
 * connection on failure.  0 or -1. */
static int write_buf(struct kconn *c, struct kk_buf *b)
{
    if (b->len == 0)
        return 0;
    struct wreq *w = malloc(sizeof(*w));
    if (!w) {
        conn_close(c);
        return -1;
    }
    w->data = b->base;
    uv_buf_t ub = uv_buf_init(b->base, (unsigned)b->len);
    b->base = NULL;
    b->len = b->cap = 0;
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &ub, 1, on_written) != 0) {
        free(w->data);
        free(w);
        conn_close(c);
        return -1;
    }
    return 0;
}

static void send_reply(struct kconn *c)
{
    struct kk_buf *b = &c->reply;
    if (c->tls) {
        if (ktls_write(c->tls, c->reply.base, c->reply.len) != 0) {
            conn_close(c);
            return;
        }
        kk_buf_reset(&c->reply);
        b = ktls_out(c->tls);
    }
    if (write_buf(c, b) != 0)
        return;
    c->busy = false;
    if (!c->keep_alive) {
        conn_close(c);
        return;
    }
    /* Parse what arrived while the reply was delayed. */
    llhttp_resume(&c->parser);
    if (c->rest.len) {
        struct kk_buf r = c->rest;
        kk_buf_init(&c->rest, MAX_BODY + MAX_HEAD);
        feed(c, r.base, r.len);
        kk_buf_free(&r);
        if (!c->closing)
            write_buf(c, c->tls ? ktls_out(c->tls) : &c->outq);
    }
    if (!c->busy && !c->closing)
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_delay(uv_timer_t *t)
{
    send_reply(t->data);
}

static int on_msg_complete(llhttp_t *p)
{
    struct kconn *c = p->data;
    struct ksrv *k = c->k;
    c->keep_alive = llhttp_should_keep_alive(p);
    handle(k, c);
    uint32_t lat = k->o->lat_min_ms;
    if (k->o->lat_max_ms > lat)
        lat += (uint32_t)kk_rand_below(k->o->lat_max_ms - lat + 1);
    if (lat == 0 && c->keep_alive) {
        /* No latency to inject: queue the reply and keep parsing; on_read
         * writes every reply of this read at once (no timer, no read stop). */
        int rv = c->tls ? ktls_write(c->tls, c->reply.base, c->reply.len)
                        : kk_buf_append(&c->outq, c->reply.base, c->reply.len);
        kk_buf_reset(&c->reply);
        return rv == 0 ? 0 : -1;
    }
    c->busy = true;
    uv_timer_start(&c->delay, on_delay, lat, 0);
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_msg_begin,
    .on_header_field = on_hfield,
    .on_header_value = on_hvalue,
    .on_headers_complete = on_headers_done,
    .on_body = on_body,
    .on_message_complete = on_msg_complete,
};

static void feed(struct kconn *c, const char *p, size_t n)
{
    if (c->busy) { /* a reply is pending: keep the bytes for later */
        if (kk_buf_append(&c->rest, p, n) != 0)
            conn_close(c);
        return;
    }
    llhttp_errno_t e = llhttp_execute(&c->parser, p, n);
    if (e == HPE_PAUSED) {
        const char *pos = llhttp_get_error_pos(&c->parser);
        size_t used = pos ? (size_t)(pos - p) : n;
        uv_read_stop((uv_stream_t *)&c->tcp);
        if (used < n && kk_buf_append(&c->rest, p + used, n - used) != 0)
            conn_close(c);
    } else if (e != HPE_OK) {
        conn_close(c);
    }
}

static bool on_plain(void *user, const char *p, size_t n)
{
    struct kconn *c = user;
    feed(c, p, n);
    return !c->closing;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct kconn *c = s->data;
    if (n < 0) {
        if (!c->busy)
            conn_close(c);
        else
            uv_read_stop(s); /* reply still goes out; close after */
        return;
    }
    if (n == 0)
        return;
    if (!c->tls) {
        feed(c, b->base, (size_t)n);
        if (!c->closing)
            write_buf(c, &c->outq);
        return;
    }
    int r = ktls_input(c->tls, b->base, (size_t)n, on_plain, c);
    if (c->closing)
        return;
    if (write_buf(c, ktls_out(c->tls)) != 0) /* handshake records, replies */
        return;
    if (r < 0) {
        c->k->st.tls_errors++;
        conn_close(c);
    } else if (r > 0 && !c->busy) {
        conn_close(c);
    }
}

static void on_connection(uv_stream_t *l, int status)
{
    struct ksrv *k = l->data;
    if (status != 0 || k->stopping)
        return;
    struct kconn *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->k = k;
    uv_tcp_init(k->loop, &c->tcp);
    uv_timer_init(k->loop, &c->delay);
    c->tcp.data = c->delay.data = c;
    c->handles = 2;
    kk_buf_init(&c->head, MAX_HEAD);
    kk_buf_init(&c->body, MAX_BODY);
    kk_buf_init(&c->rest, MAX_BODY + MAX_HEAD);
    kk_buf_init(&c->reply, MAX_BODY + MAX_HEAD);
    kk_buf_init(&c->outq, 4 * (MAX_BODY + MAX_HEAD));
    llhttp_init(&c->parser, HTTP_REQUEST, &settings);
    c->parser.data = c;
    c->next = k->conns;
    if (k->conns)
        k->conns->prev = c;
    k->conns = c;
    if (k->tls)
        c->tls = ktls_conn_new(k->tls);
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0 || (k->tls && !c->tls)) {
        conn_close(c);
        return;
    }
    k->st.connections++;
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ---- lifecycle ------------------------------------------------------------------------ */
static void on_closed(uv_handle_t *h)
{
    (void)h;
}

static void stop_all(struct ksrv *k)
{
    if (k->stopping)
        return;
    k->stopping = true;
    uv_close((uv_handle_t *)&k->listener, on_closed);
    uv_close((uv_handle_t *)&k->stop_timer, on_closed);
    uv_close((uv_handle_t *)&k->progress, on_closed);
    uv_close((uv_handle_t *)&k->sig_int, on_closed);
    uv_close((uv_handle_t *)&k->sig_term, on_closed);
    while (k->conns)
        conn_close(k->conns);
}

static void on_stop_timer(uv_timer_t *t)
{
    stop_all(t->data);
}
static void on_signal(uv_signal_t *s, int signum)
{
    stop_all(s->data);
}

static void on_progress(uv_timer_t *t)
{
    struct ksrv *k = t->data;
    if (k->o->quiet || !isatty(2))
        return;
    double el = (double)(kk_mono_ms() - k->t_start_ms) / 1000.0;
    fprintf(stderr,
            "\r%8.1fs  requests %-10" PRIu64 " records %-10" PRIu64 " %9.0f rec/s  bad-sig %" PRIu64 "   ",
            el, k->st.requests, k->st.records, el > 0 ? (double)k->st.records / el : 0.0, k->st.bad_sig);
}

static int print_stats(struct ksrv *k)
{
    const struct load_opts *o = k->o;
    double el = (double)(kk_mono_ms() - k->t_start_ms) / 1000.0;
    if (!o->quiet && isatty(2))
        fputc('\n', stderr);
    printf("== kubemq-kinesis-load kinesis\n");
    printf("  %-18s %.3f s\n", "elapsed", el);
    printf("  %-18s %" PRIu64 "\n", "connections", k->st.connections);
    printf("  %-18s %" PRIu64 "\n", "requests", k->st.requests);
    for (int i = 0; i < OP__COUNT; i++)
        if (k->st.by_op[i])
            printf("    %-16s %" PRIu64 "\n", op_names[i], k->st.by_op[i]);
    printf("  %-18s %" PRIu64 " (%" PRIu64 " bytes)\n", "records", k->st.records, k->st.record_bytes);
    printf("  %-18s %.1f /s\n", "records rate", el > 0 ? (double)k->st.records / el : 0.0);
    printf("  %-18s %" PRIu64 "\n", "verified", k->st.verified);
    printf("  %-18s %" PRIu64 "\n", "bad signatures", k->st.bad_sig);
    printf("  %-18s %" PRIu64 "\n", "unsigned", k->st.unsigned_reqs);
    printf("  %-18s %" PRIu64 "\n", "throttled", k->st.throttled);
    printf("  %-18s %" PRIu64 "\n", "failed records", k->st.partial_records);
    printf("  %-18s %" PRIu64 "\n", "5xx injected", k->st.errors_5xx);
    if (k->tls)
        printf("  %-18s %" PRIu64 "\n", "tls errors", k->st.tls_errors);
    printf("  %-18s %.2f s\n", "cpu", self_cpu_s());
    fflush(stdout);
    if (!o->json_path)
        return 0;
    FILE *f = strcmp(o->json_path, "-") == 0 ? stdout : fopen(o->json_path, "w");
    if (!f)
        return -1;
    fprintf(f,
            "{\"mode\":\"kinesis\",\"elapsed_s\":%.3f,\"connections\":%" PRIu64 ",\"requests\":%" PRIu64
            ",\"by_op\":{",
            el, k->st.connections, k->st.requests);
    for (int i = 0; i < OP__COUNT; i++)
        fprintf(f, "%s\"%s\":%" PRIu64, i ? "," : "", op_names[i], k->st.by_op[i]);
    fprintf(f,
            "},\"records\":%" PRIu64 ",\"record_bytes\":%" PRIu64 ",\"bad_signatures\":%" PRIu64
            ",\"unsigned\":%" PRIu64 ",\"throttled\":%" PRIu64 ",\"failed_records\":%" PRIu64
            ",\"errors_5xx\":%" PRIu64 ",\"verified\":%" PRIu64 ",\"tls\":%s,\"tls_errors\":%" PRIu64
            ",\"self_cpu_s\":%.3f}\n",
            k->st.records, k->st.record_bytes, k->st.bad_sig, k->st.unsigned_reqs, k->st.throttled,
            k->st.partial_records, k->st.errors_5xx, k->st.verified, k->tls ? "true" : "false",
            k->st.tls_errors, self_cpu_s());
    return f != stdout && fclose(f) != 0 ? -1 : 0;
}

int run_kinesis(const struct load_opts *o)
{
    struct ksrv *k = calloc(1, sizeof(*k));
    uv_loop_t loop;
    int rc = 0;
    if (!k)
        return 2;
    k->o = o;
    kk_sigv4_init(&k->sig, "us-east-1", "kinesis");
    if (o->secret)
        snprintf(k->creds.secret_key, sizeof(k->creds.secret_key), "%s", o->secret);
    k->creds.generation = 1;
    if (o->tls_cert) {
        char err[256];
        if (ktls_server_new(o->tls_cert, &k->tls, err, sizeof(err)) != 0) {
            fprintf(stderr, "tls: %s\n", err);
            free(k);
            return 2;
        }
    }
    uv_loop_init(&loop);
    k->loop = &loop;
    uv_tcp_init(&loop, &k->listener);
    k->listener.data = k;
    uv_timer_init(&loop, &k->stop_timer);
    k->stop_timer.data = k;
    uv_timer_init(&loop, &k->progress);
    k->progress.data = k;
    uv_signal_init(&loop, &k->sig_int);
    k->sig_int.data = k;
    uv_signal_init(&loop, &k->sig_term);
    k->sig_term.data = k;

    struct sockaddr_storage ss;
    int rv = uv_ip4_addr(o->host, o->port, (struct sockaddr_in *)&ss);
    if (rv != 0)
        rv = uv_ip6_addr(o->host, o->port, (struct sockaddr_in6 *)&ss);
    if (rv == 0)
        rv = uv_tcp_bind(&k->listener, (struct sockaddr *)&ss, 0);
    if (rv == 0)
        rv = uv_listen((uv_stream_t *)&k->listener, 512, on_connection);
    if (rv != 0) {
        fprintf(stderr, "listen %s:%u: %s\n", o->host, o->port, uv_strerror(rv));
        rc = 2;
        stop_all(k);
    } else {
        struct sockaddr_storage bound;
        int blen = sizeof(bound);
        uv_tcp_getsockname(&k->listener, (struct sockaddr *)&bound, &blen);
        uint16_t port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
        printf("{\"port\":%u}\n", port);
        fflush(stdout);
        write_port_file(o->port_file, port);
        k->t_start_ms = kk_mono_ms();
        if (o->duration_s > 0)
            uv_timer_start(&k->stop_timer, on_stop_timer, (uint64_t)(o->duration_s * 1000), 0);
        uv_timer_start(&k->progress, on_progress, 1000, 1000);
        uv_signal_start(&k->sig_int, on_signal, SIGINT);
        uv_signal_start(&k->sig_term, on_signal, SIGTERM);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    int lc = uv_loop_close(&loop);
    if (lc != 0)
        fprintf(stderr, "warning: loop not closed cleanly: %s\n", uv_strerror(lc));
    if (rc == 0 && print_stats(k) != 0)
        rc = 1;
    ktls_server_free(k->tls);
    free(k);
    return rc;
}

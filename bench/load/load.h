/* kubemq-kinesis-load: shared pieces of the load tool (private to bench/load).
 *
 * One libuv loop per run.  Each mode (broker, kinesis, client) fills a
 * struct load_stats; report.c turns it into the progress line, the summary
 * table, --json, --histogram and --plot output.
 */
#ifndef KK_BENCH_LOAD_H
#define KK_BENCH_LOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* ---- options (all modes; each mode reads what it needs) ------------------ */
struct load_opts {
    const char *mode;
    const char *host;    /* bind address (broker, kinesis); default 127.0.0.1 */
    uint16_t port;       /* 0: ephemeral */
    const char *address; /* client: broker host:port */
    const char *channel; /* broker/client: channel of the requests */
    const char *kind;    /* query|command|events|queue */
    const char *method;  /* Request metadata method */
    const char *stream;  /* stream_name */
    size_t payload_bytes;
    uint32_t partition_keys;
    uint32_t batch;    /* put_records: records per request */
    uint32_t inflight; /* closed loop when rate == 0 */
    double rate;       /* open loop: requests per second */
    uint64_t requests; /* 0: use duration */
    double duration_s; /* 0: use requests */
    double warmup_s;   /* broker: run this long first, uncounted */
    uint32_t timeout_ms;
    double wait_subscribe_s;
    const char *json_path, *hist_path, *plot_path;
    int pid;              /* gateway process for CPU / RSS */
    const char *pid_file; /* or read the pid from here when the run starts */
    bool quiet;
    /* kinesis */
    uint32_t lat_min_ms, lat_max_ms;
    double throttle_rate, partial_rate, error_rate;
    const char *secret, *access_key;
    uint32_t verify_every; /* check the signature of 1 request in N (0, 1: all) */
    const char *tls_cert;  /* serve HTTPS; the generated certificate's PEM goes here */
    const char *port_file; /* write the bound port here (scripts) */
};

/* ---- log-linear histogram (HdrHistogram style, microseconds) -------------
 * Values below 2^(SUB_BITS+1) are exact; above, each power of two is split
 * into 2^SUB_BITS buckets, so the relative error is below 1/1024.  Recording
 * is O(1), percentiles walk the buckets once; samples are never stored. */
#define HIST_SUB_BITS 10
#define HIST_BUCKETS ((2u << HIST_SUB_BITS) * 28u)
struct hist {
    uint64_t count;
    uint64_t max, min;
    double sum;
    uint64_t b[HIST_BUCKETS];
};
void hist_init(struct hist *h);
void hist_record(struct hist *h, uint64_t v);
/* Smallest recorded-bucket upper bound v such that fraction q of samples are <= v. */
uint64_t hist_quantile(const struct hist *h, double q);

/* ---- stats ------------------------------------------------------------- */
enum load_err {
    LERR_IS_ERROR = 0, /* query reply with is_error true / Response.Error */
    LERR_NOT_EXECUTED, /* command reply Executed false */
    LERR_TIMEOUT,      /* no reply within --timeout-ms */
    LERR_NACK,         /* queue message NAcked */
    LERR_GRPC,         /* gRPC status != 0 (client) */
    LERR_TRANSPORT,    /* connection lost */
    LERR_BAD_REPLY,    /* unknown RequestID, undecodable */
    LERR__COUNT
};
extern const char *const load_err_names[LERR__COUNT];

struct load_stats {
    uint64_t sent, ok, errors;
    uint64_t err[LERR__COUNT];
    uint64_t t_start_ms, t_end_ms; /* monotonic */
    struct hist lat;               /* microseconds, successful replies */
    /* gateway process (--pid) */
    double cpu_start_s;
};

/* Reads utime+stime seconds of pid; -1 when unreadable. */
double proc_cpu_s(int pid);
/* VmHWM in KiB; -1 when unreadable. */
long proc_hwm_kb(int pid);

/* Progress line (stderr, only when it is a terminal). */
void report_progress(const struct load_opts *o, const struct load_stats *s, uint64_t now_ms);
/* Summary table on stdout, then --json/--histogram/--plot files.  extra_json:
 * mode-specific members ("\"k\":v,...") or NULL.  Returns 0 or -1 when a file failed. */
int report_final(const struct load_opts *o, struct load_stats *s, const char *extra_json);

/* ---- Response fields without unpacking (pbscan.c) ------------------------- */
struct resp_view {
    const char *request_id; /* not NUL-terminated; views into the wire bytes */
    size_t request_id_len;
    const uint8_t *body;
    size_t body_len;
    const char *error;
    size_t error_len;
    bool executed;
};
/* 0, or -1 for malformed protobuf. */
int pb_scan_response(const uint8_t *p, size_t n, struct resp_view *out);
/* Decimal sequence number of a RequestID; 0 or -1. */
int parse_seq(const char *s, size_t n, uint64_t *out);

/* Builds the Request JSON for o->method (partition key index key); *out is
 * malloc'ed and NUL-terminated.  0 or KK_ENOMEM. */
int build_request_body(const struct load_opts *o, uint32_t key, char **out, size_t *len);

/* Seconds of CPU (user + system) used by this process. */
double self_cpu_s(void);

/* ---- modes ---------------------------------------------------------------- */
int run_broker(const struct load_opts *o);
int run_kinesis(const struct load_opts *o);
int run_client(const struct load_opts *o);

/* Reads a pid from path; 0 when missing. */
int read_pid_file(const char *path);
/* Writes "<port>\n" to path (NULL: nothing). */
void write_port_file(const char *path, uint16_t port);

#endif

/* The parsed configuration: an immutable tree that the rest of the program
 * reads.  Loading builds a whole new tree; reload swaps trees, never edits.
 *
 * Format (kubemq-targets, connector-behaviour.md §1.2-§1.4):
 *   apiPort, logLevel, bindings: [{name, properties,
 *                                  source: {kind, name, properties},
 *                                  target: {kind, name, properties}}]
 * plus our top-level extensions logFormat and shutdown_timeout_seconds.
 * Keys are matched case-insensitively and stored lowercased (viper does the
 * same); property values of any YAML scalar type are kept as strings, after
 * ${VAR} / ${VAR:-default} expansion.
 *
 * Aliases are normalised at load, so consumers see one spelling:
 *   source kinds: kubemq.X | source.X | source.kubemq.X  -> KK_SOURCE_*
 *                 (kubemq.queue-stream is the queue source)
 *   target kinds: aws.kinesis | target.aws.kinesis | target.aws.kenisis
 *                 -> KK_TARGET_KINESIS; null | target.null -> KK_TARGET_NULL
 *   source host + port -> address "host:port" (address wins when both)
 * Every other property keeps its key; consumers read typed values with the
 * kk_props_* helpers, which never fail because values were validated at load.
 */
#ifndef KK_CONFIG_H
#define KK_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kk/log.h"

enum kk_source_kind {
    KK_SOURCE_QUERY = 0,
    KK_SOURCE_COMMAND,
    KK_SOURCE_EVENTS,
    KK_SOURCE_EVENTS_STORE,
    KK_SOURCE_QUEUE,
    KK_SOURCE__COUNT
};

enum kk_target_kind {
    KK_TARGET_KINESIS = 0,
    KK_TARGET_NULL,
    KK_TARGET__COUNT
};

/* Source property flow_control (query, command, events, events-store):
 * "exact" counts the cap in messages at the broker too (message credit),
 * "window" uses a 1 MiB HTTP/2 window (src/sources/sources.h). */
#define KK_FLOW_CONTROL_DEFAULT "window"

/* Canonical kind names: "kubemq.query", ..., "aws.kinesis", "null". */
const char *kk_source_kind_name(enum kk_source_kind k);
const char *kk_target_kind_name(enum kk_target_kind k);

struct kk_prop {
    const char *key;   /* lowercased */
    const char *value; /* expanded; never NULL */
    int line, col;     /* 1-based position of the value in the file */
};

/* Sorted by key: lookups are binary searches. */
struct kk_props {
    const struct kk_prop *v;
    size_t n;
};

struct kk_spec {
    int kind;              /* enum kk_source_kind or enum kk_target_kind */
    const char *kind_text; /* as written in the file */
    const char *name;      /* optional; "" when absent */
    struct kk_props props;
};

struct kk_binding_cfg {
    const char *name;
    struct kk_props props; /* middleware: retry_*, rate_per_second(s), metadata */
    struct kk_spec source;
    struct kk_spec target;
    int line;              /* where the binding starts */
    uint64_t hash;         /* of name + every property: reload compares these */
};

struct kk_config {
    const char *source_name; /* file path, or "CONFIG" for the environment */
    int api_port;            /* default 8081 */
    enum kk_log_level log_level;
    int log_json;            /* logFormat: json */
    int shutdown_timeout_s;  /* default 30 */
    const struct kk_binding_cfg *bindings;
    size_t n_bindings;
};

/* Diagnostics of one load: every problem found, each already formatted as
 * "file:line:column: message".  Secrets never appear in messages. */
struct kk_diag {
    char **errors;
    size_t n_errors;
    char **warnings;
    size_t n_warnings;
};
/* Every kk_config_load_* overwrites *diag (free a previous one first) and
 * leaves it for the caller to release with kk_diag_free. */
void kk_diag_free(struct kk_diag *d);

/* Loads and validates.  On success returns 0 and *out (free with
 * kk_config_free).  On failure returns KK_ECONFIG, *out is NULL and diag
 * lists every problem.  Warnings (unknown property keys) may be present
 * either way. */
int kk_config_load_file(const char *path, struct kk_config **out, struct kk_diag *diag);
int kk_config_load_string(const char *text, size_t len, const char *name, struct kk_config **out,
                          struct kk_diag *diag);
/* No file given: the CONFIG environment variable (YAML, or base64 of it). */
int kk_config_load_env(struct kk_config **out, struct kk_diag *diag);
void kk_config_free(struct kk_config *cfg);

const struct kk_binding_cfg *kk_config_binding(const struct kk_config *cfg, const char *name);

/* Typed reads (values were validated at load; def when absent or empty). */
const char *kk_props_get(const struct kk_props *p, const char *key); /* NULL if absent */
const char *kk_props_str(const struct kk_props *p, const char *key, const char *def);
int64_t kk_props_int(const struct kk_props *p, const char *key, int64_t def);
bool kk_props_bool(const struct kk_props *p, const char *key, bool def);

/* True when the value of property key must be masked in any output (GET
 * /bindings shows "***"; load errors name the key, never the value).  The
 * rule, on the key lowercased, so unknown and misspelled keys are covered:
 *   - it contains "secret", "token", "password", "passwd", "passphrase",
 *     "credential", "access_key", "apikey" or "api_key"; or
 *   - it is "aws_key"; or
 *   - it ends in "_key", unless it names data: it ends in "partition_key",
 *     "hash_key", "routing_key" or "sort_key" ("tls_key_file" and other
 *     "*_file" keys are paths, they do not end in "_key"); or
 *   - it is 128 characters or longer.
 * So aws_secret_key, aws_secret_access_key, secret_key, token, auth_token,
 * password, aws_key, api_key are secret; region, tls_key_file, partition_key
 * are not. */
bool kk_prop_is_secret(const char *key);

/* The program version ("0.1.0"), from meson's project version. */
const char *kk_version(void);

#endif

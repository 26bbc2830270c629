/* Unit tests of src/config: loading, aliases, env expansion, validation
 * messages with exact file:line:column, secrets, CONFIG, typed reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kk/b64.h"
#include "kk/config.h"
#include "kk/err.h"

#define DATA "tests/unit/data/config/"

static struct kk_config *load_ok(const char *text)
{
    struct kk_config *cfg = NULL;
    struct kk_diag d;
    int rv = kk_config_load_string(text, strlen(text), "t.yaml", &cfg, &d);
    for (size_t i = 0; i < d.n_errors; i++)
        fprintf(stderr, "unexpected: %s\n", d.errors[i]);
    assert_int_equal(rv, 0);
    assert_non_null(cfg);
    kk_diag_free(&d);
    return cfg;
}

/* Loads text that must fail; returns the diag (caller frees). */
static struct kk_diag load_bad(const char *text)
{
    struct kk_config *cfg = (struct kk_config *)1;
    struct kk_diag d;
    assert_int_equal(kk_config_load_string(text, strlen(text), "t.yaml", &cfg, &d), KK_ECONFIG);
    assert_null(cfg);
    assert_true(d.n_errors > 0);
    return d;
}

static bool has_msg(char **v, size_t n, const char *want)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v[i], want) == 0)
            return true;
    }
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, "  have: %s\n", v[i]);
    fprintf(stderr, "  want: %s\n", want);
    return false;
}

static void test_seed_example(void **state)
{
    (void)state;
    struct kk_config *cfg = NULL;
    struct kk_diag d;
    assert_int_equal(kk_config_load_file("config/seed-example.yaml", &cfg, &d), 0);
    assert_int_equal(d.n_warnings, 0);
    assert_int_equal(cfg->n_bindings, 1);
    assert_int_equal(cfg->api_port, 8081);
    assert_int_equal(cfg->shutdown_timeout_s, 30);
    const struct kk_binding_cfg *b = kk_config_binding(cfg, "kubemq-query-kafka");
    assert_non_null(b);
    assert_int_equal(b->source.kind, KK_SOURCE_QUERY);
    assert_string_equal(b->source.kind_text, "source.kubemq.query");
    assert_string_equal(b->source.name, "kubemq-query");
    assert_string_equal(kk_props_get(&b->source.props, "address"), "localhost:50000");
    assert_null(kk_props_get(&b->source.props, "host"));
    assert_null(kk_props_get(&b->source.props, "port"));
    assert_int_equal(kk_props_int(&b->source.props, "concurrency", 256), 1);
    assert_true(kk_props_bool(&b->source.props, "auto_reconnect", false));
    assert_string_equal(kk_props_str(&b->source.props, "group", "dflt"), "dflt"); /* "" -> default */
    assert_int_equal(b->target.kind, KK_TARGET_KINESIS);
    assert_string_equal(b->target.kind_text, "target.aws.kenisis");
    assert_string_equal(kk_props_get(&b->target.props, "aws_key"), "j");
    assert_string_equal(kk_props_get(&b->target.props, "region"), "us-east-2");
    assert_null(kk_config_binding(cfg, "nope"));
    /* Sorted by key: binary search relies on it. */
    for (size_t i = 1; i < b->source.props.n; i++)
        assert_true(strcmp(b->source.props.v[i - 1].key, b->source.props.v[i].key) < 0);
    kk_diag_free(&d);
    kk_config_free(cfg);
}

static void test_seed_tab(void **state)
{
    (void)state;
    struct kk_config *cfg = NULL;
    struct kk_diag d;
    assert_int_equal(kk_config_load_file(DATA "seed-tab.yaml", &cfg, &d), KK_ECONFIG);
    assert_null(cfg);
    assert_int_equal(d.n_errors, 1);
    assert_string_equal(d.errors[0], DATA "seed-tab.yaml:21:8: tab character used for indentation");
    kk_diag_free(&d);
}

static void test_tabs(void **state)
{
    (void)state;
    struct kk_diag d = load_bad("a:\n  b: 1\n\tc: 2\n");
    assert_int_equal(d.n_errors, 1);
    assert_string_equal(d.errors[0], "t.yaml:3:1: tab character used for indentation");
    kk_diag_free(&d);
    d = load_bad("bindings:\n  -\tname: x\n");
    assert_string_equal(d.errors[0], "t.yaml:2:4: tab character used for indentation");
    kk_diag_free(&d);
    d = load_bad("bindings:\n  - name: x\n   \t source: {}\n");
    assert_string_equal(d.errors[0], "t.yaml:3:4: tab character used for indentation");
    kk_diag_free(&d);
    /* tabs inside a JSON (flow) document are fine; another error is not blamed on them */
    struct kk_config *cfg = load_ok("{\n\t\"bindings\": [\n\t]\n}\n");
    kk_config_free(cfg);
    d = load_bad("{\n\t\"bindings\": [1,\n\t2}\n");
    assert_int_equal(d.n_errors, 1);
    assert_non_null(strstr(d.errors[0], "t.yaml:3:3: YAML syntax error: did not find expected ',' or ']'"));
    kk_diag_free(&d);
}

static void test_kubemq_targets_readme(void **state)
{
    (void)state;
    struct kk_config *cfg = NULL;
    struct kk_diag d;
    assert_int_equal(kk_config_load_file(DATA "kubemq-targets.yaml", &cfg, &d), 0);
    assert_int_equal(d.n_warnings, 0);
    assert_int_equal(cfg->api_port, 8080);
    assert_int_equal(cfg->n_bindings, 1);
    const struct kk_binding_cfg *b = &cfg->bindings[0];
    assert_string_equal(b->name, "kubemq-query-aws-kinesis");
    assert_int_equal(kk_props_int(&b->props, "retry_attempts", 1), 3);
    assert_int_equal(kk_props_int(&b->props, "rate_per_second", 0), 100);
    assert_string_equal(kk_props_str(&b->props, "retry_delay_type", ""), "back-off");
    assert_int_equal(b->source.kind, KK_SOURCE_QUERY);
    assert_string_equal(kk_props_get(&b->source.props, "address"), "kubemq-cluster:50000");
    assert_string_equal(kk_props_get(&b->source.props, "channel"), "query.aws.kinesis");
    assert_int_equal(b->target.kind, KK_TARGET_KINESIS);
    assert_string_equal(b->target.name, "target-aws-kinesis");
    assert_string_equal(kk_props_get(&b->target.props, "token"), "");
    /* value positions are 1-based marks of the value */
    const struct kk_prop *p = &b->target.props.v[0];
    assert_string_equal(p->key, "aws_key");
    assert_int_equal(p->line, 27);
    assert_int_equal(p->col, 18);
    assert_int_equal(b->line, 4);
    kk_diag_free(&d);
    kk_config_free(cfg);
}

static void test_json_config(void **state)
{
    (void)state;
    struct kk_config *cfg = NULL;
    struct kk_diag d;
    assert_int_equal(kk_config_load_file(DATA "config.json", &cfg, &d), 0);
    assert_int_equal(cfg->api_port, 9090);
    assert_int_equal(cfg->log_level, KK_LOG_DEBUG);
    assert_int_equal(cfg->bindings[0].source.kind, KK_SOURCE_COMMAND);
    assert_int_equal(cfg->bindings[0].target.kind, KK_TARGET_NULL);
    kk_diag_free(&d);
    kk_config_free(cfg);
}

/* Every validation error, each with its exact position, all in one load. */
static void test_errors_all_reported(void **state)
{
    (void)state;
    static const char *const want[] = {
        DATA "bad.yaml:5:23: property retry_attempts: 0 out of range 1..2147483647",
        DATA "bad.yaml:6:25: property retry_delay_type: invalid value \"sometimes\" (want one of "
             "back-off|fixed|random)",
        DATA "bad.yaml:7:17: property metadata: must be a JSON object, e.g. '{\"stream_name\":\"s1\"}'",
        DATA "bad.yaml:8:25: property rate_per_seconds: invalid integer \"abc\"",
        DATA "bad.yaml:10:13: invalid kind kubemq.querry for source",
        DATA "bad.yaml:16:25: property aws_secret_key: control character in value",
        DATA "bad.yaml:17:19: property endpoint: \"ftp://x\" must start with http:// or https://",
        DATA "bad.yaml:18:26: property max_connections: 99999 out of range 1..4096",
        DATA "bad.yaml:25:15: property port: 70000 out of range 1..65535",
        DATA "bad.yaml:26:21: property start_from: invalid value \"sequence:0\" (want new, first, last, "
             "sequence:N, time:RFC3339 or delta:SECONDS)",
        DATA "bad.yaml:27:14: property tls: invalid boolean \"maybe\" (want true or false)",
        DATA "bad.yaml:22:7: source kubemq.events-store: missing required property channel",
        DATA "bad.yaml:29:13: binding target error, kind cannot be empty",
        DATA "bad.yaml:20:11: duplicated binding names found: b1",
        DATA "bad.yaml:30:5: binding must have name",
        DATA "bad.yaml:33:18: environment variable NOPE_NOT_SET_KK is not set",
    };
    unsetenv("NOPE_NOT_SET_KK");
    struct kk_config *cfg = NULL;
    struct kk_diag d;
    assert_int_equal(kk_config_load_file(DATA "bad.yaml", &cfg, &d), KK_ECONFIG);
    assert_null(cfg);
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        assert_true(has_msg(d.errors, d.n_errors, want[i]));
    assert_true(has_msg(d.warnings, d.n_warnings,
                        DATA "bad.yaml:19:14: unknown property foo for target aws.kinesis (ignored)"));
    assert_int_equal(d.n_errors, sizeof(want) / sizeof(want[0])); /* and nothing else */
    for (size_t i = 0; i < d.n_errors; i++)
        assert_null(strstr(d.errors[i], "XYZZY")); /* the secret */
    kk_diag_free(&d);
}

static void test_small_errors(void **state)
{
    (void)state;
    struct kk_diag d;
    d = load_bad("bindings:\n  - name: a\n    source:\n      kind: \"\"\n    target:\n      kind: null\n");
    assert_true(has_msg(d.errors, d.n_errors, "t.yaml:4:13: binding source error, kind cannot be empty"));
    kk_diag_free(&d);
    d = load_bad("bindings:\n  - name: a\n    source: {kind: kubemq.query, properties: {channel: c}}\n"
                 "    target: {kind: aws.kinesys}\n");
    assert_true(has_msg(d.errors, d.n_errors,
                        "t.yaml:3:13: source kubemq.query: missing required property "
                        "address (or host and port)"));
    assert_true(has_msg(d.errors, d.n_errors, "t.yaml:4:20: invalid kind aws.kinesys for target"));
    kk_diag_free(&d);
    d = load_bad(
        "bindings:\n  - name: a\n    source: {kind: kubemq.queue, properties: {channel: c, host: h}}\n"
        "    target: {kind: null}\n");
    assert_true(has_msg(d.errors, d.n_errors,
                        "t.yaml:3:13: source kubemq.queue: host and port must be given "
                        "together (or use address)"));
    kk_diag_free(&d);
    d = load_bad("apiPort: x\nlogFormat: xml\nbindings: []\n");
    assert_true(has_msg(d.errors, d.n_errors, "t.yaml:1:10: apiPort: invalid integer \"x\""));
    assert_true(
        has_msg(d.errors, d.n_errors, "t.yaml:2:12: logFormat: invalid value \"xml\" (want text or json)"));
    kk_diag_free(&d);
    d = load_bad("bindings:\n  - name: [a\n");
    assert_int_equal(d.n_errors, 1);
    assert_non_null(strstr(d.errors[0], "t.yaml:3:1: YAML syntax error"));
    kk_diag_free(&d);
    d = load_bad("bindings:\n  - just-text\n");
    assert_true(has_msg(d.errors, d.n_errors, "t.yaml:2:5: binding must be a mapping"));
    kk_diag_free(&d);
    d = load_bad("");
    assert_true(has_msg(d.errors, d.n_errors, "t.yaml: configuration is empty"));
    kk_diag_free(&d);
    d = load_bad("bindings:\n  - name: a\n    properties: {metadata: 'not json'}\n"
                 "    source: {kind: kubemq.queue, properties: {channel: c, batch_size: 2000}}\n"
                 "    target: {kind: null}\n");
    assert_true(has_msg(d.errors, d.n_errors,
                        "t.yaml:3:28: property metadata: must be a JSON object, e.g. "
                        "'{\"stream_name\":\"s1\"}'"));
    assert_true(has_msg(d.errors, d.n_errors, "t.yaml:4:71: property batch_size: 2000 out of range 1..1024"));
    kk_diag_free(&d);
    struct kk_config *cfg = NULL;
    assert_int_equal(kk_config_load_file(DATA "does-not-exist.yaml", &cfg, &d), KK_ECONFIG);
    assert_true(
        has_msg(d.errors, d.n_errors, DATA "does-not-exist.yaml: cannot open: No such file or directory"));
    kk_diag_free(&d);
}

static void test_env_expansion(void **state)
{
    (void)state;
    setenv("KK_T_ADDR", "10.0.0.1:50000", 1);
    setenv("KK_T_EMPTY", "", 1);
    setenv("KK_T_SECRET", "s3cr3t-value", 1);
    unsetenv("KK_T_UNSET");
    struct kk_config *cfg =
        load_ok("bindings:\n"
                "  - name: ${KK_T_UNSET:-envname}\n"
                "    source:\n"
                "      kind: kubemq.query\n"
                "      properties:\n"
                "        address: ${KK_T_ADDR}\n"
                "        channel: \"pre-${KK_T_UNSET:-dflt}-$$-${KK_T_EMPTY:-e}-x${KK_T_EMPTY}y\"\n"
                "        client_id: cost$5\n"
                "    target:\n"
                "      kind: aws.kinesis\n"
                "      properties:\n"
                "        aws_secret_key: ${KK_T_SECRET}\n");
    const struct kk_binding_cfg *b = &cfg->bindings[0];
    assert_string_equal(b->name, "envname");
    assert_string_equal(kk_props_get(&b->source.props, "address"), "10.0.0.1:50000");
    assert_string_equal(kk_props_get(&b->source.props, "channel"), "pre-dflt-$-e-xy");
    assert_string_equal(kk_props_get(&b->source.props, "client_id"), "cost$5");
    assert_string_equal(kk_props_get(&b->target.props, "aws_secret_key"), "s3cr3t-value");
    kk_config_free(cfg);

    struct kk_diag d = load_bad("bindings:\n  - name: a\n    source:\n      kind: kubemq.queue\n"
                                "      properties:\n        channel: ${KK_T_UNSET}\n"
                                "        client_id: ${bad name}\n        group: ${KK_T_ADDR\n"
                                "    target: {kind: null}\n");
    assert_true(has_msg(d.errors, d.n_errors, "t.yaml:6:18: environment variable KK_T_UNSET is not set"));
    assert_true(has_msg(d.errors, d.n_errors, "t.yaml:7:20: invalid variable reference ${bad name}"));
    assert_true(has_msg(d.errors, d.n_errors, "t.yaml:8:16: unterminated ${ in value"));
    assert_int_equal(d.n_errors, 3); /* an unset ${VAR} is not also a missing channel */
    kk_diag_free(&d);
}

/* Secrets never reach a message, whatever is wrong with them. */
static void test_secret_redaction(void **state)
{
    (void)state;
    setenv("KK_T_SECRET2", "TOPSECRET\nline2", 1);
    struct kk_diag d = load_bad("bindings:\n  - name: a\n"
                                "    source: {kind: kubemq.query, properties: {address: 'a:1', channel: c,"
                                " auth_token: \"TOPSECRET\\u0007\"}}\n"
                                "    target:\n      kind: aws.kinesis\n      properties:\n"
                                "        aws_secret_key: ${KK_T_SECRET2}\n"
                                "        aws_key: \"TOPSECRET\\ttab\\u0001\"\n"
                                "        token: [TOPSECRET]\n");
    assert_int_equal(d.n_errors, 4);
    for (size_t i = 0; i < d.n_errors; i++) {
        assert_null(strstr(d.errors[i], "TOPSECRET"));
    }
    assert_true(
        has_msg(d.errors, d.n_errors, "t.yaml:7:25: property aws_secret_key: control character in value"));
    assert_true(has_msg(d.errors, d.n_errors, "t.yaml:9:16: token must be a single value, not a list"));
    assert_true(kk_prop_is_secret("aws_secret_key"));
    assert_true(kk_prop_is_secret("token"));
    assert_true(kk_prop_is_secret("auth_token"));
    assert_true(kk_prop_is_secret("aws_key"));
    assert_false(kk_prop_is_secret("region"));
    kk_diag_free(&d);
}

/* The mask rule covers misspelled, AWS-style and unknown keys (config.h). */
static void test_secret_key_rule(void **state)
{
    (void)state;
    static const char *const secret[] = {
        "aws_secret_key",
        "AWS_SECRET_ACCESS_KEY",
        "aws_secret_acess_key",
        "secret_key",
        "secret",
        "token",
        "auth_token",
        "session_token",
        "x-amz-security-token",
        "password",
        "db_passwd",
        "passphrase",
        "credentials",
        "aws_key",
        "AWS_Key",
        "api_key",
        "apikey",
        "access_key",
        "aws_access_key_id",
        "client_key",
        "private_key",
    };
    static const char *const plain[] = {
        "region",
        "endpoint",
        "tls_key_file",
        "tls_cert_file",
        "partition_key",
        "explicit_hash_key",
        "routing_key",
        "channel",
        "client_id",
        "key",
        "max_connections",
        "stream_name",
        "",
    };
    for (size_t i = 0; i < sizeof(secret) / sizeof(secret[0]); i++)
        if (!kk_prop_is_secret(secret[i]))
            fail_msg("%s should be secret", secret[i]);
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
        if (kk_prop_is_secret(plain[i]))
            fail_msg("%s should not be secret", plain[i]);
    char longkey[200];
    memset(longkey, 'a', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    assert_true(kk_prop_is_secret(longkey));
    assert_false(kk_prop_is_secret(NULL));
}

/* A broken ${...} in a secret's value is reported by key only: the raw text
 * (which may be the secret itself) and any variable name in it stay out. */
static void test_secret_expansion_errors(void **state)
{
    (void)state;
    unsetenv("KK_T_PWUNSET");
    struct kk_diag d = load_bad("bindings:\n  - name: a\n"
                                "    source: {kind: kubemq.query, properties: {address: 'a:1', channel: c,"
                                " auth_token: \"Pa55${w0rd\"}}\n"
                                "    target:\n      kind: aws.kinesis\n      properties:\n"
                                "        aws_secret_key: \"My${Pa55 w0rd}x\"\n"
                                "        aws_secret_access_key: \"${KK_T_PWUNSET}\"\n"
                                "        token: \"${}Pa55w0rd\"\n"
                                "        region: \"${bad region}\"\n");
    for (size_t i = 0; i < d.n_errors; i++) {
        assert_null(strstr(d.errors[i], "Pa55"));
        assert_null(strstr(d.errors[i], "w0rd"));
        assert_null(strstr(d.errors[i], "KK_T_PWUNSET"));
    }
    assert_true(
        has_msg(d.errors, d.n_errors, "t.yaml:3:87: invalid ${...} expansion in the value of auth_token"));
    assert_true(has_msg(d.errors, d.n_errors,
                        "t.yaml:7:25: invalid ${...} expansion in the value of aws_secret_key"));
    assert_true(
        has_msg(d.errors, d.n_errors,
                "t.yaml:8:32: an environment variable in the value of aws_secret_access_key is not set"));
    assert_true(has_msg(d.errors, d.n_errors, "t.yaml:9:16: invalid ${...} expansion in the value of token"));
    /* not a secret: the reference is quoted as before */
    assert_true(has_msg(d.errors, d.n_errors, "t.yaml:10:17: invalid variable reference ${bad region}"));
    assert_int_equal(d.n_errors, 5);
    kk_diag_free(&d);
}

static void test_aliases(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int kind;
    } src[] = {
        {"kubemq.query", KK_SOURCE_QUERY},
        {"source.query", KK_SOURCE_QUERY},
        {"source.kubemq.query", KK_SOURCE_QUERY},
        {"kubemq.command", KK_SOURCE_COMMAND},
        {"source.command", KK_SOURCE_COMMAND},
        {"source.kubemq.command", KK_SOURCE_COMMAND},
        {"kubemq.events", KK_SOURCE_EVENTS},
        {"source.events", KK_SOURCE_EVENTS},
        {"source.kubemq.events", KK_SOURCE_EVENTS},
        {"kubemq.events-store", KK_SOURCE_EVENTS_STORE},
        {"source.events-store", KK_SOURCE_EVENTS_STORE},
        {"source.kubemq.events-store", KK_SOURCE_EVENTS_STORE},
        {"kubemq.queue", KK_SOURCE_QUEUE},
        {"source.queue", KK_SOURCE_QUEUE},
        {"source.kubemq.queue", KK_SOURCE_QUEUE},
        {"kubemq.queue-stream", KK_SOURCE_QUEUE},
        {"source.queue-stream", KK_SOURCE_QUEUE},
    };
    static const struct {
        const char *text;
        int kind;
    } tgt[] = {
        {"aws.kinesis", KK_TARGET_KINESIS},        {"target.aws.kinesis", KK_TARGET_KINESIS},
        {"target.aws.kenisis", KK_TARGET_KINESIS}, {"null", KK_TARGET_NULL},
        {"target.null", KK_TARGET_NULL},
    };
    char text[512];
    for (size_t i = 0; i < sizeof(src) / sizeof(src[0]); i++) {
        size_t t = i % (sizeof(tgt) / sizeof(tgt[0]));
        snprintf(text, sizeof(text),
                 "bindings:\n  - name: a\n    source: {kind: %s, properties: {address: 'h:1', channel: c}}\n"
                 "    target: {kind: %s}\n",
                 src[i].text, tgt[t].text);
        struct kk_config *cfg = load_ok(text);
        assert_int_equal(cfg->bindings[0].source.kind, src[i].kind);
        assert_string_equal(cfg->bindings[0].source.kind_text, src[i].text);
        assert_int_equal(cfg->bindings[0].target.kind, tgt[t].kind);
        kk_config_free(cfg);
    }
    assert_string_equal(kk_source_kind_name(KK_SOURCE_EVENTS_STORE), "kubemq.events-store");
    assert_string_equal(kk_target_kind_name(KK_TARGET_KINESIS), "aws.kinesis");
    assert_string_equal(kk_target_kind_name(KK_TARGET_NULL), "null");
}

static void test_host_port(void **state)
{
    (void)state;
    struct kk_config *cfg =
        load_ok("bindings:\n"
                "  - name: a\n"
                "    source: {kind: kubemq.events, properties: {host: h1, port: 5000, channel: c}}\n"
                "    target: {kind: null}\n"
                "  - name: b\n"
                "    source: {kind: kubemq.events, properties: {host: h1, port: 5000, "
                "address: 'a2:7', channel: c}}\n"
                "    target: {kind: null}\n"
                "  - name: q\n"
                "    source: {kind: kubemq.queue, properties: {channel: c}}\n"
                "    target: {kind: null}\n");
    const struct kk_props *p = &cfg->bindings[0].source.props;
    assert_string_equal(kk_props_get(p, "address"), "h1:5000");
    assert_null(kk_props_get(p, "host"));
    assert_null(kk_props_get(p, "port"));
    assert_int_equal(p->n, 2);
    p = &cfg->bindings[1].source.props;
    assert_string_equal(kk_props_get(p, "address"), "a2:7");
    assert_null(kk_props_get(p, "host"));
    assert_string_equal(kk_props_get(&cfg->bindings[2].source.props, "address"), "localhost:50000");
    kk_config_free(cfg);
}

static void test_case_and_scalars(void **state)
{
    (void)state;
    struct kk_config *cfg =
        load_ok("APIPORT: 0\nLogLevel: ERROR\nLOGFORMAT: Json\nShutdown_Timeout_Seconds: 5\n"
                "Bindings:\n"
                "  - Name: A\n"
                "    Properties: {Retry_Attempts: 7}\n"
                "    Source:\n"
                "      Kind: KUBEMQ.Queue\n"
                "      Properties:\n"
                "        CHANNEL: Ch\n"
                "        batch_size: 10\n"
                "        do_not_parse_payload: true\n"
                "        tls: False\n"
                "    Target: {Kind: Target.AWS.Kinesis, Properties: {use_fips: yes, "
                "max_connections: 64, token: ~}}\n");
    assert_int_equal(cfg->api_port, 8081); /* 0 -> default */
    assert_int_equal(cfg->log_level, KK_LOG_ERROR);
    assert_int_equal(cfg->log_json, 1);
    assert_int_equal(cfg->shutdown_timeout_s, 5);
    const struct kk_binding_cfg *b = &cfg->bindings[0];
    assert_string_equal(b->name, "A");
    assert_int_equal(kk_props_int(&b->props, "retry_attempts", 1), 7);
    assert_string_equal(kk_props_get(&b->source.props, "channel"), "Ch"); /* values keep case */
    assert_string_equal(kk_props_get(&b->source.props, "batch_size"), "10");
    assert_true(kk_props_bool(&b->source.props, "do_not_parse_payload", false));
    assert_false(kk_props_bool(&b->source.props, "tls", true));
    assert_true(kk_props_bool(&b->target.props, "use_fips", false));
    assert_int_equal(kk_props_int(&b->target.props, "max_connections", 32), 64);
    assert_string_equal(kk_props_get(&b->target.props, "token"), "");
    assert_int_equal(b->target.kind, KK_TARGET_KINESIS);
    kk_config_free(cfg);
}

static void test_wait_timeout_hex_rejected(void **state)
{
    (void)state;
    struct kk_diag d = load_bad("bindings:\n  - name: a\n    source: {kind: kubemq.queue, properties: "
                                "{channel: c, wait_timeout: 0x1}}\n    target: {kind: null}\n");
    assert_true(has_msg(d.errors, d.n_errors, "t.yaml:3:73: property wait_timeout: invalid integer \"0x1\""));
    kk_diag_free(&d);
}

static void test_duplicates_and_warnings(void **state)
{
    (void)state;
    struct kk_diag d =
        load_bad("bindings:\n"
                 "  - name: same\n    source: {kind: kubemq.queue, properties: {channel: c}}\n"
                 "    target: {kind: null}\n"
                 "  - name: same\n    source: {kind: kubemq.queue, properties: {channel: c, Channel: d}}\n"
                 "    target: {kind: null}\n");
    assert_true(has_msg(d.errors, d.n_errors, "t.yaml:5:11: duplicated binding names found: same"));
    assert_true(has_msg(d.errors, d.n_errors, "t.yaml:6:59: duplicate property channel"));
    kk_diag_free(&d);
    d = load_bad("bindings: []\nBindings: []\n");
    assert_true(has_msg(d.errors, d.n_errors, "t.yaml:2:1: duplicate key Bindings in configuration"));
    kk_diag_free(&d);
    d = load_bad("bindings:\n  - name: a\n    source: {kind: kubemq.queue, properties: {channel: c}}\n"
                 "    target: {kind: null, KIND: null}\n");
    assert_true(has_msg(d.errors, d.n_errors, "t.yaml:4:26: duplicate key KIND in target"));
    kk_diag_free(&d);

    struct kk_config *cfg = NULL;
    const char *text = "extra: 1\nbindings:\n  - name: a\n    colour: red\n"
                       "    properties: {retry_atempts: 3}\n"
                       "    source: {kind: kubemq.queue, properties: {channel: c, group: g, max_requeue: 3,"
                       " visibility_timeout_seconds: 30}}\n"
                       "    target: {kind: null, properties: {x: 1}}\n";
    assert_int_equal(kk_config_load_string(text, strlen(text), "t.yaml", &cfg, &d), 0);
    assert_int_equal(d.n_errors, 0);
    assert_int_equal(d.n_warnings, 5);
    assert_true(
        has_msg(d.warnings, d.n_warnings, "t.yaml:1:1: unknown key extra in configuration (ignored)"));
    assert_true(has_msg(d.warnings, d.n_warnings, "t.yaml:4:5: unknown key colour in binding (ignored)"));
    assert_true(has_msg(d.warnings, d.n_warnings,
                        "t.yaml:5:33: unknown property retry_atempts for binding (ignored)"));
    assert_true(has_msg(d.warnings, d.n_warnings,
                        "t.yaml:6:66: unknown property group for source kubemq.queue (ignored)"));
    assert_true(
        has_msg(d.warnings, d.n_warnings, "t.yaml:7:42: unknown property x for target null (ignored)"));
    kk_diag_free(&d);
    kk_config_free(cfg);
}

static void test_hash(void **state)
{
    (void)state;
    const char *fmt =
        "bindings:\n"
        "  - name: a\n    source: {kind: kubemq.query, properties: {address: 'h:1', channel: %s}}\n"
        "    target: {kind: null}\n"
        "  - name: b\n    source: {kind: kubemq.query, properties: {address: 'h:1', channel: c}}\n"
        "    target: {kind: aws.kinesis, properties: {region: %s}}\n";
    char t1[512], t2[512], t3[512];
    snprintf(t1, sizeof(t1), fmt, "c", "r1");
    snprintf(t2, sizeof(t2), fmt, "c", "r2");
    snprintf(t3, sizeof(t3), fmt, "c2", "r1");
    struct kk_config *c1 = load_ok(t1), *c1b = load_ok(t1), *c2 = load_ok(t2), *c3 = load_ok(t3);
    assert_true(c1->bindings[0].hash == c1b->bindings[0].hash);
    assert_true(c1->bindings[1].hash == c1b->bindings[1].hash);
    assert_true(c1->bindings[0].hash == c2->bindings[0].hash);
    assert_true(c1->bindings[1].hash != c2->bindings[1].hash);
    assert_true(c1->bindings[0].hash != c3->bindings[0].hash);
    assert_true(c1->bindings[1].hash == c3->bindings[1].hash);
    /* an alias spelling is the same binding */
    char t4[512];
    snprintf(t4, sizeof(t4), "%s", t1);
    char *k = strstr(t4, "kind: kubemq.query");
    memcpy(k, "kind: source.query", 18);
    struct kk_config *c4 = load_ok(t4);
    assert_true(c1->bindings[0].hash == c4->bindings[0].hash);
    kk_config_free(c1);
    kk_config_free(c1b);
    kk_config_free(c2);
    kk_config_free(c3);
    kk_config_free(c4);
}

static void test_config_env(void **state)
{
    (void)state;
    const char *yaml =
        "bindings:\n  - name: from-env\n    source: {kind: kubemq.queue, properties: {channel: c}}\n"
        "    target: {kind: null}\n";
    struct kk_config *cfg = NULL;
    struct kk_diag d;
    setenv("CONFIG", yaml, 1);
    assert_int_equal(kk_config_load_env(&cfg, &d), 0);
    assert_string_equal(cfg->source_name, "CONFIG");
    assert_string_equal(cfg->bindings[0].name, "from-env");
    kk_config_free(cfg);
    kk_diag_free(&d);

    char b64[1024];
    size_t n = kk_b64_encode(b64, (const uint8_t *)yaml, strlen(yaml));
    b64[n] = '\0';
    setenv("CONFIG", b64, 1);
    assert_int_equal(kk_config_load_env(&cfg, &d), 0);
    assert_string_equal(cfg->bindings[0].name, "from-env");
    kk_config_free(cfg);
    kk_diag_free(&d);

    /* base64 of a bad config: positions refer to the decoded text */
    const char *bad = "bindings:\n  - name: x\n    source: {kind: kubemq.nope}\n    target: {kind: null}\n";
    n = kk_b64_encode(b64, (const uint8_t *)bad, strlen(bad));
    b64[n] = '\0';
    setenv("CONFIG", b64, 1);
    assert_int_equal(kk_config_load_env(&cfg, &d), KK_ECONFIG);
    assert_true(has_msg(d.errors, d.n_errors, "CONFIG:3:20: invalid kind kubemq.nope for source"));
    kk_diag_free(&d);

    setenv("CONFIG", "", 1);
    assert_int_equal(kk_config_load_env(&cfg, &d), KK_ECONFIG);
    assert_true(has_msg(d.errors, d.n_errors, "CONFIG: no config data from environment variable"));
    kk_diag_free(&d);
    unsetenv("CONFIG");
}

static void test_start_from_values(void **state)
{
    (void)state;
    static const char *const good[] = {"new",     "first", "last", "sequence:1", "time:2024-01-02T03:04:05Z",
                                       "delta:60"};
    static const char *const bad[] = {"sequence:", "delta:0", "time:yesterday", "oldest"};
    char text[512];
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(
            text, sizeof(text),
            "bindings:\n  - name: a\n    source: {kind: kubemq.events-store, properties: {address: 'h:1', "
            "channel: c, start_from: '%s'}}\n    target: {kind: null}\n",
            good[i]);
        kk_config_free(load_ok(text));
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(
            text, sizeof(text),
            "bindings:\n  - name: a\n    source: {kind: kubemq.events-store, properties: {address: 'h:1', "
            "channel: c, start_from: '%s'}}\n    target: {kind: null}\n",
            bad[i]);
        struct kk_diag d = load_bad(text);
        assert_int_equal(d.n_errors, 1);
        assert_non_null(strstr(d.errors[0], "property start_from: invalid value"));
        kk_diag_free(&d);
    }
}

/* flow_control: exact and window load; anything else, and exact with more
 * subscriptions than slots (some would hold no credit), are errors. */
static void test_flow_control(void **state)
{
    (void)state;
    static const char fmt[] = "bindings:\n  - name: a\n    source: {kind: %s, properties: {address: 'h:1', "
                              "channel: c, %s}}\n    target: {kind: null}\n";
    static const struct {
        const char *kind, *props, *err; /* err NULL: loads */
    } cases[] = {
        {"kubemq.query", "flow_control: exact", NULL},
        {"kubemq.command", "flow_control: window, sources: 9, concurrency: 2", NULL},
        {"kubemq.events", "flow_control: exact, sources: 4, concurrency: 4", NULL},
        {"kubemq.events-store", "flow_control: exact", NULL},
        {"kubemq.query", "flow_control: bytes", "property flow_control: invalid value \"bytes\""},
        {"kubemq.query", "flow_control: exact, sources: 3, concurrency: 2",
         "source kubemq.query: sources (3) must not exceed concurrency (2) with flow_control exact"},
        {"kubemq.queue", "flow_control: exact", "unknown property flow_control"}, /* a warning only */
    };
    char text[512];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(text, sizeof(text), fmt, cases[i].kind, cases[i].props);
        if (!cases[i].err || strncmp(cases[i].err, "unknown", 7) == 0) {
            struct kk_config *cfg = NULL;
            struct kk_diag d;
            assert_int_equal(kk_config_load_string(text, strlen(text), "t.yaml", &cfg, &d), 0);
            if (cases[i].err) {
                assert_int_equal(d.n_warnings, 1);
                assert_non_null(strstr(d.warnings[0], cases[i].err));
            }
            kk_diag_free(&d);
            kk_config_free(cfg);
            continue;
        }
        struct kk_diag d = load_bad(text);
        assert_int_equal(d.n_errors, 1);
        if (!strstr(d.errors[0], cases[i].err))
            fail_msg("case %zu: %s", i, d.errors[0]);
        kk_diag_free(&d);
    }
}

/* Mutated configs (deterministic): every load either succeeds or explains
 * itself, and never touches memory it should not (run under ASan too). */
static void test_mutations(void **state)
{
    (void)state;
    static char base[8192];
    FILE *f = fopen("config/local.yaml", "rb");
    assert_non_null(f);
    size_t n = fread(base, 1, sizeof(base), f);
    fclose(f);
    assert_true(n > 100);
    static const char special[] = "${}:-$\t\n'\"[]{}#&*!|>";
    unsigned seed = 12345;
    char buf[8192];
    for (int it = 0; it < 2000; it++) {
        memcpy(buf, base, n);
        size_t len = n;
        for (int j = 0; j < 1 + it % 4; j++) {
            seed = seed * 1103515245u + 12345u;
            size_t p = (seed >> 8) % len;
            switch ((seed >> 4) % 4) {
            case 0:
                buf[p] = (char)(seed >> 16);
                break;
            case 1:
                buf[p] = special[(seed >> 16) % (sizeof(special) - 1)];
                break;
            case 2:
                len = p + 1;
                break;
            default:
                buf[p] = ' ';
                break;
            }
        }
        struct kk_config *cfg = NULL;
        struct kk_diag d;
        int rv = kk_config_load_string(buf, len, "m.yaml", &cfg, &d);
        if (rv == 0) {
            assert_non_null(cfg);
            for (size_t i = 0; i < cfg->n_bindings; i++)
                assert_non_null(cfg->bindings[i].name);
            kk_config_free(cfg);
        } else {
            assert_int_equal(rv, KK_ECONFIG);
            assert_null(cfg);
            assert_true(d.n_errors > 0);
        }
        kk_diag_free(&d);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed_example),
        cmocka_unit_test(test_seed_tab),
        cmocka_unit_test(test_tabs),
        cmocka_unit_test(test_kubemq_targets_readme),
        cmocka_unit_test(test_json_config),
        cmocka_unit_test(test_errors_all_reported),
        cmocka_unit_test(test_small_errors),
        cmocka_unit_test(test_env_expansion),
        cmocka_unit_test(test_secret_redaction),
        cmocka_unit_test(test_secret_key_rule),
        cmocka_unit_test(test_secret_expansion_errors),
        cmocka_unit_test(test_aliases),
        cmocka_unit_test(test_host_port),
        cmocka_unit_test(test_case_and_scalars),
        cmocka_unit_test(test_wait_timeout_hex_rejected),
        cmocka_unit_test(test_duplicates_and_warnings),
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_config_env),
        cmocka_unit_test(test_start_from_values),
        cmocka_unit_test(test_flow_control),
        cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

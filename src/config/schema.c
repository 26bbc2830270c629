/* The property schema of every kind (see schema.h).  Ranges follow
 * kubemq-targets where it has one (connector-behaviour.md §4.1, §5) and our
 * own limits elsewhere (kinesis.md §0 for record and request sizes). */
#include "schema.h"

#include "kk/config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define I32MAX 2147483647LL

const struct kk_prop_rule kk_prop_rules[] = {
    /* every source kind */
    {"address", KM_SOURCES, PT_STR, 0, 0, NULL, NULL, 0},
    {"host", KM_SOURCES, PT_STR, 0, 0, NULL, NULL, 0},
    {"port", KM_SOURCES, PT_INT, 1, 65535, NULL, NULL, 0},
    {"client_id", KM_SOURCES, PT_STR, 0, 0, NULL, NULL, 0},
    {"auth_token", KM_SOURCES, PT_STR, 0, 0, NULL, "", PF_SECRET},
    {"channel", KM_SOURCES, PT_STR, 0, 0, NULL, NULL, PF_REQUIRED},
    {"group", KM_SUBS, PT_STR, 0, 0, NULL, "", 0},
    {"sources", KM_SUBS, PT_INT, 1, 1024, NULL, "1", 0},
    {"sources", KM_QUEUE, PT_INT, 1, 100, NULL, "1", 0},
    {"concurrency", KM_SOURCES, PT_INT, 1, 100000, NULL, "256", 0},
    {"flow_control", KM_SUBS, PT_ENUM, 0, 0, "exact|window|", KK_FLOW_CONTROL_DEFAULT, 0},
    {"auto_reconnect", KM_SOURCES, PT_BOOL, 0, 0, NULL, "true", 0},
    {"reconnect_interval_seconds", KM_SOURCES, PT_INT, 0, 1000000, NULL, "0", 0},
    {"max_reconnects", KM_SOURCES, PT_INT, 0, I32MAX, NULL, "0", 0},
    {"do_not_parse_payload", KM_SOURCES, PT_BOOL, 0, 0, NULL, "false", 0},
    {"tls", KM_SOURCES, PT_BOOL, 0, 0, NULL, "false", 0},
    {"tls_ca_file", KM_SOURCES | KM_KINESIS, PT_STR, 0, 0, NULL, NULL, 0},
    {"tls_cert_file", KM_SOURCES, PT_STR, 0, 0, NULL, NULL, 0},
    {"tls_key_file", KM_SOURCES, PT_STR, 0, 0, NULL, NULL, 0},
    {"tls_server_name", KM_SOURCES, PT_STR, 0, 0, NULL, NULL, 0},
    {"tls_insecure_skip_verify", KM_SOURCES | KM_KINESIS, PT_BOOL, 0, 0, NULL, "false", 0},
    {"connect_timeout_ms", KM_SOURCES | KM_KINESIS, PT_INT, 1, 600000, NULL, "5000", 0},
    {"response_channel", KM_EVENTS | KM_EVENTS_STORE | KM_QUEUE, PT_STR, 0, 0, NULL, "", 0},
    {"start_from", KM_EVENTS_STORE, PT_START_FROM, 0, 0, NULL, "new", 0},
    {"batch_size", KM_QUEUE, PT_INT, 1, 1024, NULL, "1", 0},
    {"wait_timeout", KM_QUEUE, PT_INT, 1, 86400, NULL, "5", 0},
    {"max_requeue", KM_QUEUE, PT_IGNORED, 0, 0, NULL, NULL, 0},
    {"visibility_timeout_seconds", KM_QUEUE, PT_IGNORED, 0, 0, NULL, NULL, 0},

    /* aws.kinesis: nothing required at load (the environment may supply
     * credentials and region; the target reports what is missing) */
    {"aws_key", KM_KINESIS, PT_STR, 0, 0, NULL, NULL, PF_SECRET},
    {"aws_secret_key", KM_KINESIS, PT_STR, 0, 0, NULL, NULL, PF_SECRET},
    {"token", KM_KINESIS, PT_STR, 0, 0, NULL, "", PF_SECRET},
    {"region", KM_KINESIS, PT_STR, 0, 0, NULL, NULL, 0},
    {"profile", KM_KINESIS, PT_STR, 0, 0, NULL, NULL, 0},
    {"endpoint", KM_KINESIS, PT_URL, 0, 0, NULL, NULL, 0},
    {"use_fips", KM_KINESIS, PT_BOOL, 0, 0, NULL, "false", 0},
    {"max_connections", KM_KINESIS, PT_INT, 1, 4096, NULL, "32", 0},
    {"idle_timeout_ms", KM_KINESIS, PT_INT, 0, 3600000, NULL, "20000", 0},
    {"request_timeout_ms", KM_KINESIS, PT_INT, 1, 3600000, NULL, "10000", 0},
    {"max_record_bytes", KM_KINESIS, PT_INT, 1, 10485760, NULL, "1048576", 0},
    {"max_request_bytes", KM_KINESIS, PT_INT, 1, 10485760, NULL, "5242880", 0},
    {"max_response_bytes", KM_KINESIS, PT_INT, 1, 1073741824, NULL, "16777216", 0},

    /* binding middleware (connector-behaviour.md §5) */
    {"retry_attempts", KM_BINDING, PT_INT, 1, I32MAX, NULL, "1", 0},
    {"retry_delay_milliseconds", KM_BINDING, PT_INT, 0, I32MAX, NULL, "100", 0},
    {"retry_max_jitter_milliseconds", KM_BINDING, PT_INT, 1, I32MAX, NULL, "100", 0},
    {"retry_delay_type", KM_BINDING, PT_ENUM, 0, 0, "back-off|fixed|random|", "back-off", 0},
    {"rate_per_second", KM_BINDING, PT_INT, 0, I32MAX, NULL, "0", 0},
    {"rate_per_seconds", KM_BINDING, PT_INT, 0, I32MAX, NULL, "0", 0},
    {"metadata", KM_BINDING, PT_JSON_OBJ, 0, 0, NULL, NULL, 0},
};

const unsigned kk_n_prop_rules = sizeof(kk_prop_rules) / sizeof(kk_prop_rules[0]);

const struct kk_prop_rule *kk_prop_rule_find(const char *key, unsigned km)
{
    /* Load time only: a linear pass over ~50 rows is cheaper than an index. */
    for (unsigned i = 0; i < kk_n_prop_rules; i++) {
        if ((kk_prop_rules[i].kinds & km) && strcmp(kk_prop_rules[i].key, key) == 0)
            return &kk_prop_rules[i];
    }
    return NULL;
}

int kk_parse_int64(const char *s, int64_t *out)
{
    if (!s || !*s)
        return -1;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

int kk_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "t", "1", "yes", "y", "on"};
    static const char *const no[] = {"false", "f", "0", "no", "n", "off"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* Private to src/config: the property schema, one row per key.
 *
 * A row applies to the kinds in its mask; the same key may have two rows
 * with disjoint masks when the range differs by kind (sources: 1..1024,
 * queue 1..100).  Defaults are documentation for README and consumers; the
 * loader only inserts one default (queue address), as kubemq-targets does.
 */
#ifndef KK_CONFIG_SCHEMA_H
#define KK_CONFIG_SCHEMA_H

#include <stdbool.h>
#include <stdint.h>

/* Kind masks: one bit per source kind, per target kind, and the binding's
 * own (middleware) properties. */
#define KM_QUERY (1u << 0)
#define KM_COMMAND (1u << 1)
#define KM_EVENTS (1u << 2)
#define KM_EVENTS_STORE (1u << 3)
#define KM_QUEUE (1u << 4)
#define KM_KINESIS (1u << 5)
#define KM_NULL (1u << 6)
#define KM_BINDING (1u << 7)
#define KM_SOURCES (KM_QUERY | KM_COMMAND | KM_EVENTS | KM_EVENTS_STORE | KM_QUEUE)
#define KM_SUBS (KM_QUERY | KM_COMMAND | KM_EVENTS | KM_EVENTS_STORE)

enum kk_ptype {
    PT_STR,        /* any text */
    PT_INT,        /* decimal integer within [min, max] */
    PT_BOOL,       /* true/false/1/0/t/f/yes/no/on/off, any case */
    PT_ENUM,       /* one of the '|'-separated words of enums ("" allowed if listed) */
    PT_URL,        /* starts with http:// or https:// */
    PT_START_FROM, /* new | first | last | sequence:N | time:RFC3339 | delta:S */
    PT_JSON_OBJ,   /* a JSON object, as text */
    PT_IGNORED,    /* legacy key: accepted, not validated, no warning */
};

#define PF_SECRET 1u   /* never echo the value */
#define PF_REQUIRED 2u /* must be present and non-empty */

struct kk_prop_rule {
    const char *key;
    unsigned kinds;
    enum kk_ptype type;
    int64_t min, max;
    const char *enums;
    const char *def; /* NULL: no default */
    unsigned flags;
};

extern const struct kk_prop_rule kk_prop_rules[];
extern const unsigned kk_n_prop_rules;

/* The row for key under kind mask km, or NULL (unknown key). */
const struct kk_prop_rule *kk_prop_rule_find(const char *key, unsigned km);

/* Shared parsers, used by validation and by kk_props_*. Return 0 or -1. */
int kk_parse_int64(const char *s, int64_t *out);
int kk_parse_bool(const char *s, bool *out);

#endif

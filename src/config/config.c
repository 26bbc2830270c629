/* YAML (or JSON) -> immutable kk_config tree, with every problem reported.
 *
 * libyaml's document loader gives us a node graph with marks; we walk it
 * once, expand ${VAR} in scalars, normalise kind aliases and host/port,
 * validate against the schema table (schema.c) and copy the result into one
 * arena.  Validation never stops at the first problem: each is appended to
 * the diag as "file:line:column: message" and the load fails at the end.
 */
#include "kk/config.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "kk/b64.h"
#include "kk/clock.h"
#include "kk/err.h"
#include "schema.h"

/* A config file larger than this is a mistake, not a config. */
#define MAX_CONFIG_BYTES (4u << 20)
#define MAX_DIAG 1000

#ifndef KK_VERSION
#define KK_VERSION "unknown"
#endif

const char *kk_version(void)
{
    return KK_VERSION;
}

/* ---- arena: the whole tree lives in a few blocks freed at once ---- */

struct ablock {
    struct ablock *next;
    size_t cap, used;
    max_align_t data[];
};

struct arena {
    struct ablock *head;
};

static void *arena_alloc(struct arena *a, size_t n)
{
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    if (n == 0)
        n = sizeof(max_align_t);
    struct ablock *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 16384 ? n : 16384;
        b = malloc(sizeof(*b) + cap);
        if (!b)
            return NULL;
        b->cap = cap;
        b->used = 0;
        b->next = a->head;
        a->head = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

static char *arena_strndup(struct arena *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static void arena_free(struct arena *a)
{
    struct ablock *b = a->head;
    while (b) {
        struct ablock *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
}

/* The public tree is the first member so kk_config_free can find the arena. */
struct config_holder {
    struct kk_config cfg;
    struct arena arena;
};

/* ---- diagnostics ---- */

void kk_diag_free(struct kk_diag *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n_errors; i++)
        free(d->errors[i]);
    for (size_t i = 0; i < d->n_warnings; i++)
        free(d->warnings[i]);
    free(d->errors);
    free(d->warnings);
    memset(d, 0, sizeof(*d));
}

struct loader {
    const char *name; /* file name in messages */
    const char *text;
    size_t len;
    yaml_document_t doc;
    struct arena arena;
    struct kk_diag *diag;
    size_t n_err;
    bool nomem;
};

static void diag_vadd(struct loader *L, bool warn, int line, int col, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    char *s = NULL;
    int n = line > 0 ? asprintf(&s, "%s:%d:%d: %s", L->name, line, col, msg)
                     : asprintf(&s, "%s: %s", L->name, msg);
    if (!warn)
        L->n_err++;
    if (n < 0) {
        L->nomem = true;
        return;
    }
    char ***arr = warn ? &L->diag->warnings : &L->diag->errors;
    size_t *cnt = warn ? &L->diag->n_warnings : &L->diag->n_errors;
    if (*cnt >= MAX_DIAG) {
        free(s);
        return;
    }
    char **grown = realloc(*arr, (*cnt + 1) * sizeof(char *));
    if (!grown) {
        free(s);
        L->nomem = true;
        return;
    }
    grown[(*cnt)++] = s;
    *arr = grown;
}

__attribute__((format(printf, 4, 5))) static void err_at(struct loader *L, int line, int col, const char *fmt,
                                                         ...)
{
    va_list ap;
    va_start(ap, fmt);
    diag_vadd(L, false, line, col, fmt, ap);
    va_end(ap);
}

__attribute__((format(printf, 4, 5))) static void warn_at(struct loader *L, int line, int col,
                                                          const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    diag_vadd(L, true, line, col, fmt, ap);
    va_end(ap);
}

static int node_line(const yaml_node_t *n)
{
    return n ? (int)n->start_mark.line + 1 : 0;
}
static int node_col(const yaml_node_t *n)
{
    return n ? (int)n->start_mark.column + 1 : 0;
}

#define ERR_N(L, n, ...) err_at(L, node_line(n), node_col(n), __VA_ARGS__)
#define WARN_N(L, n, ...) warn_at(L, node_line(n), node_col(n), __VA_ARGS__)

/* ---- scalars: ${VAR} expansion ---- */

static bool is_null_scalar(const yaml_node_t *n)
{
    if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *s = (const char *)n->data.scalar.value;
    return strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

/* Expands ${VAR}, ${VAR:-default} and $$ in s.  Errors never quote an
 * expanded value.  For a secret key (key, see kk_prop_is_secret) they name
 * only the key: the raw text, variable names included, may be the secret
 * itself (a literal password containing "${"). */
static int expand(struct loader *L, const yaml_node_t *at, const char *key, const char *s, size_t len,
                  const char **out)
{
    bool secret = key && kk_prop_is_secret(key);
    if (!memchr(s, '$', len)) {
        *out = arena_strndup(&L->arena, s, len);
        return *out ? 0 : KK_ENOMEM;
    }
    size_t cap = len + 64, n = 0;
    char *buf = malloc(cap);
    int rv = 0;
    if (!buf)
        return KK_ENOMEM;
#define PUT(p, k)                                                                                            \
    do {                                                                                                     \
        size_t k_ = (k);                                                                                     \
        if (n + k_ + 1 > cap) {                                                                              \
            size_t nc = (n + k_ + 1) * 2;                                                                    \
            char *nb = realloc(buf, nc);                                                                     \
            if (!nb) {                                                                                       \
                rv = KK_ENOMEM;                                                                              \
                goto out;                                                                                    \
            }                                                                                                \
            buf = nb;                                                                                        \
            cap = nc;                                                                                        \
        }                                                                                                    \
        memcpy(buf + n, (p), k_);                                                                            \
        n += k_;                                                                                             \
    } while (0)
    for (size_t i = 0; i < len;) {
        if (s[i] != '$' || i + 1 >= len || (s[i + 1] != '$' && s[i + 1] != '{')) {
            PUT(s + i, 1);
            i++;
            continue;
        }
        if (s[i + 1] == '$') {
            PUT("$", 1);
            i += 2;
            continue;
        }
        const char *close = memchr(s + i + 2, '}', len - i - 2);
        if (!close) {
            if (secret)
                ERR_N(L, at, "invalid ${...} expansion in the value of %s", key);
            else
                ERR_N(L, at, "unterminated ${ in value");
            rv = KK_ECONFIG;
            goto out;
        }
        const char *name = s + i + 2;
        size_t nlen = 0;
        while (name + nlen < close && (isalnum((unsigned char)name[nlen]) || name[nlen] == '_'))
            nlen++;
        const char *def = NULL;
        size_t dlen = 0;
        if (name + nlen + 1 < close && name[nlen] == ':' && name[nlen + 1] == '-') {
            def = name + nlen + 2;
            dlen = (size_t)(close - def);
        } else if (name + nlen != close) {
            if (secret)
                ERR_N(L, at, "invalid ${...} expansion in the value of %s", key);
            else
                ERR_N(L, at, "invalid variable reference ${%.*s}", (int)(close - name), name);
            rv = KK_ECONFIG;
            goto out;
        }
        if (nlen == 0 || isdigit((unsigned char)name[0])) {
            if (secret)
                ERR_N(L, at, "invalid ${...} expansion in the value of %s", key);
            else
                ERR_N(L, at, "invalid variable name in ${...}");
            rv = KK_ECONFIG;
            goto out;
        }
        char vname[256];
        if (nlen >= sizeof(vname)) {
            if (secret)
                ERR_N(L, at, "invalid ${...} expansion in the value of %s", key);
            else
                ERR_N(L, at, "variable name too long");
            rv = KK_ECONFIG;
            goto out;
        }
        memcpy(vname, name, nlen);
        vname[nlen] = '\0';
        const char *val = getenv(vname);
        if (val && *val) {
            PUT(val, strlen(val));
        } else if (def) {
            PUT(def, dlen);
        } else if (val) {
            /* set but empty: ${VAR} gives "", as a shell does */
        } else if (secret) {
            ERR_N(L, at, "an environment variable in the value of %s is not set", key);
            rv = KK_ECONFIG;
            goto out;
        } else {
            ERR_N(L, at, "environment variable %s is not set", vname);
            rv = KK_ECONFIG;
            goto out;
        }
        i = (size_t)(close - s) + 1;
    }
#undef PUT
    *out = arena_strndup(&L->arena, buf, n);
    if (!*out)
        rv = KK_ENOMEM;
out:
    free(buf);
    return rv;
}

/* The expanded text of a scalar node ("" for YAML null), or an error. */
static int scalar_text(struct loader *L, const yaml_node_t *n, const char *what, const char **out)
{
    if (n->type != YAML_SCALAR_NODE) {
        ERR_N(L, n, "%s must be a single value, not a %s", what,
              n->type == YAML_MAPPING_NODE ? "mapping" : "list");
        return KK_ECONFIG;
    }
    if (is_null_scalar(n)) {
        *out = "";
        return 0;
    }
    int rv = expand(L, n, what, (const char *)n->data.scalar.value, n->data.scalar.length, out);
    if (rv == KK_ENOMEM)
        L->nomem = true;
    return rv;
}

/* Lowercased copy of a mapping key, or NULL (error reported). */
static const char *key_text(struct loader *L, const yaml_node_t *k)
{
    if (k->type != YAML_SCALAR_NODE) {
        ERR_N(L, k, "mapping keys must be plain text");
        return NULL;
    }
    char *s = arena_strndup(&L->arena, (const char *)k->data.scalar.value, k->data.scalar.length);
    if (!s) {
        L->nomem = true;
        return NULL;
    }
    for (char *p = s; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return s;
}

/* ---- kinds ---- */

static const char *const source_names[KK_SOURCE__COUNT] = {
    "kubemq.query", "kubemq.command", "kubemq.events", "kubemq.events-store", "kubemq.queue",
};
static const char *const target_names[KK_TARGET__COUNT] = {"aws.kinesis", "null"};

const char *kk_source_kind_name(enum kk_source_kind k)
{
    return (unsigned)k < KK_SOURCE__COUNT ? source_names[k] : "unknown";
}

const char *kk_target_kind_name(enum kk_target_kind k)
{
    return (unsigned)k < KK_TARGET__COUNT ? target_names[k] : "unknown";
}

static int source_kind_parse(const char *s)
{
    /* kubemq.X | source.X | source.kubemq.X, X one of the five (or queue-stream) */
    const char *x = NULL;
    if (strncasecmp(s, "source.kubemq.", 14) == 0)
        x = s + 14;
    else if (strncasecmp(s, "source.", 7) == 0)
        x = s + 7;
    else if (strncasecmp(s, "kubemq.", 7) == 0)
        x = s + 7;
    else
        return -1;
    static const char *const names[] = {"query", "command", "events", "events-store", "queue"};
    for (int i = 0; i < KK_SOURCE__COUNT; i++) {
        if (strcasecmp(x, names[i]) == 0)
            return i;
    }
    if (strcasecmp(x, "queue-stream") == 0)
        return KK_SOURCE_QUEUE;
    return -1;
}

static int target_kind_parse(const char *s)
{
    if (strcasecmp(s, "aws.kinesis") == 0 || strcasecmp(s, "target.aws.kinesis") == 0 ||
        strcasecmp(s, "target.aws.kenisis") == 0)
        return KK_TARGET_KINESIS;
    if (strcasecmp(s, "null") == 0 || strcasecmp(s, "target.null") == 0)
        return KK_TARGET_NULL;
    return -1;
}

/* ---- properties ---- */

struct pvec {
    struct kk_prop *v;
    size_t n, cap;
    const yaml_node_t **nodes; /* value node of each, for marks */
};

static int pvec_push(struct pvec *p, const char *key, const char *value, const yaml_node_t *node)
{
    if (p->n == p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 16;
        struct kk_prop *nv = realloc(p->v, nc * sizeof(*nv));
        if (!nv)
            return KK_ENOMEM;
        p->v = nv;
        const yaml_node_t **nn = realloc(p->nodes, nc * sizeof(*nn));
        if (!nn)
            return KK_ENOMEM;
        p->nodes = nn;
        p->cap = nc;
    }
    p->v[p->n] = (struct kk_prop){.key = key, .value = value, .line = node_line(node), .col = node_col(node)};
    p->nodes[p->n] = node;
    p->n++;
    return 0;
}

static void pvec_free(struct pvec *p)
{
    free(p->v);
    free(p->nodes);
}

static ssize_t pvec_find(const struct pvec *p, const char *key)
{
    for (size_t i = 0; i < p->n; i++) {
        if (p->v[i].key && strcmp(p->v[i].key, key) == 0)
            return (ssize_t)i;
    }
    return -1;
}

static void pvec_remove(struct pvec *p, size_t i)
{
    p->v[i].key = NULL; /* skipped when frozen */
}

static int prop_cmp(const void *a, const void *b)
{
    return strcmp(((const struct kk_prop *)a)->key, ((const struct kk_prop *)b)->key);
}

/* Copies the live entries into the arena, sorted by key. */
static int pvec_freeze(struct loader *L, struct pvec *p, struct kk_props *out)
{
    size_t live = 0;
    for (size_t i = 0; i < p->n; i++)
        live += p->v[i].key != NULL && p->v[i].value != NULL;
    struct kk_prop *v = arena_alloc(&L->arena, (live ? live : 1) * sizeof(*v));
    if (!v)
        return KK_ENOMEM;
    size_t j = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (p->v[i].key && p->v[i].value)
            v[j++] = p->v[i];
    }
    qsort(v, live, sizeof(*v), prop_cmp);
    out->v = v;
    out->n = live;
    return 0;
}

/* Reads a properties mapping into p (keys lowercased, values expanded). */
static void read_props(struct loader *L, const yaml_node_t *map, struct pvec *p)
{
    if (!map)
        return;
    if (map->type == YAML_SCALAR_NODE && (is_null_scalar(map) || map->data.scalar.length == 0))
        return;
    if (map->type != YAML_MAPPING_NODE) {
        ERR_N(L, map, "properties must be a mapping");
        return;
    }
    for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top; pr++) {
        const yaml_node_t *k = yaml_document_get_node(&L->doc, pr->key);
        const yaml_node_t *v = yaml_document_get_node(&L->doc, pr->value);
        const char *key = key_text(L, k);
        if (!key)
            continue;
        if (pvec_find(p, key) >= 0) {
            ERR_N(L, k, "duplicate property %s", key);
            continue;
        }
        /* A value that failed (unset ${VAR}, ...) is kept as NULL: it is
         * already reported, and must not also read as "missing". */
        const char *val = NULL;
        if (scalar_text(L, v, key, &val) < 0)
            val = NULL;
        if (pvec_push(p, key, val, v) < 0)
            L->nomem = true;
    }
}

static bool valid_start_from(const char *v)
{
    int64_t n;
    if (strcasecmp(v, "new") == 0 || strcasecmp(v, "first") == 0 || strcasecmp(v, "last") == 0)
        return true;
    if (strncasecmp(v, "sequence:", 9) == 0)
        return kk_parse_int64(v + 9, &n) == 0 && n >= 1;
    if (strncasecmp(v, "delta:", 6) == 0)
        return kk_parse_int64(v + 6, &n) == 0 && n >= 1;
    if (strncasecmp(v, "time:", 5) == 0) {
        int64_t ns;
        return kk_parse_rfc3339(v + 5, &ns) == 0;
    }
    return false;
}

static bool enum_has(const char *list, const char *v)
{
    size_t vl = strlen(v);
    for (const char *p = list;;) {
        const char *bar = strchr(p, '|');
        size_t l = bar ? (size_t)(bar - p) : strlen(p);
        if (l == vl && strncmp(p, v, l) == 0)
            return true;
        if (!bar)
            return false;
        p = bar + 1;
    }
}

/* Validates one value against its rule.  Messages about a secret name the
 * key only. */
static void check_value(struct loader *L, const struct kk_prop_rule *r, const struct kk_prop *p)
{
    const char *v = p->value;
    bool secret = (r->flags & PF_SECRET) != 0 || kk_prop_is_secret(p->key);
    for (const char *c = v; *c; c++) {
        if ((unsigned char)*c < 0x20 && *c != '\t') {
            err_at(L, p->line, p->col, "property %s: control character in value", p->key);
            return;
        }
    }
    if (*v == '\0')
        return; /* empty = absent: the default applies */
    switch (r->type) {
    case PT_INT: {
        int64_t n;
        if (kk_parse_int64(v, &n) < 0) {
            if (secret)
                err_at(L, p->line, p->col, "property %s: not an integer", p->key);
            else
                err_at(L, p->line, p->col, "property %s: invalid integer \"%s\"", p->key, v);
        } else if (n < r->min || n > r->max) {
            err_at(L, p->line, p->col, "property %s: %lld out of range %lld..%lld", p->key, (long long)n,
                   (long long)r->min, (long long)r->max);
        }
        break;
    }
    case PT_BOOL: {
        bool b;
        if (kk_parse_bool(v, &b) < 0)
            err_at(L, p->line, p->col, "property %s: invalid boolean \"%s\" (want true or false)", p->key, v);
        break;
    }
    case PT_ENUM:
        if (!enum_has(r->enums, v)) {
            int el = (int)strlen(r->enums);
            while (el > 0 && r->enums[el - 1] == '|')
                el--; /* "" is allowed but not worth listing */
            err_at(L, p->line, p->col, "property %s: invalid value \"%s\" (want one of %.*s)", p->key, v, el,
                   r->enums);
        }
        break;
    case PT_URL:
        if (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0)
            err_at(L, p->line, p->col, "property %s: \"%s\" must start with http:// or https://", p->key, v);
        break;
    case PT_START_FROM:
        if (!valid_start_from(v))
            err_at(L, p->line, p->col,
                   "property %s: invalid value \"%s\" (want new, first, last, sequence:N, time:RFC3339 or "
                   "delta:SECONDS)",
                   p->key, v);
        break;
    case PT_JSON_OBJ: {
        cJSON *j = cJSON_Parse(v);
        if (!j || !cJSON_IsObject(j))
            err_at(L, p->line, p->col, "property %s: must be a JSON object, e.g. '{\"stream_name\":\"s1\"}'",
                   p->key);
        cJSON_Delete(j);
        break;
    }
    case PT_STR:
    case PT_IGNORED:
        break;
    }
}

/* Validates every property of one spec under kind mask km: unknown keys
 * warn, bad values and missing required keys are errors. */
static void check_props(struct loader *L, struct pvec *p, unsigned km, const char *what,
                        const yaml_node_t *at)
{
    for (size_t i = 0; i < p->n; i++) {
        const struct kk_prop *pr = &p->v[i];
        if (!pr->key || !pr->value)
            continue;
        const struct kk_prop_rule *r = kk_prop_rule_find(pr->key, km);
        if (!r) {
            warn_at(L, pr->line, pr->col, "unknown property %s for %s (ignored)", pr->key, what);
            continue;
        }
        check_value(L, r, pr);
    }
    for (unsigned i = 0; i < kk_n_prop_rules; i++) {
        const struct kk_prop_rule *r = &kk_prop_rules[i];
        if (!(r->flags & PF_REQUIRED) || !(r->kinds & km))
            continue;
        ssize_t j = pvec_find(p, r->key);
        if (j < 0 || (p->v[j].value && p->v[j].value[0] == '\0'))
            ERR_N(L, at, "%s: missing required property %s", what, r->key);
    }
}

/* flow_control exact splits `concurrency` into message credit per
 * subscription; with more subscriptions than slots some would hold none and
 * a request routed to them would wait for a slot that never comes. */
static void check_credit_shares(struct loader *L, const struct pvec *p, int kind, const char *what,
                                const yaml_node_t *at)
{
    ssize_t f = pvec_find(p, "flow_control"), ns = pvec_find(p, "sources"), nc = pvec_find(p, "concurrency");
    const char *fc = f >= 0 && p->v[f].value && *p->v[f].value ? p->v[f].value : KK_FLOW_CONTROL_DEFAULT;
    int64_t n = 1, conc = 256;

    if (kind == KK_SOURCE_QUEUE || strcmp(fc, "exact") != 0)
        return;
    if (ns >= 0 && p->v[ns].value && *p->v[ns].value && kk_parse_int64(p->v[ns].value, &n) < 0)
        return; /* reported by check_value */
    if (nc >= 0 && p->v[nc].value && *p->v[nc].value && kk_parse_int64(p->v[nc].value, &conc) < 0)
        return;
    if (n > conc)
        ERR_N(L, at, "%s: sources (%lld) must not exceed concurrency (%lld) with flow_control exact", what,
              (long long)n, (long long)conc);
}

/* host + port -> address; the queue source defaults to localhost:50000. */
static void normalise_address(struct loader *L, struct pvec *p, int kind, const char *what,
                              const yaml_node_t *at)
{
    ssize_t ia = pvec_find(p, "address"), ih = pvec_find(p, "host"), ip = pvec_find(p, "port");
    /* a failed value (NULL) counts as given: its error is already out */
    bool has_a = ia >= 0 && (!p->v[ia].value || p->v[ia].value[0]);
    bool has_h = ih >= 0 && (!p->v[ih].value || p->v[ih].value[0]);
    bool has_p = ip >= 0 && (!p->v[ip].value || p->v[ip].value[0]);
    if (!has_a && (has_h || has_p)) {
        if (!has_h || !has_p) {
            ERR_N(L, at, "%s: host and port must be given together (or use address)", what);
            return;
        }
        if (!p->v[ih].value || !p->v[ip].value)
            return;
        size_t hl = strlen(p->v[ih].value), pl = strlen(p->v[ip].value);
        char *a = arena_alloc(&L->arena, hl + pl + 2);
        if (!a) {
            L->nomem = true;
            return;
        }
        memcpy(a, p->v[ih].value, hl);
        a[hl] = ':';
        memcpy(a + hl + 1, p->v[ip].value, pl + 1);
        if (ia >= 0)
            pvec_remove(p, (size_t)ia);
        if (pvec_push(p, "address", a, p->nodes[ih]) < 0)
            L->nomem = true;
        has_a = true;
    }
    if (ih >= 0)
        pvec_remove(p, (size_t)ih);
    if (ip >= 0)
        pvec_remove(p, (size_t)ip);
    if (!has_a) {
        if (kind == KK_SOURCE_QUEUE) {
            if (ia >= 0)
                pvec_remove(p, (size_t)ia);
            if (pvec_push(p, "address", "localhost:50000", at) < 0)
                L->nomem = true;
        } else {
            ERR_N(L, at, "%s: missing required property address (or host and port)", what);
        }
    }
}

/* ---- hash (FNV-1a 64) ---- */

static uint64_t fnv(uint64_t h, const char *s)
{
    if (!s)
        s = ""; /* parts of a binding that failed to load; the load fails anyway */
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ULL;
    }
    h ^= 0xff; /* field separator: "ab"+"c" != "a"+"bc" */
    h *= 0x100000001b3ULL;
    return h;
}

static uint64_t fnv_props(uint64_t h, const struct kk_props *p)
{
    for (size_t i = 0; i < p->n; i++) {
        h = fnv(h, p->v[i].key);
        h = fnv(h, p->v[i].value);
    }
    return fnv(h, "\x01");
}

static uint64_t binding_hash(const struct kk_binding_cfg *b)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    h = fnv(h, b->name);
    h = fnv_props(h, &b->props);
    h = fnv(h, kk_source_kind_name(b->source.kind));
    h = fnv(h, b->source.name);
    h = fnv_props(h, &b->source.props);
    h = fnv(h, kk_target_kind_name(b->target.kind));
    h = fnv(h, b->target.name);
    return fnv_props(h, &b->target.props);
}

/* ---- walking the document ---- */

static const yaml_node_t *map_get(struct loader *L, const yaml_node_t *map, const char *key,
                                  const yaml_node_t **key_node)
{
    for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top; pr++) {
        const yaml_node_t *k = yaml_document_get_node(&L->doc, pr->key);
        if (k->type == YAML_SCALAR_NODE && strcasecmp((const char *)k->data.scalar.value, key) == 0) {
            if (key_node)
                *key_node = k;
            return yaml_document_get_node(&L->doc, pr->value);
        }
    }
    return NULL;
}

static void check_keys(struct loader *L, const yaml_node_t *map, const char *const *known, const char *what)
{
    for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top; pr++) {
        const yaml_node_t *k = yaml_document_get_node(&L->doc, pr->key);
        if (k->type != YAML_SCALAR_NODE)
            continue;
        bool ok = false;
        for (const char *const *kn = known; *kn && !ok; kn++)
            ok = strcasecmp((const char *)k->data.scalar.value, *kn) == 0;
        if (!ok) {
            WARN_N(L, k, "unknown key %s in %s (ignored)", (const char *)k->data.scalar.value, what);
            continue;
        }
        /* A repeated key would silently lose one of the values. */
        for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < pr; q++) {
            const yaml_node_t *qk = yaml_document_get_node(&L->doc, q->key);
            if (qk->type == YAML_SCALAR_NODE &&
                strcasecmp((const char *)qk->data.scalar.value, (const char *)k->data.scalar.value) == 0) {
                ERR_N(L, k, "duplicate key %s in %s", (const char *)k->data.scalar.value, what);
                break;
            }
        }
    }
}

static void load_spec(struct loader *L, const yaml_node_t *n, const yaml_node_t *parent, bool is_source,
                      struct kk_spec *out)
{
    const char *role = is_source ? "source" : "target";
    out->kind = -1;
    out->kind_text = "";
    out->name = "";
    if (!n || (n->type == YAML_SCALAR_NODE && (is_null_scalar(n) || n->data.scalar.length == 0))) {
        ERR_N(L, parent, "binding %s error, kind cannot be empty", role);
        return;
    }
    if (n->type != YAML_MAPPING_NODE) {
        ERR_N(L, n, "binding %s must be a mapping", role);
        return;
    }
    static const char *const known[] = {"kind", "name", "properties", NULL};
    check_keys(L, n, known, role);

    const yaml_node_t *kn = map_get(L, n, "kind", NULL);
    const char *kind = "";
    /* "kind: null" names the null target: here YAML null is the word. */
    if (kn && kn->type == YAML_SCALAR_NODE && is_null_scalar(kn))
        kind = (const char *)kn->data.scalar.value;
    else if (kn && scalar_text(L, kn, "kind", &kind) < 0)
        kind = NULL;
    if (kind && !*kind) {
        ERR_N(L, kn ? kn : n, "binding %s error, kind cannot be empty", role);
    } else if (kind) {
        out->kind_text = kind;
        out->kind = is_source ? source_kind_parse(kind) : target_kind_parse(kind);
        if (out->kind < 0)
            ERR_N(L, kn, "invalid kind %s for %s", kind, role);
    }
    const yaml_node_t *nn = map_get(L, n, "name", NULL);
    if (nn)
        scalar_text(L, nn, "name", &out->name);

    struct pvec p = {0};
    read_props(L, map_get(L, n, "properties", NULL), &p);
    if (out->kind >= 0) {
        char what[96];
        snprintf(what, sizeof(what), "%s %s", role,
                 is_source ? kk_source_kind_name(out->kind) : kk_target_kind_name(out->kind));
        unsigned km = is_source ? 1u << out->kind : KM_KINESIS << out->kind;
        check_props(L, &p, km, what, n);
        if (is_source) {
            normalise_address(L, &p, out->kind, what, n);
            check_credit_shares(L, &p, out->kind, what, n);
        }
    }
    if (pvec_freeze(L, &p, &out->props) < 0)
        L->nomem = true;
    pvec_free(&p);
}

static void load_binding(struct loader *L, const yaml_node_t *n, struct kk_binding_cfg *b)
{
    b->name = "";
    b->line = node_line(n);
    if (n->type != YAML_MAPPING_NODE) {
        ERR_N(L, n, "binding must be a mapping");
        return;
    }
    static const char *const known[] = {"name", "properties", "source", "target", NULL};
    check_keys(L, n, known, "binding");
    const yaml_node_t *nn = map_get(L, n, "name", NULL);
    if (nn)
        scalar_text(L, nn, "name", &b->name);
    if (!b->name)
        b->name = "";
    if (!*b->name)
        ERR_N(L, nn ? nn : n, "binding must have name");

    struct pvec p = {0};
    read_props(L, map_get(L, n, "properties", NULL), &p);
    check_props(L, &p, KM_BINDING, "binding", n);
    if (pvec_freeze(L, &p, &b->props) < 0)
        L->nomem = true;
    pvec_free(&p);

    const yaml_node_t *sk = NULL, *tk = NULL;
    const yaml_node_t *s = map_get(L, n, "source", &sk);
    const yaml_node_t *t = map_get(L, n, "target", &tk);
    load_spec(L, s, sk ? sk : n, true, &b->source);
    load_spec(L, t, tk ? tk : n, false, &b->target);
}

static int top_int(struct loader *L, const yaml_node_t *v, const char *key, int64_t min, int64_t max,
                   int *out)
{
    const char *s;
    int64_t n;
    if (scalar_text(L, v, key, &s) < 0)
        return -1;
    if (!*s)
        return 0;
    if (kk_parse_int64(s, &n) < 0) {
        ERR_N(L, v, "%s: invalid integer \"%s\"", key, s);
        return -1;
    }
    if (n < min || n > max) {
        ERR_N(L, v, "%s: %lld out of range %lld..%lld", key, (long long)n, (long long)min, (long long)max);
        return -1;
    }
    *out = (int)n;
    return 0;
}

static void load_root(struct loader *L, const yaml_node_t *root, struct kk_config *cfg)
{
    cfg->api_port = 8081;
    cfg->log_level = KK_LOG_INFO;
    cfg->shutdown_timeout_s = 30;
    if (!root || (root->type == YAML_SCALAR_NODE && root->data.scalar.length == 0)) {
        err_at(L, 0, 0, "configuration is empty");
        return;
    }
    if (root->type != YAML_MAPPING_NODE) {
        ERR_N(L, root, "configuration must be a mapping with a bindings list");
        return;
    }
    static const char *const known[] = {"apiport",  "loglevel", "logformat", "shutdown_timeout_seconds",
                                        "bindings", NULL};
    check_keys(L, root, known, "configuration");

    const yaml_node_t *v;
    const char *s;
    v = map_get(L, root, "apiport", NULL);
    if (v && top_int(L, v, "apiPort", 0, 65535, &cfg->api_port) == 0 && cfg->api_port == 0)
        cfg->api_port = 8081;
    v = map_get(L, root, "shutdown_timeout_seconds", NULL);
    if (v)
        top_int(L, v, "shutdown_timeout_seconds", 0, 86400, &cfg->shutdown_timeout_s);
    v = map_get(L, root, "loglevel", NULL);
    /* kubemq-targets runs at info for any other value; we do too, but say so. */
    if (v && scalar_text(L, v, "logLevel", &s) == 0 && *s && kk_log_parse_level(s, &cfg->log_level) < 0)
        WARN_N(L, v, "logLevel: unknown value \"%s\", using info (want debug, info, warn or error)", s);
    v = map_get(L, root, "logformat", NULL);
    if (v && scalar_text(L, v, "logFormat", &s) == 0 && *s) {
        if (strcasecmp(s, "json") == 0)
            cfg->log_json = 1;
        else if (strcasecmp(s, "text") != 0)
            ERR_N(L, v, "logFormat: invalid value \"%s\" (want text or json)", s);
    }

    const yaml_node_t *bl = map_get(L, root, "bindings", NULL);
    if (!bl || (bl->type == YAML_SCALAR_NODE && (is_null_scalar(bl) || bl->data.scalar.length == 0)))
        return;
    if (bl->type != YAML_SEQUENCE_NODE) {
        ERR_N(L, bl, "bindings must be a list");
        return;
    }
    size_t n = (size_t)(bl->data.sequence.items.top - bl->data.sequence.items.start);
    struct kk_binding_cfg *bs = arena_alloc(&L->arena, (n ? n : 1) * sizeof(*bs));
    if (!bs) {
        L->nomem = true;
        return;
    }
    memset(bs, 0, (n ? n : 1) * sizeof(*bs));
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *bn = yaml_document_get_node(&L->doc, bl->data.sequence.items.start[i]);
        load_binding(L, bn, &bs[i]);
        /* Duplicates: a pairwise check is fine at load, where n is small. */
        for (size_t j = 0; j < i && *bs[i].name; j++) {
            if (strcmp(bs[i].name, bs[j].name) == 0) {
                const yaml_node_t *nn = map_get(L, bn, "name", NULL);
                ERR_N(L, nn, "duplicated binding names found: %s", bs[i].name);
                break;
            }
        }
        bs[i].hash = binding_hash(&bs[i]);
    }
    cfg->bindings = bs;
    cfg->n_bindings = n;
}

/* libyaml rejects a tab in indentation with an unclear message ("found
 * character that cannot start any token").  It stops at or before the tab
 * on the tab's own line, so a tab in the leading whitespace of the failing
 * line, at or after the failing column, is the cause. */
static bool find_indent_tab(const char *text, size_t len, size_t err_line, size_t err_col, int *col)
{
    size_t ln = 1;
    for (size_t i = 0; i < len && ln <= err_line;) {
        size_t j = i;
        bool tab = false;
        size_t tab_at = 0;
        /* indentation: blanks, and "- " sequence indicators within it */
        while (j < len && (text[j] == ' ' || text[j] == '\t' ||
                           (text[j] == '-' && j + 1 < len && (text[j + 1] == ' ' || text[j + 1] == '\t')))) {
            if (text[j] == '\t' && !tab) {
                tab = true;
                tab_at = j - i;
            }
            j++;
        }
        if (ln == err_line && tab && tab_at + 1 >= err_col && j < len && text[j] != '\n' && text[j] != '\r') {
            *col = (int)tab_at + 1;
            return true;
        }
        while (j < len && text[j] != '\n')
            j++;
        i = j + 1;
        ln++;
    }
    return false;
}

static int load_text(const char *text, size_t len, const char *name, struct kk_config **out,
                     struct kk_diag *diag)
{
    struct loader L = {.name = name, .text = text, .len = len, .diag = diag};
    yaml_parser_t parser;
    struct config_holder *h = NULL;
    int rv = KK_ECONFIG;
    bool have_doc = false;

    if (!yaml_parser_initialize(&parser)) {
        rv = KK_ENOMEM;
        goto out;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &L.doc)) {
        int line = (int)parser.problem_mark.line + 1, col = (int)parser.problem_mark.column + 1;
        int tc;
        if (find_indent_tab(text, len, (size_t)line, (size_t)col, &tc))
            err_at(&L, line, tc, "tab character used for indentation");
        else if (parser.error == YAML_MEMORY_ERROR)
            rv = KK_ENOMEM;
        else
            err_at(&L, line, col, "YAML syntax error: %s%s%s", parser.problem ? parser.problem : "invalid",
                   parser.context ? " " : "", parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        goto out;
    }
    have_doc = true;
    yaml_parser_delete(&parser);

    h = calloc(1, sizeof(*h));
    if (!h) {
        rv = KK_ENOMEM;
        goto out;
    }
    h->cfg.source_name = arena_strndup(&L.arena, name, strlen(name));
    load_root(&L, yaml_document_get_root_node(&L.doc), &h->cfg);
    if (L.nomem) {
        rv = KK_ENOMEM;
        goto out;
    }
    if (L.n_err > 0 || !h->cfg.source_name)
        goto out;
    h->arena = L.arena;
    L.arena.head = NULL;
    *out = &h->cfg;
    h = NULL;
    rv = 0;
out:
    if (have_doc)
        yaml_document_delete(&L.doc);
    arena_free(&L.arena);
    free(h);
    if (rv == KK_ENOMEM && diag->n_errors == 0)
        err_at(&L, 0, 0, "out of memory while loading the configuration");
    return rv;
}

int kk_config_load_string(const char *text, size_t len, const char *name, struct kk_config **out,
                          struct kk_diag *diag)
{
    memset(diag, 0, sizeof(*diag));
    *out = NULL;
    return load_text(text, len, name ? name : "config", out, diag);
}

int kk_config_load_file(const char *path, struct kk_config **out, struct kk_diag *diag)
{
    memset(diag, 0, sizeof(*diag));
    *out = NULL;
    struct loader L = {.name = path, .diag = diag};
    char *text = NULL;
    int rv = KK_ECONFIG;
    FILE *f = fopen(path, "rb");
    if (!f) {
        err_at(&L, 0, 0, "cannot open: %s", strerror(errno));
        goto out;
    }
    text = malloc(MAX_CONFIG_BYTES + 1);
    if (!text) {
        rv = KK_ENOMEM;
        goto out;
    }
    size_t n = fread(text, 1, MAX_CONFIG_BYTES + 1, f);
    if (ferror(f)) {
        err_at(&L, 0, 0, "cannot read: %s", strerror(errno));
        goto out;
    }
    if (n > MAX_CONFIG_BYTES) {
        err_at(&L, 0, 0, "file larger than %u bytes", MAX_CONFIG_BYTES);
        goto out;
    }
    rv = load_text(text, n, path, out, diag);
out:
    if (f)
        fclose(f);
    free(text);
    return rv;
}

int kk_config_load_env(struct kk_config **out, struct kk_diag *diag)
{
    memset(diag, 0, sizeof(*diag));
    *out = NULL;
    struct loader L = {.name = "CONFIG", .diag = diag};
    const char *v = getenv("CONFIG");
    if (!v || !*v) {
        err_at(&L, 0, 0, "no config data from environment variable");
        return KK_ECONFIG;
    }
    size_t len = strlen(v);
    if (len > MAX_CONFIG_BYTES) {
        err_at(&L, 0, 0, "value larger than %u bytes", MAX_CONFIG_BYTES);
        return KK_ECONFIG;
    }
    /* A value without whitespace that decodes as base64 is base64. */
    bool ws = false;
    for (size_t i = 0; i < len && !ws; i++)
        ws = isspace((unsigned char)v[i]) != 0;
    if (!ws) {
        uint8_t *dec = malloc(kk_b64_decoded_max(len) + 1);
        if (!dec)
            return KK_ENOMEM;
        long dn = kk_b64_decode(dec, v, len);
        if (dn >= 0) {
            int rv = load_text((const char *)dec, (size_t)dn, "CONFIG", out, diag);
            free(dec);
            return rv;
        }
        free(dec);
    }
    return load_text(v, len, "CONFIG", out, diag);
}

void kk_config_free(struct kk_config *cfg)
{
    if (!cfg)
        return;
    struct config_holder *h = (struct config_holder *)cfg;
    arena_free(&h->arena);
    free(h);
}

const struct kk_binding_cfg *kk_config_binding(const struct kk_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_bindings; i++) {
        if (strcmp(cfg->bindings[i].name, name) == 0)
            return &cfg->bindings[i];
    }
    return NULL;
}

/* ---- typed reads ---- */

const char *kk_props_get(const struct kk_props *p, const char *key)
{
    size_t lo = 0, hi = p ? p->n : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(key, p->v[mid].key);
        if (c == 0)
            return p->v[mid].value;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *kk_props_str(const struct kk_props *p, const char *key, const char *def)
{
    const char *v = kk_props_get(p, key);
    return v && *v ? v : def;
}

int64_t kk_props_int(const struct kk_props *p, const char *key, int64_t def)
{
    const char *v = kk_props_get(p, key);
    int64_t n;
    return v && kk_parse_int64(v, &n) == 0 ? n : def;
}

bool kk_props_bool(const struct kk_props *p, const char *key, bool def)
{
    const char *v = kk_props_get(p, key);
    bool b;
    return v && kk_parse_bool(v, &b) == 0 ? b : def;
}

/* Whether lowercase s ends with suffix. */
static bool ends_with(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

/* By pattern rather than by a list of names, so a misspelled, AWS-style or
 * unknown key that looks like a secret is masked too (see config.h). */
bool kk_prop_is_secret(const char *key)
{
    static const char *const parts[] = {"secret",     "token",      "password", "passwd", "passphrase",
                                        "credential", "access_key", "apikey",   "api_key"};
    /* keys ending in _key that name data, not a credential */
    static const char *const data_keys[] = {"partition_key", "hash_key", "routing_key", "sort_key"};
    char low[128];
    size_t n = 0;
    if (!key)
        return false;
    for (; key[n] && n < sizeof(low) - 1; n++)
        low[n] = (char)tolower((unsigned char)key[n]);
    low[n] = '\0';
    if (key[n])
        return true; /* longer than any key we know: do not guess, mask */
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
        if (strstr(low, parts[i]))
            return true;
    if (strcmp(low, "aws_key") == 0)
        return true;
    if (!ends_with(low, n, "_key"))
        return false;
    for (size_t i = 0; i < sizeof(data_keys) / sizeof(data_keys[0]); i++)
        if (ends_with(low, n, data_keys[i]))
            return false;
    return true;
}

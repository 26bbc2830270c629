/* Request / Response JSON of kubemq-targets (connector-behaviour.md §3).
 *
 * The parser is a small hand-written one rather than cJSON: the schema is
 * fixed (two fields), the payload is usually one large base64 string, and
 * cJSON would allocate one node per value and copy that string before we
 * decode it.  Here parsing is two passes over the body without allocation:
 *   pass 1 validates the whole document, counts metadata pairs and their
 *          decoded sizes, and remembers where the metadata objects and the
 *          last "data" value are;
 *   then one malloc holds the kv array, every string and the decoded data;
 *   pass 2 re-reads only the metadata objects to fill it, and base64 data is
 *          decoded straight from the body.
 * Semantics follow Go's encoding/json (jsoniter in std-compat mode): field
 * names match case-insensitively, unknown fields are skipped, invalid UTF-8
 * in strings becomes U+FFFD, trailing bytes after the object are an error. */
#include "kk/request.h"

#include "kk/b64.h"
#include "kk/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 10000 /* Go's encoding/json nesting limit */
#define MAX_MD_SPANS 16 /* "metadata" fields kept per document (Go merges them) */

/* Byte classes inside a JSON string. */
enum { C_PLAIN = 0, C_QUOTE, C_BSLASH, C_CTRL, C_HIGH };

static unsigned char str_class[256];

static void init_tables(void)
{
    static int ready;
    if (ready)
        return;
    for (int i = 0; i < 256; i++)
        str_class[i] = i < 0x20 ? C_CTRL : i >= 0x80 ? C_HIGH : C_PLAIN;
    str_class['"'] = C_QUOTE;
    str_class['\\'] = C_BSLASH;
    ready = 1;
}

/* Length of the valid UTF-8 sequence at s (Go's utf8 rules: no overlongs, no
 * surrogates, max U+10FFFF), or 0 when invalid. */
static size_t utf8_valid_len(const unsigned char *s, const unsigned char *end)
{
    unsigned char c = s[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80)
        return 1;
    if (c < 0xC2)
        return 0;
    if (c < 0xE0) {
        n = 2;
    } else if (c < 0xF0) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c < 0xF5) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if ((size_t)(end - s) < n)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return n;
}

static size_t utf8_put(char *dst, uint32_t cp)
{
    if (cp < 0x80) {
        if (dst)
            dst[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        if (dst) {
            dst[0] = (char)(0xC0 | cp >> 6);
            dst[1] = (char)(0x80 | (cp & 0x3F));
        }
        return 2;
    }
    if (cp < 0x10000) {
        if (dst) {
            dst[0] = (char)(0xE0 | cp >> 12);
            dst[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
            dst[2] = (char)(0x80 | (cp & 0x3F));
        }
        return 3;
    }
    if (dst) {
        dst[0] = (char)(0xF0 | cp >> 18);
        dst[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        dst[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        dst[3] = (char)(0x80 | (cp & 0x3F));
    }
    return 4;
}

/* ---- parser ---------------------------------------------------------------- */

struct span {
    size_t off, len;
};

struct parser {
    const char *base, *p, *end;
    char *err;
    size_t errlen;
    int failed;
    /* pass 1 results */
    size_t n_pairs;   /* upper bound of metadata pairs */
    size_t str_bytes; /* decoded key/value bytes incl. NULs */
    struct span md[MAX_MD_SPANS];
    size_t n_md;
    int data_state;   /* 0 absent/null, 1 string */
    struct span data; /* inside the quotes */
    int data_escaped; /* data string holds escapes: needs unescaping first */
    size_t data_ulen; /* its unescaped length (may exceed the raw one) */
    int fast_data;       /* scan "data" by memchr, leaving validation to the decoder */
    int data_unverified; /* data was scanned that way: only known to hold no '\\' */
    int fast_used;       /* some "data" was: an error may belong to it, parse again exactly */
    /* pass 2 */
    struct kk_kv *kv;
    size_t n_kv;
    char *strs;
};

/* jsoniter-like message: "<what>, error found in #N byte of ...|ctx|..." */
static int fail(struct parser *ps, const char *what)
{
    if (ps->failed)
        return KK_EPARSE;
    ps->failed = 1;
    size_t head = (size_t)(ps->p - ps->base), total = (size_t)(ps->end - ps->base);
    size_t s1 = head > 10 ? head - 10 : 0, e1 = head + 10 < total ? head + 10 : total;
    size_t s2 = head > 50 ? head - 50 : 0, e2 = head + 50 < total ? head + 50 : total;
    if (ps->err && ps->errlen)
        snprintf(ps->err, ps->errlen,
                 "%s, error found in #%zu byte of ...|%.*s|..., bigger context ...|%.*s|...", what, head,
                 (int)(e1 - s1), ps->base + s1, (int)(e2 - s2), ps->base + s2);
    return KK_EPARSE;
}

static int fail_type(struct parser *ps, const char *got, const char *field, const char *type)
{
    if (!ps->failed && ps->err && ps->errlen)
        snprintf(ps->err, ps->errlen, "json: cannot unmarshal %s into Go struct field Request.%s of type %s",
                 got, field, type);
    ps->failed = 1;
    return KK_EPARSE;
}

static void skip_ws(struct parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int hex4(const char *s, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* Reads the string at p (on its opening quote), leaving p after the closing
 * quote.  Writes the decoded bytes to dst when non-NULL (no NUL added) and
 * their count to *outlen.  *escaped tells whether any escape or invalid
 * UTF-8 made the decoded form differ from the raw bytes. */
static int read_string(struct parser *ps, char *dst, size_t *outlen, int *escaped)
{
    const unsigned char *s = (const unsigned char *)ps->p + 1, *end = (const unsigned char *)ps->end;
    size_t n = 0;
    int esc = 0;
    for (;;) {
        const unsigned char *run = s;
        while (s < end && str_class[*s] == C_PLAIN)
            s++;
        if (s > run) {
            if (dst)
                memcpy(dst + n, run, (size_t)(s - run));
            n += (size_t)(s - run);
        }
        if (s >= end) {
            ps->p = (const char *)s;
            return fail(ps, "readStringSlowPath: unexpected end of input");
        }
        switch (str_class[*s]) {
        case C_QUOTE:
            ps->p = (const char *)s + 1;
            *outlen = n;
            if (escaped)
                *escaped = esc;
            return 0;
        case C_CTRL:
            ps->p = (const char *)s;
            return fail(ps, "readStringSlowPath: invalid control character in string");
        case C_HIGH: {
            size_t l = utf8_valid_len(s, end);
            if (l) {
                if (dst)
                    memcpy(dst + n, s, l);
                n += l;
                s += l;
            } else {
                n += utf8_put(dst ? dst + n : NULL, 0xFFFD);
                s++;
                esc = 1;
            }
            break;
        }
        default: { /* backslash */
            esc = 1;
            if (end - s < 2) {
                ps->p = (const char *)s;
                return fail(ps, "readEscapedChar: unexpected end of input");
            }
            char c = (char)s[1];
            char out = 0;
            s += 2;
            switch (c) {
            case '"':
                out = '"';
                break;
            case '\\':
                out = '\\';
                break;
            case '/':
                out = '/';
                break;
            case 'b':
                out = '\b';
                break;
            case 'f':
                out = '\f';
                break;
            case 'n':
                out = '\n';
                break;
            case 'r':
                out = '\r';
                break;
            case 't':
                out = '\t';
                break;
            case 'u': {
                uint32_t cp, lo;
                if (end - s < 4 || hex4((const char *)s, &cp)) {
                    ps->p = (const char *)s;
                    return fail(ps, "readU4: expects 4 hex digits after \\u");
                }
                s += 4;
                if (cp >= 0xD800 && cp < 0xDC00) {
                    /* A high surrogate pairs with a following \uDC00-\uDFFF. */
                    if (end - s >= 6 && s[0] == '\\' && s[1] == 'u' && !hex4((const char *)s + 2, &lo) &&
                        lo >= 0xDC00 && lo < 0xE000) {
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        s += 6;
                    } else {
                        cp = 0xFFFD;
                    }
                } else if (cp >= 0xDC00 && cp < 0xE000) {
                    cp = 0xFFFD;
                }
                n += utf8_put(dst ? dst + n : NULL, cp);
                continue;
            }
            default:
                ps->p = (const char *)s - 1;
                return fail(ps, "readEscapedChar: invalid escape char after \\");
            }
            if (dst)
                dst[n] = out;
            n++;
            break;
        }
        }
    }
}

static int read_literal(struct parser *ps, const char *lit)
{
    size_t l = strlen(lit);
    if ((size_t)(ps->end - ps->p) < l || memcmp(ps->p, lit, l) != 0)
        return fail(ps, "readLiteral: invalid literal");
    ps->p += l;
    return 0;
}

static int read_number(struct parser *ps)
{
    const char *s = ps->p, *e = ps->end;
    if (s < e && *s == '-')
        s++;
    if (s >= e || *s < '0' || *s > '9') {
        ps->p = s;
        return fail(ps, "readNumber: invalid number");
    }
    if (*s == '0') {
        s++;
    } else {
        while (s < e && *s >= '0' && *s <= '9')
            s++;
    }
    if (s < e && *s == '.') {
        s++;
        if (s >= e || *s < '0' || *s > '9') {
            ps->p = s;
            return fail(ps, "readNumber: invalid number");
        }
        while (s < e && *s >= '0' && *s <= '9')
            s++;
    }
    if (s < e && (*s == 'e' || *s == 'E')) {
        s++;
        if (s < e && (*s == '+' || *s == '-'))
            s++;
        if (s >= e || *s < '0' || *s > '9') {
            ps->p = s;
            return fail(ps, "readNumber: invalid number");
        }
        while (s < e && *s >= '0' && *s <= '9')
            s++;
    }
    ps->p = s;
    return 0;
}

/* Validates and skips one value of any type, iteratively (a bit per level
 * remembers object vs array), so hostile nesting cannot blow the stack. */
static int skip_value(struct parser *ps)
{
    unsigned char stack[MAX_DEPTH / 8 + 1];
    size_t depth = 0, len;
    int rc;
#define TOP_IS_OBJ() ((stack[(depth - 1) / 8] >> ((depth - 1) % 8)) & 1)
value:
    skip_ws(ps);
    if (ps->p >= ps->end)
        return fail(ps, "skip: unexpected end of input");
    switch (*ps->p) {
    case '{':
    case '[': {
        int obj = *ps->p == '{';
        ps->p++;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == (obj ? '}' : ']')) {
            ps->p++;
            goto after;
        }
        if (depth >= MAX_DEPTH)
            return fail(ps, "skip: exceeded max depth");
        if (obj)
            stack[depth / 8] |= (unsigned char)(1u << (depth % 8));
        else
            stack[depth / 8] &= (unsigned char)~(1u << (depth % 8));
        depth++;
        if (obj)
            goto member;
        goto value;
    }
    case '"':
        rc = read_string(ps, NULL, &len, NULL);
        break;
    case 't':
        rc = read_literal(ps, "true");
        break;
    case 'f':
        rc = read_literal(ps, "false");
        break;
    case 'n':
        rc = read_literal(ps, "null");
        break;
    default:
        rc = read_number(ps);
        break;
    }
    if (rc)
        return rc;
    goto after;
member:
    skip_ws(ps);
    if (ps->p >= ps->end || *ps->p != '"')
        return fail(ps, "skipObject: expect \" for object field");
    rc = read_string(ps, NULL, &len, NULL);
    if (rc)
        return rc;
    skip_ws(ps);
    if (ps->p >= ps->end || *ps->p != ':')
        return fail(ps, "skipObject: expect :");
    ps->p++;
    goto value;
after:
    if (depth == 0)
        return 0;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ',') {
        ps->p++;
        if (TOP_IS_OBJ())
            goto member;
        goto value;
    }
    if (ps->p < ps->end && *ps->p == (TOP_IS_OBJ() ? '}' : ']')) {
        ps->p++;
        depth--;
        goto after;
    }
    return fail(ps, "skip: expect , or closing bracket");
#undef TOP_IS_OBJ
}

static const char *json_type_name(char c)
{
    switch (c) {
    case '"':
        return "string";
    case '{':
        return "object";
    case '[':
        return "array";
    case 't':
    case 'f':
        return "bool";
    default:
        return "number";
    }
}

/* Field name match as Go does it for ASCII names: exact or case-folded.
 * Names are short, so they are decoded (escapes allowed) into a small buffer. */
enum field { F_OTHER, F_METADATA, F_DATA };

static int read_field_name(struct parser *ps, enum field *f)
{
    const char *start = ps->p;
    size_t len;
    int rc = read_string(ps, NULL, &len, NULL);
    if (rc)
        return rc;
    *f = F_OTHER;
    if (len != 4 && len != 8)
        return 0;
    char name[8];
    const char *after = ps->p;
    ps->p = start;
    read_string(ps, name, &len, NULL);
    ps->p = after;
    if (len == 8 && strncasecmp(name, "metadata", 8) == 0)
        *f = F_METADATA;
    else if (len == 4 && strncasecmp(name, "data", 4) == 0)
        *f = F_DATA;
    return 0;
}

/* The metadata object at p.  Pass 1 (ps->kv NULL) counts; pass 2 fills. */
static int read_metadata_object(struct parser *ps)
{
    size_t len;
    int rc;
    ps->p++; /* '{' */
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
        return 0;
    }
    for (;;) {
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != '"')
            return fail(ps, "ReadMapCB: expect \" after {");
        char *key = ps->kv ? ps->strs : NULL;
        rc = read_string(ps, key, &len, NULL);
        if (rc)
            return rc;
        if (key) {
            key[len] = '\0';
            ps->strs += len + 1;
        }
        ps->str_bytes += len + 1;
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != ':')
            return fail(ps, "ReadMapCB: expect : after object field");
        ps->p++;
        skip_ws(ps);
        if (ps->p >= ps->end)
            return fail(ps, "ReadMapCB: unexpected end of input");
        char *val = ps->kv ? ps->strs : NULL;
        if (*ps->p == '"') {
            rc = read_string(ps, val, &len, NULL);
            if (rc)
                return rc;
        } else if (*ps->p == 'n') {
            rc = read_literal(ps, "null"); /* Go stores the zero value "" */
            if (rc)
                return rc;
            len = 0;
        } else {
            return fail_type(ps, json_type_name(*ps->p), "metadata", "string");
        }
        if (val) {
            val[len] = '\0';
            ps->strs += len + 1;
            ps->kv[ps->n_kv].key = key;
            ps->kv[ps->n_kv].value = val;
            ps->n_kv++;
        }
        ps->str_bytes += len + 1;
        ps->n_pairs++;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == '}') {
            ps->p++;
            return 0;
        }
        return fail(ps, "ReadMapCB: expect , or }");
    }
}

/* Pass 1 over the whole document. */
static int scan_document(struct parser *ps)
{
    int rc;
    enum field f;
    skip_ws(ps);
    if (ps->p >= ps->end)
        return fail(ps, "readObjectStart: expect { or n, but found end of input");
    if (*ps->p == 'n') { /* null into a struct is a no-op in Go */
        rc = read_literal(ps, "null");
        goto trailing;
    }
    if (*ps->p != '{') {
        char what[64];
        snprintf(what, sizeof(what), "readObjectStart: expect { or n, but found %c", *ps->p);
        return fail(ps, what);
    }
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
        rc = 0;
        goto trailing;
    }
    for (;;) {
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != '"')
            return fail(ps, "ReadObjectCB: expect \" after {");
        rc = read_field_name(ps, &f);
        if (rc)
            return rc;
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != ':')
            return fail(ps, "ReadObjectCB: expect : after object field");
        ps->p++;
        skip_ws(ps);
        if (ps->p >= ps->end)
            return fail(ps, "ReadObjectCB: unexpected end of input");
        char c = *ps->p;
        if (f == F_METADATA) {
            if (c == 'n') {
                rc = read_literal(ps, "null");
                ps->n_md = 0; /* null resets the map */
            } else if (c == '{') {
                if (ps->n_md == MAX_MD_SPANS)
                    return fail(ps, "ReadObjectCB: too many metadata fields");
                ps->md[ps->n_md].off = (size_t)(ps->p - ps->base);
                rc = read_metadata_object(ps);
                ps->md[ps->n_md].len = (size_t)(ps->p - ps->base) - ps->md[ps->n_md].off;
                ps->n_md++;
            } else {
                return fail_type(ps, json_type_name(c), "metadata", "map[string]string");
            }
        } else if (f == F_DATA) {
            if (c == 'n') {
                rc = read_literal(ps, "null");
                ps->data_state = 0;
            } else if (c == '"') {
                ps->data.off = (size_t)(ps->p - ps->base) + 1;
                /* The payload is one long base64 string: find its end with
                 * memchr instead of classifying each byte.  Without a
                 * backslash its raw bytes are the string unless they hold
                 * control or non-ASCII bytes, and those fail the base64
                 * decode, which then re-runs the exact parse (decode_json). */
                const char *q = NULL, *s0 = ps->p + 1;
                if (ps->fast_data)
                    q = memchr(s0, '"', (size_t)(ps->end - s0));
                if (q && !memchr(s0, '\\', (size_t)(q - s0))) {
                    ps->p = q + 1;
                    ps->data_ulen = (size_t)(q - s0);
                    ps->data_escaped = 0;
                    ps->data_unverified = 1;
                    ps->fast_used = 1;
                } else {
                    rc = read_string(ps, NULL, &ps->data_ulen, &ps->data_escaped);
                    ps->data_unverified = 0;
                }
                ps->data.len = (size_t)(ps->p - ps->base) - 1 - ps->data.off;
                ps->data_state = 1;
            } else {
                return fail_type(ps, json_type_name(c), "data", "[]uint8");
            }
        } else {
            rc = skip_value(ps);
        }
        if (rc)
            return rc;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == '}') {
            ps->p++;
            break;
        }
        return fail(ps, "ReadObjectCB: object not ended with }");
    }
trailing:
    if (rc)
        return rc;
    skip_ws(ps);
    if (ps->p != ps->end)
        return fail(ps, "Unmarshal: there are bytes left after unmarshal");
    return 0;
}

/* Sort by key; equal keys by position in the block (later strings sit at
 * higher addresses), so "last wins" is "keep the last of each run". */
static int kv_cmp(const void *a, const void *b)
{
    const struct kk_kv *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    if (c)
        return c;
    return x->key < y->key ? -1 : x->key > y->key;
}

static size_t sort_unique(struct kk_kv *kv, size_t n)
{
    size_t i, w = 0;
    int sorted = 1;
    for (i = 1; i < n && sorted; i++)
        sorted = strcmp(kv[i - 1].key, kv[i].key) < 0;
    if (sorted)
        return n;
    if (n <= 16) {
        /* The usual few keys: a stable insertion sort (equal keys keep
         * document order, as kv_cmp orders them) without qsort's overhead. */
        for (i = 1; i < n; i++) {
            struct kk_kv t = kv[i];
            size_t j = i;
            for (; j > 0 && strcmp(kv[j - 1].key, t.key) > 0; j--)
                kv[j] = kv[j - 1];
            kv[j] = t;
        }
    } else {
        qsort(kv, n, sizeof(*kv), kv_cmp);
    }
    for (i = 0; i < n; i++) {
        if (i + 1 < n && strcmp(kv[i].key, kv[i + 1].key) == 0)
            continue;
        kv[w++] = kv[i];
    }
    return w;
}

static const uint8_t empty_data[1];

/* Bytes the extra pairs may need (keys + values + NULs). */
static size_t extras_bytes(const struct kk_kv *extra, size_t n_extra)
{
    size_t bytes = 0;
    for (size_t i = 0; i < n_extra; i++)
        bytes += strlen(extra[i].key) + strlen(extra[i].value) + 2;
    return bytes;
}

static const char *find_value(const struct kk_kv *kv, size_t n, const char *key)
{
    struct kk_request tmp = {.md = (struct kk_kv *)kv, .n_md = n};
    return kk_request_get(&tmp, key);
}

/* Appends to kv[n_req..] the extras whose key kv[0..n_req) (sorted, unique)
 * lacks or has empty, copying their strings at *strs; then sorts the lot.
 * Extras are copied after every request string, so on a clash with an empty
 * request value the extra (higher address) survives sort_unique. */
static size_t add_extras(struct kk_kv *kv, size_t n_req, char **strs, const struct kk_kv *extra,
                         size_t n_extra)
{
    size_t n = n_req;
    for (size_t i = 0; i < n_extra; i++) {
        if (find_value(kv, n_req, extra[i].key))
            continue;
        size_t kl = strlen(extra[i].key) + 1, vl = strlen(extra[i].value) + 1;
        memcpy(*strs, extra[i].key, kl);
        kv[n].key = *strs;
        *strs += kl;
        memcpy(*strs, extra[i].value, vl);
        kv[n].value = *strs;
        *strs += vl;
        n++;
    }
    return n_extra ? sort_unique(kv, n) : n;
}

#define RETRY_EXACT 1 /* decode_json_pass: the fast data scan was wrong, parse again exactly */

static int decode_json_pass(struct kk_request *req, const char *body, size_t len, const struct kk_kv *extra,
                            size_t n_extra, char *err, size_t errlen, int fast_data)
{
    struct parser ps;
    int rc = 0;
    char *mem = NULL;

    if (!body || len == 0) {
        if (err && errlen)
            snprintf(err, errlen, "empty request");
        return KK_EPARSE;
    }
    init_tables();
    memset(&ps, 0, sizeof(ps));
    ps.base = ps.p = body;
    ps.end = body + len;
    ps.err = err;
    ps.errlen = errlen;
    ps.fast_data = fast_data;
    rc = scan_document(&ps);
    if (rc && ps.fast_used) {
        /* The skipped bytes might hold an earlier error: the exact parse names it. */
        rc = RETRY_EXACT;
        goto out;
    }
    if (rc)
        goto out;

    /* Layout of the one block: kv array | strings | decoded data. */
    size_t kv_bytes = (ps.n_pairs + n_extra) * sizeof(struct kk_kv);
    size_t str_bytes = ps.str_bytes + extras_bytes(extra, n_extra);
    size_t data_room = 0;
    if (ps.data_state) {
        data_room = kk_b64_decoded_max(ps.data.len);
        if (ps.data_escaped && ps.data_ulen > data_room)
            data_room = ps.data_ulen;
    }
    size_t total = kv_bytes + str_bytes + data_room;
    if (total) {
        mem = malloc(total);
        if (!mem) {
            rc = KK_ENOMEM;
            goto out;
        }
    }
    /* Pass 2: fill the kv array from the remembered metadata objects. */
    ps.kv = (struct kk_kv *)mem;
    ps.strs = mem ? mem + kv_bytes : NULL; /* NULL + 0 is undefined */
    for (size_t i = 0; i < ps.n_md; i++) {
        ps.p = body + ps.md[i].off;
        rc = read_metadata_object(&ps);
        if (rc)
            goto out;
    }
    req->n_md = sort_unique(ps.kv, ps.n_kv);
    req->n_md = add_extras(ps.kv, req->n_md, &ps.strs, extra, n_extra);
    req->md = req->n_md ? ps.kv : NULL;

    if (ps.data_state) {
        uint8_t *dst = (uint8_t *)mem + kv_bytes + str_bytes;
        const char *src = body + ps.data.off;
        size_t srclen = ps.data.len;
        long n;
        if (ps.data_escaped) {
            /* Rare: unescape in place, drop the \r \n Go's decoder ignores,
             * then decode in place (output never overtakes input). */
            size_t ul, w = 0;
            ps.p = body + ps.data.off - 1;
            read_string(&ps, (char *)dst, &ul, NULL);
            for (size_t i = 0; i < ul; i++)
                if (dst[i] != '\r' && dst[i] != '\n')
                    dst[w++] = dst[i];
            src = (const char *)dst;
            srclen = w;
        }
        n = srclen ? kk_b64_decode(dst, src, srclen) : 0;
        if (n < 0 && ps.data_unverified) {
            rc = RETRY_EXACT;
            goto out;
        }
        if (n < 0) {
            if (err && errlen)
                snprintf(err, errlen, "Request.data: illegal base64 data");
            rc = KK_EPARSE;
            goto out;
        }
        req->data = n ? dst : empty_data;
        req->data_len = (size_t)n;
    }
    req->_mem = mem;
    mem = NULL;
out:
    free(mem);
    if (rc && rc != KK_ENOMEM && rc != RETRY_EXACT)
        rc = KK_EPARSE;
    return rc;
}

static int decode_json(struct kk_request *req, const char *body, size_t len, const struct kk_kv *extra,
                       size_t n_extra, char *err, size_t errlen)
{
    int rc = decode_json_pass(req, body, len, extra, n_extra, err, errlen, 1);
    if (rc == RETRY_EXACT) { /* rare: data that is not plain base64; errors as the exact parser says */
        memset(req, 0, sizeof(*req));
        rc = decode_json_pass(req, body, len, extra, n_extra, err, errlen, 0);
    }
    return rc;
}

/* do_not_parse_payload: the body verbatim as data, extras as metadata. */
static int decode_raw(struct kk_request *req, const char *body, size_t len, const struct kk_kv *extra,
                      size_t n_extra)
{
    size_t kv_bytes = n_extra * sizeof(struct kk_kv), str_bytes = extras_bytes(extra, n_extra);
    char *mem = malloc(kv_bytes + str_bytes + len + 1);
    if (!mem)
        return KK_ENOMEM;
    char *strs = mem + kv_bytes;
    req->n_md = add_extras((struct kk_kv *)mem, 0, &strs, extra, n_extra);
    req->md = req->n_md ? (struct kk_kv *)mem : NULL;
    uint8_t *data = (uint8_t *)mem + kv_bytes + str_bytes;
    if (len)
        memcpy(data, body, len);
    req->data = data;
    req->data_len = len;
    req->_mem = mem;
    return 0;
}

int kk_request_decode(struct kk_request *req, const char *body, size_t len, bool raw,
                      const struct kk_kv *extra, size_t n_extra, char *err, size_t errlen)
{
    int rc;
    memset(req, 0, sizeof(*req));
    if (err && errlen)
        err[0] = '\0';
    rc = raw ? decode_raw(req, body, len, extra, n_extra)
             : decode_json(req, body, len, extra, n_extra, err, errlen);
    if (rc)
        memset(req, 0, sizeof(*req));
    return rc;
}

int kk_request_parse(struct kk_request *req, const char *body, size_t len, char *err, size_t errlen)
{
    return kk_request_decode(req, body, len, false, NULL, 0, err, errlen);
}

int kk_request_raw(struct kk_request *req, const char *body, size_t len)
{
    return kk_request_decode(req, body, len, true, NULL, 0, NULL, 0);
}

const char *kk_request_get(const struct kk_request *req, const char *key)
{
    size_t lo = 0, hi = req->n_md;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(req->md[mid].key, key);
        if (c == 0)
            return req->md[mid].value[0] ? req->md[mid].value : NULL;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int kk_request_merge_md(struct kk_request *out, const struct kk_request *req, const struct kk_kv *extra,
                        size_t n_extra)
{
    size_t i, n = 0, bytes = extras_bytes(req->md, req->n_md) + extras_bytes(extra, n_extra);
    size_t kv_bytes = (req->n_md + n_extra) * sizeof(struct kk_kv);
    char *mem, *s;

    memset(out, 0, sizeof(*out));
    mem = malloc(kv_bytes + bytes + req->data_len + 1);
    if (!mem)
        return KK_ENOMEM;
    struct kk_kv *kv = (struct kk_kv *)mem;
    s = mem + kv_bytes;
    for (i = 0; i < req->n_md; i++, n++) {
        size_t kl = strlen(req->md[i].key) + 1, vl = strlen(req->md[i].value) + 1;
        memcpy(s, req->md[i].key, kl);
        kv[n].key = s;
        s += kl;
        memcpy(s, req->md[i].value, vl);
        kv[n].value = s;
        s += vl;
    }
    out->n_md = add_extras(kv, n, &s, extra, n_extra);
    out->md = out->n_md ? kv : NULL;
    if (req->data) {
        uint8_t *d = (uint8_t *)mem + kv_bytes + bytes;
        memcpy(d, req->data, req->data_len);
        out->data = d;
        out->data_len = req->data_len;
    }
    out->_mem = mem;
    return 0;
}

void kk_request_free(struct kk_request *req)
{
    if (!req)
        return;
    free(req->_mem);
    memset(req, 0, sizeof(*req));
}

/* ---- encoder ------------------------------------------------------------- */

/* Output bytes for one ASCII byte: 1 plain, 2 short escape, 6 \u00XX. */
static unsigned char esc_len[128];

static void init_esc(void)
{
    static int ready;
    if (ready)
        return;
    for (int i = 0; i < 128; i++)
        esc_len[i] = i < 0x20 ? 6 : 1;
    esc_len['\n'] = esc_len['\r'] = esc_len['\t'] = 2;
    esc_len['"'] = esc_len['\\'] = 2;
    esc_len['<'] = esc_len['>'] = esc_len['&'] = 6;
    ready = 1;
}

static const char hexd[] = "0123456789abcdef";

/* Exact escaped length (quotes included). */
static size_t json_string_len(const unsigned char *s, size_t len)
{
    const unsigned char *e = s + len;
    size_t n = 2;
    while (s < e) {
        if (*s < 0x80) {
            n += esc_len[*s++];
            continue;
        }
        size_t l = utf8_valid_len(s, e);
        if (l == 0) {
            n += 6; /* \ufffd */
            s++;
        } else if (l == 3 && s[0] == 0xE2 && s[1] == 0x80 && (s[2] == 0xA8 || s[2] == 0xA9)) {
            n += 6;
            s += 3;
        } else {
            n += l;
            s += l;
        }
    }
    return n;
}

static char *put_u(char *d, unsigned v)
{
    d[0] = '\\';
    d[1] = 'u';
    d[2] = hexd[(v >> 12) & 15];
    d[3] = hexd[(v >> 8) & 15];
    d[4] = hexd[(v >> 4) & 15];
    d[5] = hexd[v & 15];
    return d + 6;
}

static char *json_string_write(char *d, const unsigned char *s, size_t len)
{
    const unsigned char *e = s + len;
    *d++ = '"';
    while (s < e) {
        const unsigned char *run = s;
        while (s < e && *s < 0x80 && esc_len[*s] == 1)
            s++;
        if (s > run) {
            memcpy(d, run, (size_t)(s - run));
            d += s - run;
            continue;
        }
        unsigned char c = *s;
        if (c < 0x80) {
            s++;
            if (esc_len[c] == 2) {
                *d++ = '\\';
                *d++ = c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't' : (char)c;
            } else {
                d = put_u(d, c);
            }
            continue;
        }
        size_t l = utf8_valid_len(s, e);
        if (l == 0) {
            d = put_u(d, 0xFFFD);
            s++;
        } else if (l == 3 && s[0] == 0xE2 && s[1] == 0x80 && (s[2] == 0xA8 || s[2] == 0xA9)) {
            d = put_u(d, s[2] == 0xA8 ? 0x2028 : 0x2029);
            s += 3;
        } else {
            memcpy(d, s, l);
            d += l;
            s += l;
        }
    }
    *d++ = '"';
    return d;
}

int kk_json_string(struct kk_buf *out, const char *s, size_t len)
{
    init_esc();
    size_t n = json_string_len((const unsigned char *)s, len);
    char *d = kk_buf_reserve(out, n);
    if (!d)
        return n > out->max - out->len ? KK_ETOOBIG : KK_ENOMEM;
    json_string_write(d, (const unsigned char *)s, len);
    kk_buf_commit(out, n);
    return 0;
}

static int cmp_kv_ptr(const void *a, const void *b)
{
    const struct kk_kv *const *x = a, *const *y = b;
    return strcmp((*x)->key, (*y)->key);
}

static int append_lit(struct kk_buf *out, const char *s, size_t n)
{
    return kk_buf_append(out, s, n);
}
#define LIT(out, s) append_lit((out), (s), sizeof(s) - 1)

int kk_response_json(struct kk_buf *out, const struct kk_kv *md, size_t n_md, const uint8_t *data,
                     size_t data_len, bool is_error, const char *error)
{
    size_t start = out->len, i;
    const struct kk_kv *small[32];
    const struct kk_kv **order = NULL;
    int rc, sorted = 1;

    for (i = 1; i < n_md && sorted; i++)
        sorted = strcmp(md[i - 1].key, md[i].key) <= 0;
    if (!sorted) {
        /* Unsorted input is rare (the target's own metadata): sort pointers. */
        order = n_md <= 32 ? small : malloc(n_md * sizeof(*order));
        if (!order) {
            rc = KK_ENOMEM;
            goto out;
        }
        for (i = 0; i < n_md; i++)
            order[i] = &md[i];
        qsort(order, n_md, sizeof(*order), cmp_kv_ptr);
    }
    rc = LIT(out, "{\"metadata\":{");
    for (i = 0; i < n_md && !rc; i++) {
        const struct kk_kv *kv = order ? order[i] : &md[i];
        if (i)
            rc = LIT(out, ",");
        if (!rc)
            rc = kk_json_string(out, kv->key, strlen(kv->key));
        if (!rc)
            rc = LIT(out, ":");
        if (!rc)
            rc = kk_json_string(out, kv->value, strlen(kv->value));
    }
    if (rc)
        goto out;
    rc = LIT(out, "},\"data\":");
    if (rc)
        goto out;
    if (data) {
        size_t n = kk_b64_encoded_len(data_len);
        char *d = kk_buf_reserve(out, n + 2);
        if (!d) {
            rc = n + 2 > out->max - out->len ? KK_ETOOBIG : KK_ENOMEM;
            goto out;
        }
        d[0] = '"';
        kk_b64_encode(d + 1, data, data_len);
        d[n + 1] = '"';
        kk_buf_commit(out, n + 2);
    } else {
        rc = LIT(out, "null");
        if (rc)
            goto out;
    }
    rc = is_error ? LIT(out, ",\"is_error\":true,\"error\":") : LIT(out, ",\"is_error\":false,\"error\":");
    if (!rc)
        rc = kk_json_string(out, error ? error : "", error ? strlen(error) : 0);
    if (!rc)
        rc = LIT(out, "}");
out:
    if (order && order != small)
        free(order);
    if (rc)
        out->len = start;
    return rc;
}

#include "kk/log.h"

#include "kk/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

enum kk_log_level kk__log_level = KK_LOG_INFO;
static enum kk_log_format log_format = KK_LOG_TEXT;
static FILE *log_stream;

void kk_log_set_level(enum kk_log_level level) { kk__log_level = level; }
void kk_log_set_format(enum kk_log_format fmt) { log_format = fmt; }
enum kk_log_level kk_log_get_level(void) { return kk__log_level; }
void kk_log_set_stream(FILE *f) { log_stream = f; }

int kk_log_parse_level(const char *s, enum kk_log_level *out)
{
    static const struct {
        const char *name;
        enum kk_log_level level;
    } table[] = {
        {"debug", KK_LOG_DEBUG}, {"info", KK_LOG_INFO},   {"warn", KK_LOG_WARN},
        {"warning", KK_LOG_WARN}, {"error", KK_LOG_ERROR},
    };
    for (size_t i = 0; s && i < sizeof(table) / sizeof(table[0]); i++) {
        if (strcasecmp(s, table[i].name) == 0) {
            *out = table[i].level;
            return 0;
        }
    }
    return KK_EINVAL;
}

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

/* A line is built whole in a stack buffer and written with one fwrite on
 * the (unbuffered) stream, so concurrent writers never interleave within a
 * line and a line costs one write(2).  Longer messages are cut, marked. */
#define LINE_MAX_BYTES 4096
#define TRUNC_MARK "...[truncated]"

struct line {
    char b[LINE_MAX_BYTES];
    size_t n;
    bool full;
};

/* Room kept at the end for the marker and the line's closing bytes. */
#define LINE_TAIL (sizeof(TRUNC_MARK) + 8)

static void put(struct line *l, const char *s, size_t n)
{
    size_t room = sizeof(l->b) - LINE_TAIL - l->n;
    if (l->full)
        return;
    if (n > room) {
        n = room;
        l->full = true;
    }
    memcpy(l->b + l->n, s, n);
    l->n += n;
}

static void put_str(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

/* JSON string escaping for the message and scope; control bytes as \u00XX.
 * An escape is never split by truncation. */
static void put_json(struct line *l, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    while (*s && !l->full) {
        size_t run = 0;
        while (s[run] && (unsigned char)s[run] >= 0x20 && s[run] != '"' && s[run] != '\\')
            run++;
        put(l, s, run);
        s += run;
        if (!*s || l->full)
            break;
        unsigned char c = (unsigned char)*s++;
        char e[6] = {'\\', (char)c, 0, 0, 0, 0};
        size_t en = 2;
        if (c == '\n')
            e[1] = 'n';
        else if (c == '\t')
            e[1] = 't';
        else if (c < 0x20) {
            memcpy(e, "\\u00", 4);
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            en = 6;
        }
        if (en > sizeof(l->b) - LINE_TAIL - l->n) {
            l->full = true;
            break;
        }
        put(l, e, en);
    }
}

void kk_log(enum kk_log_level level, const char *scope, const char *fmt, ...)
{
    if (level < kk__log_level)
        return;
    FILE *f = log_stream ? log_stream : stderr;

    char msg[LINE_MAX_BYTES];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    size_t w = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + w, sizeof(when) - w, ".%03ldZ", ts.tv_nsec / 1000000);

    const char *lvl = level_names[level <= KK_LOG_ERROR ? level : KK_LOG_ERROR];
    struct line l;
    l.n = 0;
    l.full = false;
    bool cut = (size_t)n >= sizeof(msg);
    if (log_format == KK_LOG_JSON) {
        put_str(&l, "{\"time\":\"");
        put_str(&l, when);
        put_str(&l, "\",\"level\":\"");
        put_str(&l, lvl);
        put_str(&l, "\",\"source\":\"");
        put_json(&l, scope ? scope : "kubemq-kinesis");
        put_str(&l, "\",\"msg\":\"");
        put_json(&l, msg);
    } else {
        put_str(&l, when);
        put_str(&l, "\t");
        put_str(&l, lvl);
        put_str(&l, "\t");
        put_str(&l, scope ? scope : "kubemq-kinesis");
        put_str(&l, "\t");
        put_str(&l, msg);
    }
    /* The tail room is always left for these. */
    if (l.full || cut) {
        memcpy(l.b + l.n, TRUNC_MARK, sizeof(TRUNC_MARK) - 1);
        l.n += sizeof(TRUNC_MARK) - 1;
    }
    if (log_format == KK_LOG_JSON) {
        memcpy(l.b + l.n, "\"}", 2);
        l.n += 2;
    }
    l.b[l.n++] = '\n';
    fwrite(l.b, 1, l.n, f);
    fflush(f);
}

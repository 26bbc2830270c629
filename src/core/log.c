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

/* JSON string escaping for the message and scope; control bytes as \u00XX. */
static void json_escaped(FILE *f, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
}

void kk_log(enum kk_log_level level, const char *scope, const char *fmt, ...)
{
    if (level < kk__log_level)
        return;
    FILE *f = log_stream ? log_stream : stderr;

    char msg[2048];
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
    if (log_format == KK_LOG_JSON) {
        fprintf(f, "{\"time\":\"%s\",\"level\":\"%s\",\"source\":\"", when, lvl);
        json_escaped(f, scope ? scope : "kubemq-kinesis");
        fputs("\",\"msg\":\"", f);
        json_escaped(f, msg);
        fputs("\"}\n", f);
    } else {
        fprintf(f, "%s\t%s\t%s\t%s\n", when, lvl, scope ? scope : "kubemq-kinesis", msg);
    }
    fflush(f);
}

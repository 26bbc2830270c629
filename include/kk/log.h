/* Leveled logging to stderr, as text for people or JSON lines for pipelines.
 *
 * Every line carries a scope: the binding name, or a module name for lines
 * that belong to no binding.  Callers never pass secrets: values of
 * aws_secret_key, token and auth_token must not reach a format string.
 * The logger is process-global (one loop, one thread) and needs no setup;
 * the defaults are level info, text format.
 */
#ifndef KK_LOG_H
#define KK_LOG_H

#include <stdbool.h>
#include <stdio.h>

enum kk_log_level {
    KK_LOG_DEBUG = 0,
    KK_LOG_INFO = 1,
    KK_LOG_WARN = 2,
    KK_LOG_ERROR = 3,
};

enum kk_log_format {
    KK_LOG_TEXT = 0,
    KK_LOG_JSON = 1,
};

void kk_log_set_level(enum kk_log_level level);
void kk_log_set_format(enum kk_log_format fmt);
enum kk_log_level kk_log_get_level(void);

/* Parses "debug", "info", "warn"/"warning", "error" (case-insensitive).
 * Returns 0 and sets *out, or KK_EINVAL. */
int kk_log_parse_level(const char *s, enum kk_log_level *out);

static inline bool kk_log_enabled(enum kk_log_level level)
{
    extern enum kk_log_level kk__log_level;
    return level >= kk__log_level;
}

void kk_log(enum kk_log_level level, const char *scope, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Redirects output (tests); NULL restores stderr. */
void kk_log_set_stream(FILE *f);

#define KK_LOG_AT(lvl, scope, ...)                                       \
    do {                                                                 \
        if (kk_log_enabled(lvl))                                         \
            kk_log(lvl, scope, __VA_ARGS__);                             \
    } while (0)
#define KK_DEBUG(scope, ...) KK_LOG_AT(KK_LOG_DEBUG, scope, __VA_ARGS__)
#define KK_INFO(scope, ...) KK_LOG_AT(KK_LOG_INFO, scope, __VA_ARGS__)
#define KK_WARN(scope, ...) KK_LOG_AT(KK_LOG_WARN, scope, __VA_ARGS__)
#define KK_ERROR(scope, ...) KK_LOG_AT(KK_LOG_ERROR, scope, __VA_ARGS__)

#endif

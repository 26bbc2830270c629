#include "kk/clock.h"

#include "kk/err.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

uint64_t kk_mono_ms(void) { return uv_hrtime() / 1000000u; }

int64_t kk_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int kk_fmt_rfc3339_ms(char dst[32], int64_t epoch_ms)
{
    int64_t sec = epoch_ms / 1000;
    int ms = (int)(epoch_ms % 1000);
    if (ms < 0) {
        ms += 1000;
        sec -= 1;
    }
    time_t t = (time_t)sec;
    struct tm tm;
    gmtime_r(&t, &tm);
    int n = (int)strftime(dst, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    if (ms) {
        /* Go trims trailing zeros of the fraction. */
        char frac[5];
        snprintf(frac, sizeof(frac), ".%03d", ms);
        int fl = 4;
        while (frac[fl - 1] == '0')
            fl--;
        memcpy(dst + n, frac, (size_t)fl);
        n += fl;
    }
    dst[n++] = 'Z';
    dst[n] = '\0';
    return n;
}

static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int kk_parse_rfc3339(const char *s, int64_t *epoch_ns)
{
    int Y, M, D, h, m, sec;
    if (strlen(s) < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') ||
        s[13] != ':' || s[16] != ':')
        return KK_EINVAL;
    if (digits(s, 4, &Y) || digits(s + 5, 2, &M) || digits(s + 8, 2, &D) ||
        digits(s + 11, 2, &h) || digits(s + 14, 2, &m) || digits(s + 17, 2, &sec))
        return KK_EINVAL;
    if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60)
        return KK_EINVAL;
    const char *p = s + 19;
    int64_t frac_ns = 0;
    if (*p == '.') {
        p++;
        int64_t scale = 100000000;
        if (!isdigit((unsigned char)*p))
            return KK_EINVAL;
        while (isdigit((unsigned char)*p)) {
            frac_ns += (*p - '0') * scale;
            scale /= 10;
            p++;
        }
    }
    int off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (strlen(p) != 6 || p[3] != ':' || digits(p + 1, 2, &oh) || digits(p + 4, 2, &om))
            return KK_EINVAL;
        off = (oh * 60 + om) * 60 * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return KK_EINVAL;
    }
    if (*p)
        return KK_EINVAL;
    /* Days from civil (proleptic Gregorian), Howard Hinnant's algorithm. */
    int y = Y - (M <= 2);
    int era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (unsigned)((153 * (M + (M > 2 ? -3 : 9)) + 2) / 5 + D - 1);
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = (int64_t)era * 146097 + (int64_t)doe - 719468;
    int64_t secs = days * 86400 + h * 3600 + m * 60 + sec - off;
    *epoch_ns = secs * 1000000000 + frac_ns;
    return 0;
}

/* Histogram, /proc readings and every kind of output of the load tool. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "kk/clock.h"
#include "load.h"

const char *const load_err_names[LERR__COUNT] = {
    "is_error", "not_executed", "timeout", "nacked", "grpc", "transport", "bad_reply",
};

/* ---- histogram ------------------------------------------------------------ */
#define SUB (1u << HIST_SUB_BITS)

void hist_init(struct hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

static size_t bucket_of(uint64_t v)
{
    if (v < 2 * SUB)
        return (size_t)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - HIST_SUB_BITS;
    return 2 * SUB + (size_t)(shift - 1) * SUB + (size_t)((v >> shift) - SUB);
}

/* Largest value that falls in bucket i. */
static uint64_t bucket_top(size_t i)
{
    if (i < 2 * SUB)
        return i;
    size_t shift = (i - 2 * SUB) / SUB + 1;
    uint64_t sub = (i - 2 * SUB) % SUB + SUB;
    return ((sub + 1) << shift) - 1;
}

void hist_record(struct hist *h, uint64_t v)
{
    size_t i = bucket_of(v);
    if (i >= HIST_BUCKETS)
        i = HIST_BUCKETS - 1;
    h->b[i]++;
    h->count++;
    h->sum += (double)v;
    if (v > h->max)
        h->max = v;
    if (v < h->min)
        h->min = v;
}

uint64_t hist_quantile(const struct hist *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t want = (uint64_t)(q * (double)h->count + 0.999999);
    if (want < 1)
        want = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= want) {
            uint64_t top = bucket_top(i);
            return top > h->max ? h->max : top;
        }
    }
    return h->max;
}

/* ---- /proc ------------------------------------------------------------------ */
double proc_cpu_s(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    /* comm may hold spaces: fields start after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long long ut = 0, st = 0;
    /* after ')': state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15)
     */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return (double)(ut + st) / (double)(hz > 0 ? hz : 100);
}

long proc_hwm_kb(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "VmHWM:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

double self_cpu_s(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return -1;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

int read_pid_file(const char *path)
{
    FILE *f = path ? fopen(path, "r") : NULL;
    int pid = 0;
    if (f) {
        if (fscanf(f, "%d", &pid) != 1)
            pid = 0;
        fclose(f);
    }
    return pid;
}

void write_port_file(const char *path, uint16_t port)
{
    if (!path)
        return;
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    fprintf(f, "%u\n", port);
    fclose(f);
    rename(tmp, path); /* readers never see a half-written file */
}

/* ---- output ------------------------------------------------------------------ */
static double ms(uint64_t us)
{
    return (double)us / 1000.0;
}

void report_progress(const struct load_opts *o, const struct load_stats *s, uint64_t now_ms)
{
    if (o->quiet || !isatty(STDERR_FILENO))
        return;
    double el = (double)(now_ms - s->t_start_ms) / 1000.0;
    fprintf(stderr,
            "\r%8.1fs  done %-10" PRIu64 " %9.0f/s  p50 %8.3f ms  p99 %8.3f ms  errors %" PRIu64 "   ", el,
            s->ok + s->errors, el > 0 ? (double)(s->ok + s->errors) / el : 0.0,
            ms(hist_quantile(&s->lat, 0.50)), ms(hist_quantile(&s->lat, 0.99)), s->errors);
    fflush(stderr);
}

static const double pct_q[] = {0.5, 0.9, 0.99, 0.999};
static const char *const pct_name[] = {"p50", "p90", "p99", "p99.9"};

static int write_histogram(const char *path, const struct hist *h)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    /* HdrHistogram's percentile-distribution layout (value in ms). */
    fprintf(f, "%12s %14s %10s %14s\n\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
    uint64_t seen = 0;
    for (size_t i = 0; i < HIST_BUCKETS && h->count; i++) {
        if (!h->b[i])
            continue;
        seen += h->b[i];
        double p = (double)seen / (double)h->count;
        uint64_t top = bucket_top(i);
        if (top > h->max)
            top = h->max;
        if (p < 1.0)
            fprintf(f, "%12.3f %14.12f %10" PRIu64 " %14.2f\n", ms(top), p, seen, 1.0 / (1.0 - p));
        else
            fprintf(f, "%12.3f %14.12f %10" PRIu64 " %14s\n", ms(top), p, seen, "inf");
    }
    fprintf(f, "#[Mean = %.3f, Max = %.3f, Count = %" PRIu64 "]\n",
            h->count ? ms((uint64_t)(h->sum / (double)h->count)) : 0.0, ms(h->max), h->count);
    return fclose(f) == 0 ? 0 : -1;
}

static int write_plot(const char *png, const struct hist *h, const char *title)
{
    if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
        fprintf(stderr, "note: gnuplot not installed, --plot %s skipped\n", png);
        return 0;
    }
    char data[4200];
    snprintf(data, sizeof(data), "%s.dat", png);
    FILE *d = fopen(data, "w");
    if (!d)
        return -1;
    /* x = 1/(1-percentile), y = latency ms; the maximum sits at 1/(1-(n-1)/n) = n. */
    uint64_t seen = 0;
    for (size_t i = 0; i < HIST_BUCKETS && h->count; i++) {
        if (!h->b[i])
            continue;
        seen += h->b[i];
        uint64_t top = bucket_top(i);
        if (top > h->max)
            top = h->max;
        double x = seen < h->count ? 1.0 / (1.0 - (double)seen / (double)h->count) : (double)h->count;
        fprintf(d, "%.6f %.3f\n", x, ms(top));
    }
    if (fclose(d) != 0)
        return -1;
    FILE *g = popen("gnuplot", "w");
    if (!g)
        return -1;
    fprintf(g,
            "set terminal pngcairo size 900,500 noenhanced\n"
            "set output '%s'\n"
            "set title '%s'\n"
            "set logscale x\n"
            "set xlabel 'percentile'\n"
            "set ylabel 'latency (ms)'\n"
            "set xrange [1:*]\n"
            "set xtics ('0%%%%' 1, '90%%%%' 10, '99%%%%' 100, '99.9%%%%' 1000, '99.99%%%%' 10000, "
            "'99.999%%%%' 100000)\n"
            "set grid\n"
            "plot '%s' using 1:2 with steps lw 2 title 'latency'\n",
            png, title, data);
    int rc = pclose(g);
    remove(data);
    return rc == 0 ? 0 : -1;
}

int report_final(const struct load_opts *o, struct load_stats *s, const char *extra_json)
{
    int rc = 0;
    double el = (double)(s->t_end_ms - s->t_start_ms) / 1000.0;
    if (el <= 0)
        el = 1e-3;
    double tput = (double)s->ok / el;
    double cpu = -1;
    long hwm = -1;
    if (o->pid > 0) {
        double c = proc_cpu_s(o->pid);
        if (c >= 0 && s->cpu_start_s >= 0)
            cpu = c - s->cpu_start_s;
        hwm = proc_hwm_kb(o->pid);
    }
    if (!o->quiet && isatty(STDERR_FILENO))
        fputc('\n', stderr);

    printf("== kubemq-kinesis-load %s", o->mode);
    if (strcmp(o->mode, "kinesis") != 0)
        printf(" kind=%s method=%s payload=%zuB %s=%g", o->kind, o->method, o->payload_bytes,
               o->rate > 0 ? "rate" : "inflight", o->rate > 0 ? o->rate : (double)o->inflight);
    printf("\n");
    printf("  %-18s %.3f s\n", "elapsed", el);
    printf("  %-18s %" PRIu64 "\n", "sent", s->sent);
    printf("  %-18s %" PRIu64 "\n", "ok", s->ok);
    printf("  %-18s %" PRIu64 "\n", "errors", s->errors);
    for (int i = 0; i < LERR__COUNT; i++)
        if (s->err[i])
            printf("    %-16s %" PRIu64 "\n", load_err_names[i], s->err[i]);
    printf("  %-18s %.1f /s\n", "throughput", tput);
    if (s->lat.count) {
        printf("  latency (ms)      ");
        for (size_t i = 0; i < 4; i++)
            printf(" %s %.3f", pct_name[i], ms(hist_quantile(&s->lat, pct_q[i])));
        printf(" max %.3f mean %.3f\n", ms(s->lat.max), ms((uint64_t)(s->lat.sum / (double)s->lat.count)));
    }
    printf("  %-18s %.2f s\n", "load tool cpu", self_cpu_s());
    if (o->pid > 0)
        printf("  gateway pid %-6d cpu %.2f s  peak rss %.1f MiB\n", o->pid, cpu,
               hwm >= 0 ? (double)hwm / 1024.0 : -1.0);
    fflush(stdout);

    if (o->json_path) {
        FILE *f = strcmp(o->json_path, "-") == 0 ? stdout : fopen(o->json_path, "w");
        if (!f) {
            fprintf(stderr, "cannot write %s: %s\n", o->json_path, strerror(errno));
            rc = -1;
        } else {
            fprintf(f,
                    "{\"mode\":\"%s\",\"kind\":\"%s\",\"method\":\"%s\",\"payload_bytes\":%zu,"
                    "\"inflight\":%u,\"rate\":%g,",
                    o->mode, o->kind ? o->kind : "", o->method ? o->method : "", o->payload_bytes,
                    o->inflight, o->rate);
            fprintf(f,
                    "\"elapsed_s\":%.3f,\"sent\":%" PRIu64 ",\"ok\":%" PRIu64 ",\"errors\":%" PRIu64
                    ",\"errors_by_kind\":{",
                    el, s->sent, s->ok, s->errors);
            for (int i = 0; i < LERR__COUNT; i++)
                fprintf(f, "%s\"%s\":%" PRIu64, i ? "," : "", load_err_names[i], s->err[i]);
            fprintf(f, "},\"throughput_rps\":%.1f,\"latency_ms\":{\"count\":%" PRIu64, tput, s->lat.count);
            fprintf(f, ",\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f,\"mean\":%.3f}",
                    ms(hist_quantile(&s->lat, 0.5)), ms(hist_quantile(&s->lat, 0.9)),
                    ms(hist_quantile(&s->lat, 0.99)), ms(hist_quantile(&s->lat, 0.999)), ms(s->lat.max),
                    s->lat.count ? ms((uint64_t)(s->lat.sum / (double)s->lat.count)) : 0.0);
            fprintf(f, ",\"self_cpu_s\":%.3f", self_cpu_s());
            if (o->pid > 0)
                fprintf(f, ",\"gateway\":{\"pid\":%d,\"cpu_s\":%.3f,\"peak_rss_kb\":%ld}", o->pid, cpu, hwm);
            if (extra_json && *extra_json)
                fprintf(f, ",%s", extra_json);
            fprintf(f, "}\n");
            if (f != stdout && fclose(f) != 0)
                rc = -1;
        }
    }
    if (o->hist_path && write_histogram(o->hist_path, &s->lat) != 0) {
        fprintf(stderr, "cannot write %s\n", o->hist_path);
        rc = -1;
    }
    if (o->plot_path) {
        char title[256];
        snprintf(title, sizeof(title), "%s %s %s payload %zu B %s %g", o->mode, o->kind ? o->kind : "",
                 o->method ? o->method : "", o->payload_bytes, o->rate > 0 ? "rate" : "inflight",
                 o->rate > 0 ? o->rate : (double)o->inflight);
        if (write_plot(o->plot_path, &s->lat, title) != 0) {
            fprintf(stderr, "cannot render %s\n", o->plot_path);
            rc = -1;
        }
    }
    return rc;
}

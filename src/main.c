/* kubemq-kinesis: CLI, config loading, signals and the one event loop.
 *
 * main owns the loop and the config source; the app (src/binding) owns the
 * bindings and the API.  SIGINT/SIGTERM stop gracefully, SIGHUP reloads the
 * same source (file or CONFIG) and keeps the old tree when the new one is
 * invalid.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "kk/app.h"
#include "kk/config.h"
#include "kk/err.h"
#include "kk/log.h"

#define SCOPE "main"

struct cli {
    const char *config_path; /* NULL: use CONFIG */
    bool check_only;
    bool level_set, format_set;
    enum kk_log_level level;
    enum kk_log_format format;
};

struct ctx {
    struct cli cli;
    uv_signal_t sig_int, sig_term, sig_hup;
    struct kk_app *app;
    bool stopping;
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: kubemq-kinesis [-c|--config FILE] [--check-config] [--log-level debug|info|warn|error]\n"
            "                      [--log-format text|json] [--version] [--help]\n"
            "\n"
            "  -c, --config FILE   configuration file (YAML or JSON; default config.yaml,\n"
            "                      or the CONFIG environment variable when set and -c is absent)\n"
            "  --check-config      validate the configuration, print problems, exit 0 or 1\n"
            "  --log-level LEVEL   override logLevel of the configuration\n"
            "  --log-format FMT    override logFormat of the configuration (text or json)\n"
            "  --version           print the version and exit\n"
            "  --help              print this help and exit\n"
            "\n"
            "Signals: SIGINT/SIGTERM stop gracefully, SIGHUP reloads the configuration.\n");
}

/* Loads from the chosen source; on failure *diag lists every problem. */
static int load_config(const struct cli *cli, struct kk_config **cfg, struct kk_diag *diag)
{
    if (cli->config_path)
        return kk_config_load_file(cli->config_path, cfg, diag);
    return kk_config_load_env(cfg, diag);
}

static void apply_logging(const struct cli *cli, const struct kk_config *cfg)
{
    kk_log_set_level(cli->level_set ? cli->level : cfg->log_level);
    kk_log_set_format(cli->format_set ? cli->format : (cfg->log_json ? KK_LOG_JSON : KK_LOG_TEXT));
}

static void on_closed(uv_handle_t *h)
{
    (void)h;
}

static void on_stopped(void *arg)
{
    struct ctx *c = arg;
    c->app = NULL;
    /* The signal handles are the last of main's; closing them ends uv_run. */
    uv_close((uv_handle_t *)&c->sig_int, on_closed);
    uv_close((uv_handle_t *)&c->sig_term, on_closed);
    uv_close((uv_handle_t *)&c->sig_hup, on_closed);
    KK_INFO(SCOPE, "stopped");
}

static void on_stop_signal(uv_signal_t *h, int signum)
{
    struct ctx *c = h->data;
    if (c->stopping || !c->app) {
        KK_INFO(SCOPE, "signal %d: already stopping", signum);
        return;
    }
    c->stopping = true;
    KK_INFO(SCOPE, "signal %d: stopping", signum);
    kk_app_stop(c->app, on_stopped, c);
}

static void on_reload_signal(uv_signal_t *h, int signum)
{
    struct ctx *c = h->data;
    struct kk_config *cfg = NULL;
    struct kk_diag diag;
    if (c->stopping || !c->app)
        return;
    KK_INFO(SCOPE, "signal %d: reloading configuration", signum);
    int rv = load_config(&c->cli, &cfg, &diag);
    for (size_t i = 0; i < diag.n_warnings; i++)
        KK_WARN(SCOPE, "%s", diag.warnings[i]);
    if (rv < 0) {
        for (size_t i = 0; i < diag.n_errors; i++)
            KK_ERROR(SCOPE, "%s", diag.errors[i]);
        KK_ERROR(SCOPE, "error loading new configuration, keeping the old one");
        goto out;
    }
    apply_logging(&c->cli, cfg);
    size_t n = cfg->n_bindings;
    rv = kk_app_reload(c->app, cfg); /* takes ownership of cfg, even on failure */
    if (rv < 0)
        KK_ERROR(SCOPE, "reload failed: %s", kk_strerror(rv));
    else
        KK_INFO(SCOPE, "configuration reloaded, %zu bindings loaded", n);
out:
    kk_diag_free(&diag);
}

static void on_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    KK_ERROR(SCOPE, "handle still open at exit: %s%s", uv_handle_type_name(uv_handle_get_type(h)),
             uv_is_closing(h) ? " (closing)" : "");
}

static int parse_cli(int argc, char **argv, struct cli *cli)
{
    enum { OPT_CHECK = 256, OPT_LEVEL, OPT_FORMAT, OPT_VERSION, OPT_HELP };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, OPT_CHECK},
        {"log-level", required_argument, NULL, OPT_LEVEL},
        {"log-format", required_argument, NULL, OPT_FORMAT},
        {"version", no_argument, NULL, OPT_VERSION},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    bool have_c = false;
    int o;
    while ((o = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (o) {
        case 'c':
            cli->config_path = optarg;
            have_c = true;
            break;
        case OPT_CHECK:
            cli->check_only = true;
            break;
        case OPT_LEVEL:
            if (kk_log_parse_level(optarg, &cli->level) < 0) {
                fprintf(stderr, "kubemq-kinesis: invalid --log-level %s (want debug, info, warn or error)\n",
                        optarg);
                return 2;
            }
            cli->level_set = true;
            break;
        case OPT_FORMAT:
            if (strcasecmp(optarg, "text") == 0) {
                cli->format = KK_LOG_TEXT;
            } else if (strcasecmp(optarg, "json") == 0) {
                cli->format = KK_LOG_JSON;
            } else {
                fprintf(stderr, "kubemq-kinesis: invalid --log-format %s (want text or json)\n", optarg);
                return 2;
            }
            cli->format_set = true;
            break;
        case OPT_VERSION:
            printf("kubemq-kinesis %s\n", kk_version());
            return 0;
        case 'h':
        case OPT_HELP:
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "kubemq-kinesis: unexpected argument %s\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (!have_c) {
        const char *env = getenv("CONFIG");
        cli->config_path = env && *env ? NULL : "config.yaml";
    }
    return -1; /* go on */
}

int main(int argc, char **argv)
{
    struct ctx c = {0};
    struct kk_config *cfg = NULL;
    struct kk_diag diag = {0};
    int code = parse_cli(argc, argv, &c.cli);
    if (code >= 0)
        return code;
    code = 1;

    /* Writes to a closed peer must fail with EPIPE, not kill the gateway. */
    signal(SIGPIPE, SIG_IGN);
    if (c.cli.level_set)
        kk_log_set_level(c.cli.level);
    if (c.cli.format_set)
        kk_log_set_format(c.cli.format);

    int rv = load_config(&c.cli, &cfg, &diag);
    for (size_t i = 0; i < diag.n_warnings; i++)
        fprintf(stderr, "warning: %s\n", diag.warnings[i]);
    for (size_t i = 0; i < diag.n_errors; i++)
        fprintf(stderr, "error: %s\n", diag.errors[i]);
    size_t n_errors = diag.n_errors;
    kk_diag_free(&diag);
    if (rv < 0) {
        fprintf(stderr, "kubemq-kinesis: invalid configuration (%zu error%s)\n", n_errors,
                n_errors == 1 ? "" : "s");
        return 1;
    }
    if (c.cli.check_only) {
        printf("config ok: %zu bindings\n", cfg->n_bindings);
        kk_config_free(cfg);
        return 0;
    }

    apply_logging(&c.cli, cfg);

    /* Watch the signals before anything starts, so an early SIGHUP/SIGTERM
     * is queued for the loop instead of killing the process; the callbacks
     * run only inside uv_run, after the app exists. */
    uv_loop_t *loop = uv_default_loop();
    uv_signal_t *sigs[] = {&c.sig_int, &c.sig_term, &c.sig_hup};
    for (size_t i = 0; i < 3; i++) {
        uv_signal_init(loop, sigs[i]);
        sigs[i]->data = &c;
    }
    uv_signal_start(&c.sig_int, on_stop_signal, SIGINT);
    uv_signal_start(&c.sig_term, on_stop_signal, SIGTERM);
    uv_signal_start(&c.sig_hup, on_reload_signal, SIGHUP);

    KK_INFO(SCOPE, "starting kubemq-kinesis version %s", kk_version());
    KK_INFO(SCOPE, "%zu bindings loaded", cfg->n_bindings);
    rv = kk_app_start(loop, cfg, &c.app);
    if (rv < 0) {
        KK_ERROR(SCOPE, "cannot start: %s", kk_strerror(rv));
        kk_config_free(cfg);
        for (size_t i = 0; i < 3; i++)
            uv_close((uv_handle_t *)sigs[i], on_closed);
        uv_run(loop, UV_RUN_DEFAULT);
        goto out;
    }
    cfg = NULL; /* owned by the app from here */

    uv_run(loop, UV_RUN_DEFAULT);
    code = 0;
out:
    rv = uv_loop_close(loop);
    if (rv != 0) {
        uv_walk(loop, on_walk, NULL);
        KK_ERROR(SCOPE, "event loop not empty at exit: %s", kk_strerror(rv));
        return 1;
    }
    return code;
}

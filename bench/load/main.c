/* kubemq-kinesis-load: load generator and fakes for benchmarking the
 * gateway.  Subcommands: broker (fake KubeMQ broker that drives the
 * gateway), kinesis (fake Kinesis endpoint), client (load a real broker). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kk/log.h"
#include "load.h"

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: kubemq-kinesis-load broker|kinesis|client [options]\n"
        "\n"
        "broker   a KubeMQ broker (h2c gRPC) for the gateway: once it subscribes, pushes requests\n"
        "         and times each one until the gateway's reply\n"
        "kinesis  a fake Kinesis endpoint (HTTP/1.1) with fault injection and SigV4 checks\n"
        "client   a KubeMQ client that loads a real broker at --address\n"
        "\n"
        "common:  --host H (bind, default 127.0.0.1) --port P (0 = ephemeral; the bound port is\n"
        "         printed as {\"port\":N} on the first stdout line) --port-file F --json FILE|-\n"
        "         --quiet --duration S\n"
        "broker/client:\n"
        "  --kind query|command|events|events-store|queue (default query)\n"
        "  --channel C (default query.aws.kinesis)  --method M (default put_record)\n"
        "  --stream NAME (default bench)  --payload-bytes N (default 100)  --partition-keys N (default 16)\n"
        "  --batch N (put_records: records per request, default 10)\n"
        "  --inflight N (closed loop, default 1)  --rate R (open loop, requests/s)\n"
        "  --requests N | --duration S (default 1000 requests)  --timeout-ms MS (default 30000)\n"
        "  --wait-subscribe S (broker, default 30)  --address HOST:PORT (client)\n"
        "  --warmup S (broker: load for S seconds first, not counted; then --duration S)\n"
        "  --pid P | --pid-file F (gateway: CPU seconds and peak RSS)  --histogram FILE  --plot FILE.png\n"
        "kinesis:\n"
        "  --latency-ms N|N:M  --throttle-rate p  --partial-failure-rate p  --error-rate p\n"
        "  --secret S [--access-key A] (verify SigV4; bad signatures get 403 and are counted)\n"
        "  --verify-every N (with --secret: verify 1 request in N, the first included; default all)\n"
        "  --tls CERT.pem (HTTPS: a fresh self-signed EC certificate for DNS:localhost, DNS:127.0.0.1 and\n"
        "         IP:127.0.0.1 is written to CERT.pem; trust it with tls_ca_file)\n"
        "\n"
        "\n"
        "Checks: query reply Response JSON with is_error false; command Executed; queue AckRange/AckAll\n"
        "(NAck counts as an error).  Events have no reply: counted once written, without latency.\n"
        "Open loop measures latency from the intended send time, so queueing is not hidden.\n"
        "\n"
        "Exit status: 0 all ok, 1 some requests failed, 2 usage, 3 no subscription/connection.\n");
}

enum {
    O_HOST = 256,
    O_PORT,
    O_PORT_FILE,
    O_JSON,
    O_QUIET,
    O_DURATION,
    O_KIND,
    O_CHANNEL,
    O_METHOD,
    O_STREAM,
    O_PAYLOAD,
    O_PKEYS,
    O_INFLIGHT,
    O_RATE,
    O_REQUESTS,
    O_TIMEOUT,
    O_WAIT_SUB,
    O_ADDRESS,
    O_PID,
    O_HIST,
    O_PLOT,
    O_LATENCY,
    O_THROTTLE,
    O_PARTIAL,
    O_ERROR,
    O_SECRET,
    O_AKID,
    O_HELP,
    O_PID_FILE,
    O_BATCH,
    O_TLS,
    O_WARMUP,
    O_VERIFY_EVERY,
};

static const struct option longopts[] = {
    {"host", 1, 0, O_HOST},
    {"port", 1, 0, O_PORT},
    {"port-file", 1, 0, O_PORT_FILE},
    {"json", 1, 0, O_JSON},
    {"quiet", 0, 0, O_QUIET},
    {"duration", 1, 0, O_DURATION},
    {"kind", 1, 0, O_KIND},
    {"channel", 1, 0, O_CHANNEL},
    {"method", 1, 0, O_METHOD},
    {"stream", 1, 0, O_STREAM},
    {"payload-bytes", 1, 0, O_PAYLOAD},
    {"partition-keys", 1, 0, O_PKEYS},
    {"inflight", 1, 0, O_INFLIGHT},
    {"rate", 1, 0, O_RATE},
    {"requests", 1, 0, O_REQUESTS},
    {"timeout-ms", 1, 0, O_TIMEOUT},
    {"wait-subscribe", 1, 0, O_WAIT_SUB},
    {"address", 1, 0, O_ADDRESS},
    {"pid", 1, 0, O_PID},
    {"histogram", 1, 0, O_HIST},
    {"plot", 1, 0, O_PLOT},
    {"latency-ms", 1, 0, O_LATENCY},
    {"throttle-rate", 1, 0, O_THROTTLE},
    {"partial-failure-rate", 1, 0, O_PARTIAL},
    {"error-rate", 1, 0, O_ERROR},
    {"secret", 1, 0, O_SECRET},
    {"access-key", 1, 0, O_AKID},
    {"help", 0, 0, O_HELP},
    {"pid-file", 1, 0, O_PID_FILE},
    {"batch", 1, 0, O_BATCH},
    {"tls", 1, 0, O_TLS},
    {"warmup", 1, 0, O_WARMUP},
    {"verify-every", 1, 0, O_VERIFY_EVERY},
    {0, 0, 0, 0},
};

static int num(const char *s, double lo, double hi, double *out)
{
    char *e;
    double v = strtod(s, &e);
    if (e == s || *e || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    struct load_opts o = {
        .host = "127.0.0.1",
        .channel = "query.aws.kinesis",
        .kind = "query",
        .method = "put_record",
        .stream = "bench",
        .payload_bytes = 100,
        .partition_keys = 16,
        .batch = 10,
        .inflight = 1,
        .timeout_ms = 30000,
        .wait_subscribe_s = 30,
    };
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    o.mode = argv[1];
    optind = 2;
    int ch;
    double v;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        int bad = 0;
        switch (ch) {
        case O_HOST:
            o.host = optarg;
            break;
        case O_PORT:
            bad = num(optarg, 0, 65535, &v);
            o.port = (uint16_t)v;
            break;
        case O_PORT_FILE:
            o.port_file = optarg;
            break;
        case O_JSON:
            o.json_path = optarg;
            break;
        case O_QUIET:
            o.quiet = true;
            break;
        case O_DURATION:
            bad = num(optarg, 0.001, 86400, &o.duration_s);
            break;
        case O_KIND:
            o.kind = optarg;
            break;
        case O_CHANNEL:
            o.channel = optarg;
            break;
        case O_METHOD:
            o.method = optarg;
            break;
        case O_STREAM:
            o.stream = optarg;
            break;
        case O_PAYLOAD:
            bad = num(optarg, 0, 8 << 20, &v);
            o.payload_bytes = (size_t)v;
            break;
        case O_PKEYS:
            bad = num(optarg, 1, 100000, &v);
            o.partition_keys = (uint32_t)v;
            break;
        case O_INFLIGHT:
            bad = num(optarg, 1, 60000, &v);
            o.inflight = (uint32_t)v;
            break;
        case O_RATE:
            bad = num(optarg, 0.001, 1e7, &o.rate);
            break;
        case O_REQUESTS:
            bad = num(optarg, 1, 1e12, &v);
            o.requests = (uint64_t)v;
            break;
        case O_TIMEOUT:
            bad = num(optarg, 1, 3600000, &v);
            o.timeout_ms = (uint32_t)v;
            break;
        case O_WAIT_SUB:
            bad = num(optarg, 0.1, 3600, &o.wait_subscribe_s);
            break;
        case O_ADDRESS:
            o.address = optarg;
            break;
        case O_PID:
            bad = num(optarg, 1, 1 << 30, &v);
            o.pid = (int)v;
            break;
        case O_PID_FILE:
            o.pid_file = optarg;
            break;
        case O_BATCH:
            bad = num(optarg, 1, 500, &v);
            o.batch = (uint32_t)v;
            break;
        case O_VERIFY_EVERY:
            bad = num(optarg, 1, 1e6, &v);
            o.verify_every = (uint32_t)v;
            break;
        case O_WARMUP:
            bad = num(optarg, 0, 3600, &o.warmup_s);
            break;
        case O_TLS:
            o.tls_cert = optarg;
            break;
        case O_HIST:
            o.hist_path = optarg;
            break;
        case O_PLOT:
            o.plot_path = optarg;
            break;
        case O_LATENCY: {
            unsigned a, b;
            char tail;
            int n = sscanf(optarg, "%u:%u%c", &a, &b, &tail);
            if (n == 2 && a <= b) {
                o.lat_min_ms = a;
                o.lat_max_ms = b;
            } else if (sscanf(optarg, "%u%c", &a, &tail) == 1) {
                o.lat_min_ms = o.lat_max_ms = a;
            } else {
                bad = 1;
            }
            break;
        }
        case O_THROTTLE:
            bad = num(optarg, 0, 1, &o.throttle_rate);
            break;
        case O_PARTIAL:
            bad = num(optarg, 0, 1, &o.partial_rate);
            break;
        case O_ERROR:
            bad = num(optarg, 0, 1, &o.error_rate);
            break;
        case O_SECRET:
            o.secret = optarg;
            break;
        case O_AKID:
            o.access_key = optarg;
            break;
        case O_HELP:
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "kubemq-kinesis-load: bad value for --%s: %s\n", longopts[ch - O_HOST].name,
                    optarg);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "kubemq-kinesis-load: unexpected argument %s\n", argv[optind]);
        return 2;
    }
    if (strcmp(o.mode, "broker") == 0)
        return run_broker(&o);
    if (strcmp(o.mode, "kinesis") == 0)
        return run_kinesis(&o);
    if (strcmp(o.mode, "client") == 0)
        return run_client(&o);
    fprintf(stderr, "kubemq-kinesis-load: unknown subcommand %s\n", o.mode);
    usage(stderr);
    return 2;
}

/* Unit tests of src/aws/creds.c and endpoint.c: the credentials chain and its
 * order (properties, env, shared file), profile selection, refresh, error
 * messages that never carry secrets, and endpoint/region resolution. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kk/aws.h"
#include "kk/config.h"
#include "kk/err.h"

static const char *env_names[] = {
    "AWS_ACCESS_KEY_ID",           "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_SHARED_CREDENTIALS_FILE", "AWS_PROFILE",           "AWS_REGION",
    "AWS_DEFAULT_REGION",          "AWS_ENDPOINT_URL",      "AWS_ENDPOINT_URL_KINESIS",
    "AWS_USE_FIPS_ENDPOINT"};

static char tmpdir[256];
static char credfile[300];

static int setup(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(env_names) / sizeof(env_names[0]); i++)
        unsetenv(env_names[i]);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/kk_test_aws_XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(credfile, sizeof(credfile), "%s/credentials", tmpdir);
    /* HOME points at an empty dir so a developer's ~/.aws never leaks in. */
    setenv("HOME", tmpdir, 1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char path[400];
    unlink(credfile);
    snprintf(path, sizeof(path), "%s/.aws/credentials", tmpdir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/.aws", tmpdir);
    rmdir(path);
    rmdir(tmpdir);
    return 0;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Props must be sorted by key (binary search). */
#define PROPS(...)                                                                                           \
    (struct kk_props)                                                                                        \
    {                                                                                                        \
        (const struct kk_prop[]){__VA_ARGS__},                                                               \
            sizeof((const struct kk_prop[]){__VA_ARGS__}) / sizeof(struct kk_prop)                           \
    }

static const struct kk_props no_props = {NULL, 0};

static const char *creds_file_text = "# comment\n"
                                     "[default]\n"
                                     "aws_access_key_id = AKIDDEFAULT\n"
                                     "aws_secret_access_key=secretdefault\n"
                                     "\n"
                                     "[other]\n"
                                     "  AWS_ACCESS_KEY_ID = AKIDOTHER  \n"
                                     "aws_secret_access_key = secretother\n"
                                     "aws_session_token = tokother\n"
                                     "[broken]\n"
                                     "aws_access_key_id = AKIDBROKEN\n";

static void test_chain_order(void **state)
{
    (void)state;
    struct kk_aws_provider *p;
    char err[1024];
    write_file(credfile, creds_file_text);
    setenv("AWS_SHARED_CREDENTIALS_FILE", credfile, 1);
    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "secretenv", 1);
    setenv("AWS_SESSION_TOKEN", "tokenv", 1);

    /* 1. properties beat env and file. */
    struct kk_props props = PROPS({"aws_key", "AKIDPROP", 0, 0}, {"aws_secret_key", "secretprop", 0, 0},
                                  {"token", "tokprop", 0, 0});
    assert_int_equal(kk_aws_provider_new(&props, &p, err, sizeof(err)), 0);
    assert_string_equal(kk_aws_provider_source(p), "config");
    const struct kk_aws_creds *c = kk_aws_creds_get(p);
    assert_string_equal(c->access_key, "AKIDPROP");
    assert_string_equal(c->secret_key, "secretprop");
    assert_string_equal(c->session_token, "tokprop");
    assert_int_equal(c->expires_ms, 0);
    assert_true(c->generation != 0);
    uint64_t g = c->generation;
    assert_int_equal(kk_aws_provider_refresh(p), 0);
    assert_int_equal(kk_aws_creds_get(p)->generation, g); /* unchanged values, same generation */
    kk_aws_provider_free(p);

    /* 2. env beats the file. */
    assert_int_equal(kk_aws_provider_new(&no_props, &p, err, sizeof(err)), 0);
    assert_string_equal(kk_aws_provider_source(p), "env");
    assert_string_equal(kk_aws_creds_get(p)->access_key, "AKIDENV");
    assert_string_equal(kk_aws_creds_get(p)->session_token, "tokenv");
    g = kk_aws_creds_get(p)->generation;
    /* Refresh re-reads env: new values, new generation. */
    setenv("AWS_SECRET_ACCESS_KEY", "secretenv2", 1);
    unsetenv("AWS_SESSION_TOKEN");
    assert_int_equal(kk_aws_provider_refresh(p), 0);
    assert_string_equal(kk_aws_creds_get(p)->secret_key, "secretenv2");
    assert_string_equal(kk_aws_creds_get(p)->session_token, "");
    assert_true(kk_aws_creds_get(p)->generation != g);
    /* A failed refresh keeps the old values. */
    unsetenv("AWS_SECRET_ACCESS_KEY");
    assert_int_equal(kk_aws_provider_refresh(p), KK_ECREDS);
    assert_string_equal(kk_aws_creds_get(p)->secret_key, "secretenv2");
    kk_aws_provider_free(p);
    unsetenv("AWS_ACCESS_KEY_ID");

    /* 3. the shared file, profile "default". */
    assert_int_equal(kk_aws_provider_new(&no_props, &p, err, sizeof(err)), 0);
    assert_string_equal(kk_aws_provider_source(p), "profile default");
    assert_string_equal(kk_aws_creds_get(p)->access_key, "AKIDDEFAULT");
    assert_string_equal(kk_aws_creds_get(p)->secret_key, "secretdefault");
    assert_string_equal(kk_aws_creds_get(p)->session_token, "");
    /* Refresh re-reads the file. */
    g = kk_aws_creds_get(p)->generation;
    write_file(credfile, "[default]\naws_access_key_id=AKIDNEW\naws_secret_access_key=secretnew\n");
    assert_int_equal(kk_aws_provider_refresh(p), 0);
    assert_string_equal(kk_aws_creds_get(p)->access_key, "AKIDNEW");
    assert_true(kk_aws_creds_get(p)->generation > g);
    kk_aws_provider_free(p);
}

static void test_profiles(void **state)
{
    (void)state;
    struct kk_aws_provider *p;
    char err[1024];
    write_file(credfile, creds_file_text);
    setenv("AWS_SHARED_CREDENTIALS_FILE", credfile, 1);

    /* AWS_PROFILE selects; the property beats it. */
    setenv("AWS_PROFILE", "other", 1);
    assert_int_equal(kk_aws_provider_new(&no_props, &p, err, sizeof(err)), 0);
    assert_string_equal(kk_aws_provider_source(p), "profile other");
    assert_string_equal(kk_aws_creds_get(p)->access_key, "AKIDOTHER");
    assert_string_equal(kk_aws_creds_get(p)->session_token, "tokother");
    kk_aws_provider_free(p);
    struct kk_props props = PROPS({"profile", "default", 0, 0});
    assert_int_equal(kk_aws_provider_new(&props, &p, err, sizeof(err)), 0);
    assert_string_equal(kk_aws_creds_get(p)->access_key, "AKIDDEFAULT");
    kk_aws_provider_free(p);

    /* Missing profile, incomplete profile. */
    setenv("AWS_PROFILE", "nope", 1);
    assert_int_equal(kk_aws_provider_new(&no_props, &p, err, sizeof(err)), KK_ECREDS);
    assert_null(p);
    assert_non_null(strstr(err, "profile [nope] not found"));
    setenv("AWS_PROFILE", "broken", 1);
    assert_int_equal(kk_aws_provider_new(&no_props, &p, err, sizeof(err)), KK_ECREDS);
    assert_non_null(strstr(err, "lacks aws_secret_access_key"));
    unsetenv("AWS_PROFILE");

    /* Without AWS_SHARED_CREDENTIALS_FILE: $HOME/.aws/credentials. */
    unsetenv("AWS_SHARED_CREDENTIALS_FILE");
    char path[400];
    snprintf(path, sizeof(path), "%s/.aws", tmpdir);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/.aws/credentials", tmpdir);
    write_file(path, "[default]\naws_access_key_id=AKIDHOME\naws_secret_access_key=secrethome\n");
    assert_int_equal(kk_aws_provider_new(&no_props, &p, err, sizeof(err)), 0);
    assert_string_equal(kk_aws_creds_get(p)->access_key, "AKIDHOME");
    kk_aws_provider_free(p);
    unlink(path);
}

static void test_missing(void **state)
{
    (void)state;
    struct kk_aws_provider *p;
    char err[1024];
    setenv("AWS_SHARED_CREDENTIALS_FILE", credfile, 1);
    unlink(credfile);

    /* Nothing anywhere: the message names every source tried. */
    assert_int_equal(kk_aws_provider_new(&no_props, &p, err, sizeof(err)), KK_ECREDS);
    assert_null(p);
    assert_non_null(strstr(err, "aws_key"));
    assert_non_null(strstr(err, "AWS_ACCESS_KEY_ID"));
    assert_non_null(strstr(err, credfile));

    /* A key without its secret, in properties and in env; no value leaks. */
    struct kk_props props = PROPS({"aws_key", "AKIDLONELY", 0, 0});
    assert_int_equal(kk_aws_provider_new(&props, &p, err, sizeof(err)), KK_ECREDS);
    assert_non_null(strstr(err, "aws_secret_key is missing"));
    assert_null(strstr(err, "AKIDLONELY"));
    struct kk_props props2 = PROPS({"aws_key", "", 0, 0}, {"aws_secret_key", "topsecret", 0, 0});
    assert_int_equal(kk_aws_provider_new(&props2, &p, err, sizeof(err)), KK_ECREDS);
    assert_null(strstr(err, "topsecret"));
    setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
    assert_int_equal(kk_aws_provider_new(&no_props, &p, err, sizeof(err)), KK_ECREDS);
    assert_non_null(strstr(err, "AWS_ACCESS_KEY_ID is missing"));
    assert_null(strstr(err, "envsecret"));
    unsetenv("AWS_SECRET_ACCESS_KEY");
}

static void expect_endpoint(const struct kk_props *props, const char *region, const char *host, unsigned port,
                            bool tls, const char *host_header)
{
    struct kk_aws_endpoint ep;
    char err[512];
    int rc = kk_aws_endpoint_resolve(props, &ep, err, sizeof(err));
    if (rc)
        fail_msg("resolve failed: %s", err);
    assert_string_equal(ep.region, region);
    assert_string_equal(ep.host, host);
    assert_int_equal(ep.port, port);
    assert_int_equal(ep.tls, tls);
    assert_string_equal(ep.host_header, host_header);
}

static void expect_endpoint_error(const struct kk_props *props, const char *needle)
{
    struct kk_aws_endpoint ep;
    char err[512];
    assert_int_equal(kk_aws_endpoint_resolve(props, &ep, err, sizeof(err)), KK_ECONFIG);
    if (!strstr(err, needle))
        fail_msg("error '%s' lacks '%s'", err, needle);
}

static void test_endpoints(void **state)
{
    (void)state;
    struct kk_props us = PROPS({"region", "us-east-1", 0, 0});
    expect_endpoint(&us, "us-east-1", "kinesis.us-east-1.amazonaws.com", 443, true,
                    "kinesis.us-east-1.amazonaws.com");
    struct kk_props cn = PROPS({"region", "cn-north-1", 0, 0});
    expect_endpoint(&cn, "cn-north-1", "kinesis.cn-north-1.amazonaws.com.cn", 443, true,
                    "kinesis.cn-north-1.amazonaws.com.cn");
    struct kk_props fips = PROPS({"region", "us-west-2", 0, 0}, {"use_fips", "true", 0, 0});
    expect_endpoint(&fips, "us-west-2", "kinesis-fips.us-west-2.amazonaws.com", 443, true,
                    "kinesis-fips.us-west-2.amazonaws.com");
    struct kk_props gov = PROPS({"region", "us-gov-west-1", 0, 0}, {"use_fips", "true", 0, 0});
    expect_endpoint(&gov, "us-gov-west-1", "kinesis.us-gov-west-1.amazonaws.com", 443, true,
                    "kinesis.us-gov-west-1.amazonaws.com");
    setenv("AWS_USE_FIPS_ENDPOINT", "true", 1);
    expect_endpoint(&us, "us-east-1", "kinesis-fips.us-east-1.amazonaws.com", 443, true,
                    "kinesis-fips.us-east-1.amazonaws.com");
    unsetenv("AWS_USE_FIPS_ENDPOINT");

    /* Region from env: AWS_REGION beats AWS_DEFAULT_REGION; property beats both. */
    setenv("AWS_DEFAULT_REGION", "eu-west-1", 1);
    expect_endpoint(&no_props, "eu-west-1", "kinesis.eu-west-1.amazonaws.com", 443, true,
                    "kinesis.eu-west-1.amazonaws.com");
    setenv("AWS_REGION", "eu-central-1", 1);
    expect_endpoint(&no_props, "eu-central-1", "kinesis.eu-central-1.amazonaws.com", 443, true,
                    "kinesis.eu-central-1.amazonaws.com");
    expect_endpoint(&us, "us-east-1", "kinesis.us-east-1.amazonaws.com", 443, true,
                    "kinesis.us-east-1.amazonaws.com");

    /* Endpoint overrides: property > AWS_ENDPOINT_URL_KINESIS > AWS_ENDPOINT_URL. */
    setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4567", 1);
    expect_endpoint(&us, "us-east-1", "127.0.0.1", 4567, false, "127.0.0.1:4567");
    setenv("AWS_ENDPOINT_URL_KINESIS", "https://localhost:8443/", 1);
    expect_endpoint(&us, "us-east-1", "localhost", 8443, true, "localhost:8443");
    struct kk_props prop_ep = PROPS({"endpoint", "http://[::1]:4568", 0, 0}, {"region", "us-east-1", 0, 0});
    expect_endpoint(&prop_ep, "us-east-1", "::1", 4568, false, "[::1]:4568");
    unsetenv("AWS_ENDPOINT_URL_KINESIS");
    unsetenv("AWS_ENDPOINT_URL");
    struct kk_props def_port =
        PROPS({"endpoint", "HTTPS://kinesis.example.com:443", 0, 0}, {"region", "us-east-1", 0, 0});
    expect_endpoint(&def_port, "us-east-1", "kinesis.example.com", 443, true, "kinesis.example.com");
    struct kk_props http80 = PROPS({"endpoint", "http://local", 0, 0}, {"region", "us-east-1", 0, 0});
    expect_endpoint(&http80, "us-east-1", "local", 80, false, "local");
    unsetenv("AWS_REGION");
    unsetenv("AWS_DEFAULT_REGION");
}

static void test_endpoint_errors(void **state)
{
    (void)state;
    expect_endpoint_error(&no_props, "no AWS region");
    struct kk_props bad_region = PROPS({"region", "us-east-1\r\nX: y", 0, 0});
    expect_endpoint_error(&bad_region, "invalid AWS region");
    const char *bad[][2] = {
        {"ftp://host", "http:// or https://"}, {"host:4567", "http:// or https://"},
        {"http://host/path", "no path"},       {"http://host:4567/x", "no path"},
        {"http://host?x=1", "no path"},        {"http://user@host", "no path"},
        {"http://host:0", "invalid port"},     {"http://host:65536", "invalid port"},
        {"http://host:", "invalid port"},      {"http://", "invalid host"},
        {"http://[::1", "invalid host"},       {"http://[zz]", "invalid host"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct kk_props p = PROPS({"endpoint", bad[i][0], 0, 0}, {"region", "us-east-1", 0, 0});
        expect_endpoint_error(&p, bad[i][1]);
    }
    setenv("AWS_ENDPOINT_URL", "http://h/p", 1);
    struct kk_props us = PROPS({"region", "us-east-1", 0, 0});
    expect_endpoint_error(&us, "AWS_ENDPOINT_URL");
    unsetenv("AWS_ENDPOINT_URL");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_chain_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_profiles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_endpoints, setup, teardown),
        cmocka_unit_test_setup_teardown(test_endpoint_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

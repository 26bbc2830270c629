/* Unit tests of src/aws/sigv4.c against the AWS SigV4 test-suite cases in
 * $KK_SHARED_DIR/testdata/sigv4/ (read at run time), the Kinesis vectors of
 * kinesis-vectors.md, the signing-key check values and the key cache. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kk/aws.h"
#include "kk/buf.h"
#include "kk/err.h"

static const char *shared_dir(void)
{
    const char *d = getenv("KK_SHARED_DIR");
    return d && *d ? d : "../shared";
}

static char *read_whole(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        fclose(f);
        return NULL;
    }
    s[n] = '\0';
    fclose(f);
    if (len)
        *len = (size_t)n;
    return s;
}

static char *read_case_file(const char *dir, const char *name)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    char *s = read_whole(path, NULL);
    if (!s)
        fail_msg("cannot read %s", path);
    return s;
}

static void expect_buf(const struct kk_buf *b, const char *want, const char *what, const char *casename)
{
    if (b->len != strlen(want) || memcmp(b->base, want, b->len) != 0)
        fail_msg("%s: %s differs\n--- got\n%.*s\n--- want\n%s", casename, what, (int)b->len, b->base, want);
}

#define MAX_H 32

/* One suite case: parse request.txt + context.json, sign, compare. */
static void run_case(const char *dir, const char *casename)
{
    char *req = read_case_file(dir, "request.txt");
    char *ctx_text = read_case_file(dir, "context.json");
    char *want_creq = read_case_file(dir, "header-canonical-request.txt");
    char *want_sts = read_case_file(dir, "header-string-to-sign.txt");
    char *want_sig = read_case_file(dir, "header-signature.txt");
    char *want_signed = read_case_file(dir, "header-signed-request.txt");

    cJSON *ctx = cJSON_Parse(ctx_text);
    assert_non_null(ctx);
    cJSON *cr = cJSON_GetObjectItem(ctx, "credentials");
    struct kk_aws_creds creds;
    memset(&creds, 0, sizeof(creds));
    snprintf(creds.access_key, sizeof(creds.access_key), "%s",
             cJSON_GetStringValue(cJSON_GetObjectItem(cr, "access_key_id")));
    snprintf(creds.secret_key, sizeof(creds.secret_key), "%s",
             cJSON_GetStringValue(cJSON_GetObjectItem(cr, "secret_access_key")));
    const char *tok = cJSON_GetStringValue(cJSON_GetObjectItem(cr, "token"));
    creds.generation = 1;
    bool sign_body = cJSON_IsTrue(cJSON_GetObjectItem(ctx, "sign_body"));
    bool omit_token = cJSON_IsTrue(cJSON_GetObjectItem(ctx, "omit_session_token"));
    const char *ts = cJSON_GetStringValue(cJSON_GetObjectItem(ctx, "timestamp"));
    assert_non_null(ts);
    /* 2015-08-30T12:36:00Z -> 20150830T123600Z */
    char amz_date[17];
    snprintf(amz_date, sizeof(amz_date), "%.4s%.2s%.2sT%.2s%.2s%.2sZ", ts, ts + 5, ts + 8, ts + 11, ts + 14,
             ts + 17);

    /* request.txt: "METHOD target HTTP/1.1", headers, [blank line, body]. */
    struct kk_sigv4_header h[MAX_H];
    size_t nh = 0;
    char *save = NULL, *body = "";
    char *line_end = strchr(req, '\n');
    assert_non_null(line_end);
    *line_end = '\0';
    char *method = strtok_r(req, " ", &save);
    char *target = strtok_r(NULL, " ", &save);
    assert_non_null(method);
    assert_non_null(target);
    char *query = strchr(target, '?');
    if (query)
        *query++ = '\0';
    else
        query = "";
    char *p = line_end + 1;
    /* Folded lines are merged into the previous value by replacing the line
     * break with a space; the signer collapses the whitespace run. */
    while (*p) {
        char *e = strchr(p, '\n');
        if (e == p) { /* blank line: the body follows */
            body = p + 1;
            break;
        }
        if (e)
            *e = '\0';
        if ((*p == ' ' || *p == '\t') && nh > 0) {
            p[-1] = ' '; /* join with the previous line (its NUL) */
        } else {
            char *colon = strchr(p, ':');
            assert_non_null(colon);
            *colon = '\0';
            assert_true(nh < MAX_H);
            h[nh].name = p;
            h[nh].value = colon + 1;
            nh++;
        }
        if (!e)
            break;
        p = e + 1;
    }
    char body_hash[65];
    kk_sha256_hex(body, strlen(body), body_hash);
    h[nh++] = (struct kk_sigv4_header){"X-Amz-Date", amz_date};
    if (tok && !omit_token)
        h[nh++] = (struct kk_sigv4_header){"X-Amz-Security-Token", tok};
    if (sign_body)
        h[nh++] = (struct kk_sigv4_header){"x-amz-content-sha256", body_hash};

    struct kk_sigv4 s;
    kk_sigv4_init(&s, cJSON_GetStringValue(cJSON_GetObjectItem(ctx, "region")),
                  cJSON_GetStringValue(cJSON_GetObjectItem(ctx, "service")));
    struct kk_buf creq, sts, auth;
    kk_buf_init(&creq, 1 << 16);
    kk_buf_init(&sts, 1 << 12);
    kk_buf_init(&auth, 1 << 12);
    char sig[65];
    assert_int_equal(
        kk_sigv4_sign(&s, &creds, amz_date, method, target, query, h, nh, body_hash, &creq, &sts, sig, &auth),
        0);
    expect_buf(&creq, want_creq, "canonical request", casename);
    expect_buf(&sts, want_sts, "string to sign", casename);
    if (strcmp(sig, want_sig) != 0)
        fail_msg("%s: signature %s, want %s", casename, sig, want_sig);
    /* The Authorization line of the signed request, byte for byte. */
    char *al = strstr(want_signed, "\nAuthorization:");
    assert_non_null(al);
    al += strlen("\nAuthorization:");
    *strchr(al, '\n') = '\0';
    expect_buf(&auth, al, "Authorization", casename);
    assert_int_equal(s.derivations, 1);

    kk_buf_free(&creq);
    kk_buf_free(&sts);
    kk_buf_free(&auth);
    cJSON_Delete(ctx);
    free(req);
    free(ctx_text);
    free(want_creq);
    free(want_sts);
    free(want_sig);
    free(want_signed);
}

static void test_suite_cases(void **state)
{
    (void)state;
    char root[1024], dir[1300];
    snprintf(root, sizeof(root), "%s/testdata/sigv4", shared_dir());
    DIR *d = opendir(root);
    if (!d)
        fail_msg("SigV4 test vectors missing: %s (set KK_SHARED_DIR)", root);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        struct stat st;
        if (e->d_name[0] == '.')
            continue;
        snprintf(dir, sizeof(dir), "%s/%s", root, e->d_name);
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
            continue;
        run_case(dir, e->d_name);
        n++;
    }
    closedir(d);
    if (n < 14)
        fail_msg("only %d suite cases found in %s, want 14", n, root);
}

/* ---- Kinesis vectors (kinesis-vectors.md) ---------------------------------- */

static const char *k_body =
    "{\"StreamName\":\"test\",\"Records\":[{\"Data\":\"aGVsbG8=\",\"PartitionKey\":\"pk1\"}]}";
static const char *k_host = "kinesis.us-east-1.amazonaws.com";
static const char *k_target = "Kinesis_20131202.PutRecords";
static const int64_t k_now = 1440938160; /* 2015-08-30T12:36:00Z */

static void example_creds(struct kk_aws_creds *c, const char *token)
{
    memset(c, 0, sizeof(*c));
    strcpy(c->access_key, "AKIDEXAMPLE");
    strcpy(c->secret_key, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
    strcpy(c->session_token, token);
    c->generation = 7;
}

static void test_sha256(void **state)
{
    (void)state;
    char hex[65];
    kk_sha256_hex(k_body, strlen(k_body), hex);
    assert_int_equal(strlen(k_body), 74);
    assert_string_equal(hex, "9fd8d5785a460e38ef2671e11812ee433b048287190728c12c59e7c81f509e02");
    kk_sha256_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void hex32(const uint8_t *k, char out[65])
{
    for (int i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", k[i]);
}

static void test_signing_key_values(void **state)
{
    (void)state;
    struct kk_aws_creds c;
    example_creds(&c, "");
    struct kk_sigv4 s;
    char hex[65], sig[65];
    struct kk_sigv4_header h[] = {{"host", "iam.amazonaws.com"}, {"x-amz-date", "20150830T123600Z"}};
    const char *sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    kk_sigv4_init(&s, "us-east-1", "kinesis");
    assert_int_equal(
        kk_sigv4_sign(&s, &c, "20150830T123600Z", "POST", "/", "", h, 2, sha, NULL, NULL, sig, NULL), 0);
    hex32(s.key, hex);
    assert_string_equal(hex, "1a8ef0fa45f4fb9b8ca6c755f0b81c00b521d0e7b9564a363d2511b8f4d4bc54");
    kk_sigv4_init(&s, "us-east-1", "iam");
    assert_int_equal(
        kk_sigv4_sign(&s, &c, "20150830T123600Z", "POST", "/", "", h, 2, sha, NULL, NULL, sig, NULL), 0);
    hex32(s.key, hex);
    assert_string_equal(hex, "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9");
}

static void test_kinesis_variants(void **state)
{
    (void)state;
    struct kk_aws_creds c;
    struct kk_sigv4 s;
    char body_sha[65], sig[65], cl[16];
    struct kk_buf creq, sts;
    kk_buf_init(&creq, 4096);
    kk_buf_init(&sts, 4096);
    kk_sha256_hex(k_body, strlen(k_body), body_sha);
    snprintf(cl, sizeof(cl), "%zu", strlen(k_body));
    kk_sigv4_init(&s, "us-east-1", "kinesis");

    /* Variant A: headers deliberately out of order and in mixed case. */
    example_creds(&c, "");
    struct kk_sigv4_header a[] = {{"X-Amz-Target", k_target},
                                  {"Host", k_host},
                                  {"X-Amz-Date", "20150830T123600Z"},
                                  {"Content-Type", "application/x-amz-json-1.1"}};
    assert_int_equal(
        kk_sigv4_sign(&s, &c, "20150830T123600Z", "POST", "/", "", a, 4, body_sha, &creq, &sts, sig, NULL),
        0);
    expect_buf(&creq,
               "POST\n/\n\ncontent-type:application/x-amz-json-1.1\nhost:kinesis.us-east-1.amazonaws.com\n"
               "x-amz-date:20150830T123600Z\nx-amz-target:Kinesis_20131202.PutRecords\n\n"
               "content-type;host;x-amz-date;x-amz-target\n"
               "9fd8d5785a460e38ef2671e11812ee433b048287190728c12c59e7c81f509e02",
               "canonical request", "kinesis A");
    expect_buf(&sts,
               "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/kinesis/aws4_request\n"
               "feea0aa3982aa725dd5331cbde1bad6db0dd48ae4bc7087af8b6d884feacd960",
               "string to sign", "kinesis A");
    assert_string_equal(sig, "7a42be7acb619655cedbf22aa8fd9e496763531b56e19c182fa9b3ca70457a0e");

    /* Variant B: with a session token. */
    example_creds(&c, "SESSIONTOKENEXAMPLE");
    kk_buf_reset(&sts);
    struct kk_sigv4_header b[] = {{"Content-Type", "application/x-amz-json-1.1"},
                                  {"Host", k_host},
                                  {"X-Amz-Date", "20150830T123600Z"},
                                  {"X-Amz-Security-Token", "SESSIONTOKENEXAMPLE"},
                                  {"X-Amz-Target", k_target}};
    assert_int_equal(
        kk_sigv4_sign(&s, &c, "20150830T123600Z", "POST", "/", "", b, 5, body_sha, NULL, &sts, sig, NULL), 0);
    assert_string_equal(sig, "c0254ad45d0b7a6e22885cb62ec5275da8508a3a061aa53fe24325b428f53f6b");
    assert_non_null(strstr(sts.base, "2804a473dbce9b033bc9cab252128ab98947c250bbf831eb8101df04b4a3cbc8"));

    /* Variant C: aws4's default set adds content-length. */
    example_creds(&c, "");
    kk_buf_reset(&sts);
    struct kk_sigv4_header cc[] = {{"Content-Type", "application/x-amz-json-1.1"},
                                   {"Host", k_host},
                                   {"Content-Length", cl},
                                   {"X-Amz-Date", "20150830T123600Z"},
                                   {"X-Amz-Target", k_target}};
    assert_int_equal(
        kk_sigv4_sign(&s, &c, "20150830T123600Z", "POST", "/", "", cc, 5, body_sha, NULL, &sts, sig, NULL),
        0);
    assert_string_equal(sig, "7f087412234053afd335516af1ba87da948ac6fc0f1221a54c4349afc43cb7f4");
    assert_non_null(strstr(sts.base, "1323339c57c9b158be3af2f599d819ccc06a14aca624e4112ea98cf63399268d"));
    kk_buf_free(&creq);
    kk_buf_free(&sts);
}

static void test_kinesis_head(void **state)
{
    (void)state;
    struct kk_aws_creds c;
    struct kk_sigv4 s;
    char body_sha[65];
    struct kk_buf head;
    kk_buf_init(&head, 8192);
    kk_sha256_hex(k_body, strlen(k_body), body_sha);
    kk_sigv4_init(&s, "us-east-1", "kinesis");

    example_creds(&c, "");
    assert_int_equal(kk_sigv4_kinesis_head(&s, &c, k_host, k_target, body_sha, 74, k_now, &head), 0);
    expect_buf(
        &head,
        "POST / HTTP/1.1\r\nHost: kinesis.us-east-1.amazonaws.com\r\n"
        "Content-Type: application/x-amz-json-1.1\r\nX-Amz-Target: Kinesis_20131202.PutRecords\r\n"
        "X-Amz-Date: 20150830T123600Z\r\nContent-Length: 74\r\n"
        "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/kinesis/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date;x-amz-target, "
        "Signature=7a42be7acb619655cedbf22aa8fd9e496763531b56e19c182fa9b3ca70457a0e\r\n\r\n",
        "head A", "kinesis head");

    example_creds(&c, "SESSIONTOKENEXAMPLE");
    kk_buf_reset(&head);
    assert_int_equal(kk_sigv4_kinesis_head(&s, &c, k_host, k_target, body_sha, 74, k_now, &head), 0);
    expect_buf(
        &head,
        "POST / HTTP/1.1\r\nHost: kinesis.us-east-1.amazonaws.com\r\n"
        "Content-Type: application/x-amz-json-1.1\r\nX-Amz-Target: Kinesis_20131202.PutRecords\r\n"
        "X-Amz-Date: 20150830T123600Z\r\nX-Amz-Security-Token: SESSIONTOKENEXAMPLE\r\nContent-Length: 74\r\n"
        "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/kinesis/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, "
        "Signature=c0254ad45d0b7a6e22885cb62ec5275da8508a3a061aa53fe24325b428f53f6b\r\n\r\n",
        "head B", "kinesis head");

    /* Header injection is refused; a too-small buffer fails cleanly. */
    kk_buf_reset(&head);
    assert_int_equal(kk_sigv4_kinesis_head(&s, &c, "h\r\nX-Evil: 1", k_target, body_sha, 74, k_now, &head),
                     KK_EINVAL);
    assert_int_equal(head.len, 0);
    struct kk_buf small;
    kk_buf_init(&small, 200);
    assert_int_equal(kk_sigv4_kinesis_head(&s, &c, k_host, k_target, body_sha, 74, k_now, &small),
                     KK_ETOOBIG);
    assert_int_equal(small.len, 0);
    kk_buf_free(&small);
    /* Appends after what is already in the buffer. */
    kk_buf_append_str(&head, "prefix");
    assert_int_equal(kk_sigv4_kinesis_head(&s, &c, k_host, k_target, body_sha, 74, k_now, &head), 0);
    assert_memory_equal(head.base, "prefixPOST / HTTP/1.1\r\n", 23);
    kk_buf_free(&head);
}

static void test_key_cache(void **state)
{
    (void)state;
    struct kk_aws_creds c;
    struct kk_sigv4 s;
    struct kk_buf head;
    char sha[65];
    kk_buf_init(&head, 8192);
    kk_sha256_hex("", 0, sha);
    example_creds(&c, "");
    kk_sigv4_init(&s, "us-east-1", "kinesis");
    assert_int_equal(s.derivations, 0);
    assert_int_equal(kk_sigv4_kinesis_head(&s, &c, k_host, k_target, sha, 0, k_now, &head), 0);
    assert_int_equal(s.derivations, 1);
    /* Same UTC day, hours later: cached. */
    assert_int_equal(kk_sigv4_kinesis_head(&s, &c, k_host, k_target, sha, 0, k_now + 11 * 3600, &head), 0);
    assert_int_equal(s.derivations, 1);
    /* Next day: one new derivation, then cached again. */
    assert_int_equal(kk_sigv4_kinesis_head(&s, &c, k_host, k_target, sha, 0, k_now + 12 * 3600, &head), 0);
    assert_int_equal(s.derivations, 2);
    assert_string_equal(s.date, "20150831");
    assert_int_equal(kk_sigv4_kinesis_head(&s, &c, k_host, k_target, sha, 0, k_now + 13 * 3600, &head), 0);
    assert_int_equal(s.derivations, 2);
    /* New credentials generation: one derivation, and the key really changes. */
    uint8_t old[32];
    memcpy(old, s.key, 32);
    c.generation++;
    strcpy(c.secret_key, "another-secret");
    assert_int_equal(kk_sigv4_kinesis_head(&s, &c, k_host, k_target, sha, 0, k_now + 13 * 3600, &head), 0);
    assert_int_equal(s.derivations, 3);
    assert_memory_not_equal(old, s.key, 32);
    assert_int_equal(kk_sigv4_kinesis_head(&s, &c, k_host, k_target, sha, 0, k_now + 13 * 3600, &head), 0);
    assert_int_equal(s.derivations, 3);
    kk_buf_free(&head);
}

static void test_header_rules(void **state)
{
    (void)state;
    /* Trimming, inner runs (tabs, folded line breaks) and duplicates in order. */
    struct kk_aws_creds c;
    struct kk_sigv4 s;
    struct kk_buf creq;
    char sig[65];
    example_creds(&c, "");
    kk_sigv4_init(&s, "us-east-1", "service");
    kk_buf_init(&creq, 4096);
    struct kk_sigv4_header h[] = {
        {"X-B", "  two\t\t words  "},       {"host", "h"}, {"x-b", "second"}, {"X-A", "line1\n   line2"},
        {"x-amz-date", "20150830T123600Z"}, {"X-B", ""}};
    assert_int_equal(
        kk_sigv4_sign(&s, &c, "20150830T123600Z", "GET", "/", "", h, 6, "x", &creq, NULL, sig, NULL), 0);
    expect_buf(&creq,
               "GET\n/\n\nhost:h\nx-a:line1 line2\nx-amz-date:20150830T123600Z\nx-b:two words,second,\n\n"
               "host;x-a;x-amz-date;x-b\nx",
               "canonical request", "rules");
    kk_buf_free(&creq);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_suite_cases),        cmocka_unit_test(test_sha256),
        cmocka_unit_test(test_signing_key_values), cmocka_unit_test(test_kinesis_variants),
        cmocka_unit_test(test_kinesis_head),       cmocka_unit_test(test_key_cache),
        cmocka_unit_test(test_header_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

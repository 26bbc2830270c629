/* sigv4_tool: signs Kinesis request heads with kk_sigv4_kinesis_head for the
 * aws4 cross-check (tests/integration/sigv4_aws4.test.mjs).
 *
 * stdin, one case per line, tab-separated:
 *   access_key secret_key session_token("" for none) region host_header
 *   x_amz_target epoch_seconds body_base64
 * stdout, one line per case: base64 of the complete signed request head, or
 * "ERR <code name>". */
#include "kk/aws.h"
#include "kk/b64.h"
#include "kk/buf.h"
#include "kk/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NFIELDS 8

int main(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    struct kk_buf head;
    int rc = 0;

    kk_buf_init(&head, 64 * 1024);
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        char *f[NFIELDS], *p = line, sha[65];
        int i;
        if (n > 0 && line[n - 1] == '\n')
            line[--n] = '\0';
        for (i = 0; i < NFIELDS; i++) {
            f[i] = p;
            p = strchr(p, '\t');
            if (!p)
                break;
            *p++ = '\0';
        }
        if (i != NFIELDS - 1) {
            fprintf(stderr, "sigv4_tool: want %d tab-separated fields\n", NFIELDS);
            rc = 2;
            break;
        }
        size_t blen = strlen(f[7]);
        uint8_t *body = malloc(kk_b64_decoded_max(blen) + 1);
        long bl = blen ? kk_b64_decode(body, f[7], blen) : 0;
        if (!body || bl < 0) {
            fprintf(stderr, "sigv4_tool: bad body base64\n");
            free(body);
            rc = 2;
            break;
        }
        kk_sha256_hex(body, (size_t)bl, sha);
        free(body);

        struct kk_aws_creds creds;
        struct kk_sigv4 s;
        memset(&creds, 0, sizeof(creds));
        snprintf(creds.access_key, sizeof(creds.access_key), "%s", f[0]);
        snprintf(creds.secret_key, sizeof(creds.secret_key), "%s", f[1]);
        snprintf(creds.session_token, sizeof(creds.session_token), "%s", f[2]);
        creds.generation = 1;
        kk_sigv4_init(&s, f[3], "kinesis");
        kk_buf_reset(&head);
        int r =
            kk_sigv4_kinesis_head(&s, &creds, f[4], f[5], sha, (size_t)bl, strtoll(f[6], NULL, 10), &head);
        if (r) {
            printf("ERR %s\n", kk_errname(r));
            continue;
        }
        char *out = malloc(kk_b64_encoded_len(head.len) + 1);
        if (!out) {
            rc = 1;
            break;
        }
        size_t ol = kk_b64_encode(out, (const uint8_t *)head.base, head.len);
        out[ol] = '\0';
        printf("%s\n", out);
        free(out);
    }
    fflush(stdout);
    free(line);
    kk_buf_free(&head);
    return rc;
}

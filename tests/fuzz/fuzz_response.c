/* Fuzz target: Response JSON (kk_response_json, kk_json_string).
 *
 * Input layout: byte 0 flags (bit 0 is_error, bit 1 data present), byte 1
 * data length (capped by what is left), the data bytes, then NUL-separated
 * strings: error, key1, value1, key2, value2, ...
 * Invariants: the output is one JSON object that cJSON parses to exactly
 * {metadata, data, is_error, error}; it holds no raw control character, no
 * raw < > & and only valid UTF-8 (Go's escaping); kk_request_parse reads it
 * back to the same data and, when the strings were valid UTF-8 with unique
 * keys, to the same metadata; cJSON sees the same error text; and
 * kk_json_string of any bytes is one JSON string. */
#include <cjson/cJSON.h>
#include <string.h>

#include "fuzz.h"
#include "kk/b64.h"
#include "kk/buf.h"
#include "kk/request.h"

#define MAX_KV 64

static int cmp_kv(const void *a, const void *b)
{
    return strcmp(((const struct kk_kv *)a)->key, ((const struct kk_kv *)b)->key);
}

static void check_go_escaped(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        FZ_CHECK(c >= 0x20 && c != '<' && c != '>' && c != '&');
        /* U+2028 / U+2029 are escaped by Go as well */
        FZ_CHECK(!(c == 0xE2 && i + 2 < n && (unsigned char)s[i + 1] == 0x80 &&
                   ((unsigned char)s[i + 2] == 0xA8 || (unsigned char)s[i + 2] == 0xA9)));
    }
    FZ_CHECK(fz_valid_utf8(s, n));
}

int kk_fuzz_response(const uint8_t *data, size_t size)
{
    struct kk_kv kv[MAX_KV];
    size_t n_kv = 0, dlen = 0;
    const uint8_t *payload = NULL;
    const char *error = "";
    bool is_error = false, exact = true;
    char *text = NULL;
    struct kk_buf out, js;
    struct kk_request back;
    char err[256];

    if (size < 2)
        return 0;
    is_error = data[0] & 1;
    dlen = data[1] < size - 2 ? data[1] : size - 2;
    if (data[0] & 2)
        payload = data + 2;
    /* strings: a NUL-terminated copy of the rest */
    size_t rest = size - 2 - dlen;
    text = malloc(rest + 1);
    FZ_CHECK(text);
    memcpy(text, data + 2 + dlen, rest);
    text[rest] = '\0';
    const char *fields[1 + 2 * MAX_KV];
    size_t n_fields = 0;
    for (char *p = text; p <= text + rest && n_fields < 1 + 2 * MAX_KV; p += strlen(p) + 1)
        fields[n_fields++] = p;
    if (n_fields > 0)
        error = fields[0];
    for (size_t i = 1; i + 1 < n_fields; i += 2) {
        kv[n_kv].key = fields[i];
        kv[n_kv].value = fields[i + 1];
        n_kv++;
    }
    exact = fz_valid_utf8(error, strlen(error));
    for (size_t i = 0; i < n_kv; i++)
        for (size_t j = 0; j < n_kv; j++)
            if ((i != j && strcmp(kv[i].key, kv[j].key) == 0) ||
                !fz_valid_utf8(kv[i].key, strlen(kv[i].key)) ||
                !fz_valid_utf8(kv[i].value, strlen(kv[i].value)))
                exact = false;

    kk_buf_init(&out, (size_t)1 << 24);
    FZ_CHECK(kk_response_json(&out, kv, n_kv, payload, dlen, is_error, error) == 0);
    check_go_escaped(out.base, out.len);

    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(out.base, out.len, &end, 0);
    FZ_CHECK(cJSON_IsObject(root) && end == out.base + out.len);
    const cJSON *c = root->child;
    FZ_CHECK(c && strcmp(c->string, "metadata") == 0 && cJSON_IsObject(c));
    const cJSON *md = c;
    c = c->next;
    FZ_CHECK(c && strcmp(c->string, "data") == 0 && (payload ? cJSON_IsString(c) : cJSON_IsNull(c)));
    if (payload)
        FZ_CHECK(strlen(c->valuestring) == kk_b64_encoded_len(dlen));
    c = c->next;
    FZ_CHECK(c && strcmp(c->string, "is_error") == 0 && (is_error ? cJSON_IsTrue(c) : cJSON_IsFalse(c)));
    c = c->next;
    FZ_CHECK(c && strcmp(c->string, "error") == 0 && cJSON_IsString(c));
    if (exact)
        FZ_CHECK(strcmp(c->valuestring, error) == 0);
    FZ_CHECK(c->next == NULL);
    FZ_CHECK((size_t)cJSON_GetArraySize(md) == n_kv);

    FZ_CHECK(kk_request_parse(&back, out.base, out.len, err, sizeof(err)) == 0);
    FZ_CHECK((back.data != NULL) == (payload != NULL));
    FZ_CHECK(back.data_len == (payload ? dlen : 0));
    FZ_CHECK(dlen == 0 || !payload || memcmp(back.data, payload, dlen) == 0);
    if (exact) {
        qsort(kv, n_kv, sizeof(kv[0]), cmp_kv);
        FZ_CHECK(back.n_md == n_kv);
        for (size_t i = 0; i < n_kv; i++) {
            FZ_CHECK(strcmp(back.md[i].key, kv[i].key) == 0);
            FZ_CHECK(strcmp(back.md[i].value, kv[i].value) == 0);
        }
    }
    kk_request_free(&back);
    cJSON_Delete(root);

    /* Any bytes (NULs included) make exactly one JSON string. */
    kk_buf_init(&js, (size_t)1 << 24);
    FZ_CHECK(kk_json_string(&js, (const char *)data, size) == 0);
    check_go_escaped(js.base, js.len);
    FZ_CHECK(js.len >= 2 && js.base[0] == '"' && js.base[js.len - 1] == '"');
    cJSON *s = cJSON_ParseWithLengthOpts(js.base, js.len, &end, 0);
    FZ_CHECK(cJSON_IsString(s) && end == js.base + js.len);
    if (fz_valid_utf8(data, size) && !memchr(data, 0, size))
        FZ_CHECK(strlen(s->valuestring) == size && memcmp(s->valuestring, data, size) == 0);
    cJSON_Delete(s);

    kk_buf_free(&js);
    kk_buf_free(&out);
    free(text);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return kk_fuzz_response(data, size);
}

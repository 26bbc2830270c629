/* Fuzz target: the config loader (kk_config_load_string, include/kk/config.h).
 *
 * Input: the YAML (or JSON) text.  Invariants: success gives a config and no
 * error, failure gives KK_ECONFIG, no config and at least one error; every
 * message is "fuzz.yaml:<line>:<col>: ..."; property arrays are strictly
 * sorted by lowercased key with non-NULL values and kk_props_get finds each
 * one; kinds are in range; kk_config_binding finds every binding by name;
 * loading the same text again gives the same bindings (same hashes); and a
 * secret value that occurs once in the text never appears in a message. */
#include <ctype.h>
#include <string.h>

#include "fuzz.h"
#include "kk/config.h"
#include "kk/err.h"

static void check_props(const struct kk_props *p)
{
    for (size_t i = 0; i < p->n; i++) {
        const struct kk_prop *e = &p->v[i];
        FZ_CHECK(e->key && e->value);
        for (const char *k = e->key; *k; k++)
            FZ_CHECK(!isupper((unsigned char)*k));
        FZ_CHECK(i == 0 || strcmp(p->v[i - 1].key, e->key) < 0);
        FZ_CHECK(kk_props_get(p, e->key) == e->value);
    }
}

static void check_msgs(char **m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        FZ_CHECK(m[i] && strncmp(m[i], "fuzz.yaml:", 10) == 0);
    }
}

static size_t count(const char *hay, size_t n, const char *needle)
{
    size_t c = 0, l = strlen(needle);

    for (size_t i = 0; l && i + l <= n; i++)
        c += memcmp(hay + i, needle, l) == 0;
    return c;
}

static bool in_msgs(char **m, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strstr(m[i], s))
            return true;
    return false;
}

static void check_secrets(const struct kk_props *p, const char *text, size_t len, const struct kk_diag *d)
{
    for (size_t i = 0; i < p->n; i++) {
        const char *v = p->v[i].value;
        if (!kk_prop_is_secret(p->v[i].key) || strlen(v) < 6 || count(text, len, v) != 1)
            continue;
        FZ_CHECK(!in_msgs(d->errors, d->n_errors, v));
        FZ_CHECK(!in_msgs(d->warnings, d->n_warnings, v));
    }
}

int kk_fuzz_config(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    struct kk_config *cfg = NULL, *again = NULL;
    struct kk_diag diag, diag2;
    int rc;

    memset(&diag, 0, sizeof(diag));
    memset(&diag2, 0, sizeof(diag2));
    rc = kk_config_load_string(text, size, "fuzz.yaml", &cfg, &diag);
    check_msgs(diag.errors, diag.n_errors);
    check_msgs(diag.warnings, diag.n_warnings);
    if (rc != 0) {
        FZ_CHECK(rc == KK_ECONFIG && cfg == NULL && diag.n_errors > 0);
        goto out;
    }
    FZ_CHECK(cfg && diag.n_errors == 0);
    FZ_CHECK((int)cfg->log_level >= KK_LOG_DEBUG && (int)cfg->log_level <= KK_LOG_ERROR);
    for (size_t i = 0; i < cfg->n_bindings; i++) {
        const struct kk_binding_cfg *b = &cfg->bindings[i];
        FZ_CHECK(b->name && b->source.kind_text && b->target.kind_text && b->source.name && b->target.name);
        FZ_CHECK(b->source.kind >= 0 && b->source.kind < KK_SOURCE__COUNT);
        FZ_CHECK(b->target.kind >= 0 && b->target.kind < KK_TARGET__COUNT);
        FZ_CHECK(kk_config_binding(cfg, b->name) != NULL);
        FZ_CHECK(strcmp(kk_config_binding(cfg, b->name)->name, b->name) == 0);
        check_props(&b->props);
        check_props(&b->source.props);
        check_props(&b->target.props);
        check_secrets(&b->source.props, text, size, &diag);
        check_secrets(&b->target.props, text, size, &diag);
    }
    FZ_CHECK(kk_config_load_string(text, size, "fuzz.yaml", &again, &diag2) == 0);
    FZ_CHECK(again->n_bindings == cfg->n_bindings && diag2.n_warnings == diag.n_warnings);
    for (size_t i = 0; i < cfg->n_bindings; i++)
        FZ_CHECK(again->bindings[i].hash == cfg->bindings[i].hash);
    kk_config_free(again);
    kk_config_free(cfg);
out:
    kk_diag_free(&diag);
    kk_diag_free(&diag2);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return kk_fuzz_config(data, size);
}

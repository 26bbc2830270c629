/* AWS credentials: the static part of the provider chain (kinesis.md §5).
 *
 * Sources, first that yields wins: target properties, environment, shared
 * credentials file.  The provider remembers which one it used so a refresh
 * (after an auth error) re-reads that same source.  Messages name sources
 * and paths, never key or token values. */
#include "kk/aws.h"

#include "kk/err.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum source { SRC_CONFIG, SRC_ENV, SRC_PROFILE };

struct kk_aws_provider {
    struct kk_aws_creds creds;
    enum source src;
    char profile[128];
    char path[1024];
    char desc[160]; /* "config", "env", "profile <name>" */
};

/* Process-wide so two providers never share a generation (the signer keys
 * its cache on it). */
static uint64_t next_generation;

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static int set_field(char *dst, size_t cap, const char *v)
{
    size_t n = strlen(v);
    if (n >= cap)
        return KK_ETOOBIG;
    memcpy(dst, v, n + 1);
    return 0;
}

static int fill(struct kk_aws_creds *c, const char *ak, const char *sk, const char *tok)
{
    memset(c, 0, sizeof(*c));
    if (set_field(c->access_key, sizeof(c->access_key), ak) ||
        set_field(c->secret_key, sizeof(c->secret_key), sk) ||
        set_field(c->session_token, sizeof(c->session_token), tok ? tok : ""))
        return KK_ETOOBIG;
    return 0;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* Reads [profile] of an INI credentials file.  Returns 0, or KK_ENOTFOUND
 * (no file), KK_ECREDS (no such profile / incomplete: why in err). */
static int read_profile(const char *path, const char *profile, struct kk_aws_creds *out, char *err,
                        size_t errlen)
{
    FILE *f = fopen(path, "r");
    char *line = NULL, *ak = NULL, *sk = NULL, *tok = NULL;
    size_t cap = 0;
    int in = 0, found = 0, rc = 0;

    if (!f) {
        snprintf(err, errlen, "shared credentials file %s not readable", path);
        return KK_ENOTFOUND;
    }
    while (getline(&line, &cap, f) >= 0) {
        char *s = trim(line);
        if (*s == '\0' || *s == '#' || *s == ';')
            continue;
        if (*s == '[') {
            char *e = strchr(s, ']');
            if (e)
                *e = '\0';
            in = strcmp(trim(s + 1), profile) == 0;
            found |= in;
            continue;
        }
        if (!in)
            continue;
        char *eq = strchr(s, '=');
        if (!eq)
            continue;
        *eq = '\0';
        char *k = trim(s), *v = trim(eq + 1);
        char **slot = strcasecmp(k, "aws_access_key_id") == 0       ? &ak
                      : strcasecmp(k, "aws_secret_access_key") == 0 ? &sk
                      : strcasecmp(k, "aws_session_token") == 0     ? &tok
                                                                    : NULL;
        if (slot) {
            free(*slot);
            *slot = strdup(v);
            if (!*slot) {
                rc = KK_ENOMEM;
                goto out;
            }
        }
    }
    if (!found) {
        snprintf(err, errlen, "profile [%s] not found in %s", profile, path);
        rc = KK_ECREDS;
    } else if (!ak || !*ak || !sk || !*sk) {
        snprintf(err, errlen, "profile [%s] in %s lacks %s", profile, path,
                 !ak || !*ak ? "aws_access_key_id" : "aws_secret_access_key");
        rc = KK_ECREDS;
    } else {
        rc = fill(out, ak, sk, tok);
        if (rc)
            snprintf(err, errlen, "profile [%s] in %s: a value is too long", profile, path);
    }
out:
    if (sk)
        memset(sk, 0, strlen(sk));
    free(ak);
    free(sk);
    free(tok);
    free(line);
    fclose(f);
    return rc;
}

static void shared_file_path(char *dst, size_t cap)
{
    const char *p = env_nonempty("AWS_SHARED_CREDENTIALS_FILE");
    const char *home = env_nonempty("HOME");
    if (p)
        snprintf(dst, cap, "%s", p);
    else
        snprintf(dst, cap, "%s/.aws/credentials", home ? home : "");
}

/* Loads from the provider's remembered source into c. */
static int load_env(struct kk_aws_creds *c, char *err, size_t errlen)
{
    const char *ak = env_nonempty("AWS_ACCESS_KEY_ID"), *sk = env_nonempty("AWS_SECRET_ACCESS_KEY");
    if (!ak || !sk) {
        snprintf(err, errlen, "env %s is not set", !ak ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY");
        return KK_ECREDS;
    }
    if (fill(c, ak, sk, env_nonempty("AWS_SESSION_TOKEN"))) {
        snprintf(err, errlen, "env credentials: a value is too long");
        return KK_ECREDS;
    }
    return 0;
}

/* Installs new values; bumps the generation only when they changed. */
static void install(struct kk_aws_provider *p, struct kk_aws_creds *c)
{
    int same = p->creds.generation && strcmp(p->creds.access_key, c->access_key) == 0 &&
               strcmp(p->creds.secret_key, c->secret_key) == 0 &&
               strcmp(p->creds.session_token, c->session_token) == 0;
    c->generation = same ? p->creds.generation : __atomic_add_fetch(&next_generation, 1, __ATOMIC_RELAXED);
    p->creds = *c;
    memset(c, 0, sizeof(*c));
}

int kk_aws_provider_new(const struct kk_props *props, struct kk_aws_provider **out, char *err, size_t errlen)
{
    struct kk_aws_provider *p = calloc(1, sizeof(*p));
    struct kk_aws_creds c;
    char why_env[128], why_file[1200];
    int rc;

    *out = NULL;
    if (!p)
        return KK_ENOMEM;
    const char *ak = kk_props_str(props, "aws_key", NULL), *sk = kk_props_str(props, "aws_secret_key", NULL);
    if (ak || sk) {
        /* A half-configured pair is a mistake, not a cue to look elsewhere. */
        if (!ak || !sk) {
            snprintf(err, errlen, "target property %s is set but %s is missing",
                     ak ? "aws_key" : "aws_secret_key", ak ? "aws_secret_key" : "aws_key");
            rc = KK_ECREDS;
            goto out;
        }
        if (fill(&c, ak, sk, kk_props_str(props, "token", NULL))) {
            snprintf(err, errlen, "target properties aws_key/aws_secret_key/token: a value is too long");
            rc = KK_ECREDS;
            goto out;
        }
        p->src = SRC_CONFIG;
        snprintf(p->desc, sizeof(p->desc), "config");
        install(p, &c);
        rc = 0;
        goto out;
    }
    if (env_nonempty("AWS_ACCESS_KEY_ID") || env_nonempty("AWS_SECRET_ACCESS_KEY")) {
        rc = load_env(&c, why_env, sizeof(why_env));
        if (rc) {
            int has_ak = env_nonempty("AWS_ACCESS_KEY_ID") != NULL;
            snprintf(err, errlen, "env %s is set but %s is missing",
                     has_ak ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
                     has_ak ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
            goto out;
        }
        p->src = SRC_ENV;
        snprintf(p->desc, sizeof(p->desc), "env");
        install(p, &c);
        goto out;
    }
    const char *prof = kk_props_str(props, "profile", NULL);
    if (!prof)
        prof = env_nonempty("AWS_PROFILE");
    if (!prof)
        prof = "default";
    snprintf(p->profile, sizeof(p->profile), "%s", prof);
    shared_file_path(p->path, sizeof(p->path));
    rc = read_profile(p->path, p->profile, &c, why_file, sizeof(why_file));
    if (rc) {
        snprintf(err, errlen,
                 "no AWS credentials: target properties aws_key/aws_secret_key not set; env "
                 "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY not set; %s",
                 why_file);
        if (rc != KK_ENOMEM)
            rc = KK_ECREDS;
        goto out;
    }
    p->src = SRC_PROFILE;
    snprintf(p->desc, sizeof(p->desc), "profile %s", p->profile);
    install(p, &c);
out:
    memset(&c, 0, sizeof(c));
    if (rc) {
        kk_aws_provider_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

const struct kk_aws_creds *kk_aws_creds_get(struct kk_aws_provider *p)
{
    return &p->creds;
}

int kk_aws_provider_refresh(struct kk_aws_provider *p)
{
    struct kk_aws_creds c;
    char why[1200];
    int rc = 0;

    switch (p->src) {
    case SRC_CONFIG:
        return 0; /* properties do not change under a running binding */
    case SRC_ENV:
        rc = load_env(&c, why, sizeof(why));
        break;
    case SRC_PROFILE:
        rc = read_profile(p->path, p->profile, &c, why, sizeof(why));
        break;
    }
    if (rc) {
        /* Keep the old values: they may still be good for in-flight work. */
        memset(&c, 0, sizeof(c));
        return KK_ECREDS;
    }
    install(p, &c);
    return 0;
}

const char *kk_aws_provider_source(const struct kk_aws_provider *p)
{
    return p->desc;
}

void kk_aws_provider_free(struct kk_aws_provider *p)
{
    if (!p)
        return;
    memset(&p->creds, 0, sizeof(p->creds));
    free(p);
}

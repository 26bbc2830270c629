/* Kinesis endpoint and region resolution (kinesis.md §1.1, §5). */
#include "kk/aws.h"

#include "kk/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* Regions are DNS labels joined by '-': anything else would end up in a Host
 * header and a signing scope, so refuse it early. */
static int region_ok(const char *r)
{
    if (!*r)
        return 0;
    for (; *r; r++)
        if (!((*r >= 'a' && *r <= 'z') || (*r >= '0' && *r <= '9') || *r == '-'))
            return 0;
    return 1;
}

static int host_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_';
}

/* http[s]://host[:port][/] with host a name, IPv4 or [IPv6]. */
static int parse_url(const char *url, struct kk_aws_endpoint *ep, char *err, size_t errlen, const char *from)
{
    const char *p = url, *h, *he;
    int v6 = 0;
    if (strncasecmp(p, "https://", 8) == 0) {
        ep->tls = true;
        ep->port = 443;
        p += 8;
    } else if (strncasecmp(p, "http://", 7) == 0) {
        ep->tls = false;
        ep->port = 80;
        p += 7;
    } else {
        snprintf(err, errlen, "%s: endpoint must start with http:// or https://", from);
        return KK_ECONFIG;
    }
    if (*p == '[') {
        h = ++p;
        while (*p && *p != ']') {
            if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || (*p >= 'A' && *p <= 'F') ||
                  *p == ':' || *p == '.'))
                goto bad_host;
            p++;
        }
        if (*p != ']')
            goto bad_host;
        he = p++;
        v6 = 1;
    } else {
        h = p;
        while (*p && host_char_ok(*p))
            p++;
        he = p;
    }
    if (he == h || (size_t)(he - h) >= sizeof(ep->host))
        goto bad_host;
    memcpy(ep->host, h, (size_t)(he - h));
    ep->host[he - h] = '\0';
    uint16_t def = ep->port;
    if (*p == ':') {
        unsigned long port = 0;
        const char *d = ++p;
        while (*p >= '0' && *p <= '9' && p - d < 6)
            port = port * 10 + (unsigned long)(*p++ - '0');
        if (p == d || port == 0 || port > 65535) {
            snprintf(err, errlen, "%s: endpoint has an invalid port", from);
            return KK_ECONFIG;
        }
        ep->port = (uint16_t)port;
    }
    if (*p == '/')
        p++;
    if (*p) {
        snprintf(err, errlen, "%s: endpoint must be scheme://host[:port] with no path, query or user info",
                 from);
        return KK_ECONFIG;
    }
    if (ep->port == def)
        snprintf(ep->host_header, sizeof(ep->host_header), v6 ? "[%s]" : "%s", ep->host);
    else
        snprintf(ep->host_header, sizeof(ep->host_header), v6 ? "[%s]:%u" : "%s:%u", ep->host, ep->port);
    return 0;
bad_host:
    snprintf(err, errlen, "%s: endpoint has an invalid host", from);
    return KK_ECONFIG;
}

int kk_aws_endpoint_resolve(const struct kk_props *props, struct kk_aws_endpoint *out, char *err,
                            size_t errlen)
{
    const char *region = kk_props_str(props, "region", NULL), *url, *from;
    char def_url[300];

    memset(out, 0, sizeof(*out));
    if (!region)
        region = env_nonempty("AWS_REGION");
    if (!region)
        region = env_nonempty("AWS_DEFAULT_REGION");
    if (!region) {
        snprintf(err, errlen,
                 "no AWS region: set the target property region, or AWS_REGION / AWS_DEFAULT_REGION");
        return KK_ECONFIG;
    }
    if (!region_ok(region) || strlen(region) >= sizeof(out->region)) {
        snprintf(err, errlen, "invalid AWS region (only a-z, 0-9 and '-' allowed)");
        return KK_ECONFIG;
    }
    snprintf(out->region, sizeof(out->region), "%s", region);

    if ((url = kk_props_str(props, "endpoint", NULL))) {
        from = "target property endpoint";
    } else if ((url = env_nonempty("AWS_ENDPOINT_URL_KINESIS"))) {
        from = "env AWS_ENDPOINT_URL_KINESIS";
    } else if ((url = env_nonempty("AWS_ENDPOINT_URL"))) {
        from = "env AWS_ENDPOINT_URL";
    } else {
        const char *fe = env_nonempty("AWS_USE_FIPS_ENDPOINT");
        bool fips = kk_props_bool(props, "use_fips", fe && strcasecmp(fe, "true") == 0);
        bool cn = strncmp(region, "cn-", 3) == 0;
        /* GovCloud's regular host is already the FIPS one (botocore rules). */
        if (fips && strncmp(region, "us-gov-", 7) == 0)
            fips = false;
        snprintf(def_url, sizeof(def_url), "https://kinesis%s.%s.amazonaws.com%s", fips ? "-fips" : "",
                 region, cn ? ".cn" : "");
        url = def_url;
        from = "default endpoint";
    }
    int rc = parse_url(url, out, err, errlen, from);
    if (rc) {
        char keep[sizeof(out->region)];
        memcpy(keep, out->region, sizeof(keep));
        memset(out, 0, sizeof(*out));
        memcpy(out->region, keep, sizeof(keep));
    }
    return rc;
}

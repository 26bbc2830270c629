#include "kk/prom.h"

#include <string.h>

int kk_prom_label(struct kk_buf *out, const char *value)
{
    const char *p = value ? value : "";
    int rc = 0;

    /* Copy runs of plain bytes at once; only the three special bytes split them. */
    while (*p && rc == 0) {
        size_t n = strcspn(p, "\\\"\n");
        if (n)
            rc = kk_buf_append(out, p, n);
        p += n;
        if (!*p || rc)
            break;
        rc = kk_buf_append(out, *p == '\\' ? "\\\\" : *p == '"' ? "\\\"" : "\\n", 2);
        p++;
    }
    return rc;
}

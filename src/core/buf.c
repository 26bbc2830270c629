#include "kk/buf.h"

#include "kk/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kk_buf_init(struct kk_buf *b, size_t max)
{
    b->base = NULL;
    b->len = b->cap = 0;
    b->max = max;
}

void kk_buf_free(struct kk_buf *b)
{
    free(b->base);
    b->base = NULL;
    b->len = b->cap = 0;
}

char *kk_buf_reserve(struct kk_buf *b, size_t n)
{
    if (n > b->max || b->len > b->max - n)
        return NULL;
    size_t need = b->len + n;
    if (need > b->cap) {
        /* Grow geometrically but never past max: the limit is the contract. */
        size_t cap = b->cap ? b->cap : 256;
        while (cap < need)
            cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        if (cap > b->max)
            cap = b->max;
        char *p = realloc(b->base, cap ? cap : 1);
        if (!p)
            return NULL;
        b->base = p;
        b->cap = cap;
    }
    return b->base + b->len;
}

void kk_buf_commit(struct kk_buf *b, size_t n) { b->len += n; }

int kk_buf_append(struct kk_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    char *dst = kk_buf_reserve(b, n);
    if (!dst)
        return n > b->max - b->len ? KK_ETOOBIG : KK_ENOMEM;
    memcpy(dst, p, n);
    b->len += n;
    return 0;
}

int kk_buf_append_str(struct kk_buf *b, const char *s) { return kk_buf_append(b, s, strlen(s)); }

int kk_buf_printf(struct kk_buf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return KK_EINVAL;
    if ((size_t)n < sizeof(small))
        return kk_buf_append(b, small, (size_t)n);
    char *dst = kk_buf_reserve(b, (size_t)n + 1);
    if (!dst)
        return KK_ETOOBIG;
    va_start(ap, fmt);
    vsnprintf(dst, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void kk_buf_consume(struct kk_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->base, b->base + n, b->len - n);
    b->len -= n;
}

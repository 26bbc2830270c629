/* Size-class block cache for nghttp2 (see h2mem.h).  A 16-byte header in
 * front of each block records its class (or, above 4 KiB, its size) since
 * nghttp2_mem's free gets no size. */
#include "h2mem.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MIN_SHIFT 6 /* 64 bytes */
#define LARGE 0xffu

struct hdr {
    size_t size; /* usable bytes */
    unsigned cls;
    unsigned pad;
};

_Static_assert(sizeof(struct hdr) == 16, "blocks stay 16-byte aligned");

static unsigned class_of(size_t size)
{
    unsigned c = 0;

    while (c < KK_H2MEM_CLASSES && ((size_t)1 << (MIN_SHIFT + c)) < size)
        c++;
    return c < KK_H2MEM_CLASSES ? c : LARGE;
}

static void *m_malloc(size_t size, void *ud)
{
    struct kk_h2mem *m = ud;
    unsigned cls = class_of(size ? size : 1);
    size_t usable = cls == LARGE ? size : (size_t)1 << (MIN_SHIFT + cls);
    struct hdr *h;

    if (cls != LARGE && m->n[cls])
        return m->free[cls][--m->n[cls]];
    h = malloc(sizeof(*h) + usable);
    if (!h)
        return NULL;
    m->mallocs++;
    h->size = usable;
    h->cls = cls;
    return h + 1;
}

static void m_free(void *p, void *ud)
{
    struct kk_h2mem *m = ud;
    struct hdr *h;

    if (!p)
        return;
    h = (struct hdr *)p - 1;
    if (h->cls != LARGE && m->n[h->cls] < (h->cls < 5 ? KK_H2MEM_KEEP : KK_H2MEM_KEEP_LARGE)) {
        m->free[h->cls][m->n[h->cls]++] = p;
        return;
    }
    free(h);
}

static void *m_calloc(size_t nmemb, size_t size, void *ud)
{
    void *p;

    if (size && nmemb > SIZE_MAX / size)
        return NULL;
    p = m_malloc(nmemb * size, ud);
    if (p)
        memset(p, 0, nmemb * size);
    return p;
}

static void *m_realloc(void *p, size_t size, void *ud)
{
    struct hdr *h;
    void *q;

    if (!p)
        return m_malloc(size, ud);
    h = (struct hdr *)p - 1;
    if (size <= h->size)
        return p;
    q = m_malloc(size, ud);
    if (!q)
        return NULL;
    memcpy(q, p, h->size);
    m_free(p, ud);
    return q;
}

void kk_h2mem_init(struct kk_h2mem *m)
{
    memset(m, 0, sizeof(*m));
    m->mem.mem_user_data = m;
    m->mem.malloc = m_malloc;
    m->mem.free = m_free;
    m->mem.calloc = m_calloc;
    m->mem.realloc = m_realloc;
}

void kk_h2mem_free(struct kk_h2mem *m)
{
    for (unsigned c = 0; c < KK_H2MEM_CLASSES; c++)
        while (m->n[c])
            free((struct hdr *)m->free[c][--m->n[c]] - 1);
}

/* Bounded byte buffer: {base, len, cap, max}.
 *
 * The buffer owns base (heap).  It never grows past max bytes: an append that
 * would exceed max fails with KK_ETOOBIG and leaves the buffer unchanged.
 * A zeroed struct with max set is a valid empty buffer (kk_buf_init does it).
 */
#ifndef KK_BUF_H
#define KK_BUF_H

#include <stddef.h>
#include <stdint.h>

struct kk_buf {
    char *base;
    size_t len; /* bytes in use, from base */
    size_t cap; /* bytes allocated */
    size_t max; /* hard limit on len */
};

void kk_buf_init(struct kk_buf *b, size_t max);
void kk_buf_free(struct kk_buf *b);

/* Makes room for n more bytes; returns a pointer to base + len or NULL
 * (KK_ETOOBIG / KK_ENOMEM cases).  Commit with kk_buf_commit. */
char *kk_buf_reserve(struct kk_buf *b, size_t n);
void kk_buf_commit(struct kk_buf *b, size_t n);

int kk_buf_append(struct kk_buf *b, const void *p, size_t n);
int kk_buf_append_str(struct kk_buf *b, const char *s);
int kk_buf_printf(struct kk_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Drops the first n bytes (memmove of the rest). */
void kk_buf_consume(struct kk_buf *b, size_t n);

/* Keeps the allocation, empties the contents. */
static inline void kk_buf_reset(struct kk_buf *b) { b->len = 0; }

#endif

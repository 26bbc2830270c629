/* A small allocator for nghttp2 (nghttp2_mem): freed blocks of up to 4 KiB
 * are kept on per-size-class lists and handed out again, so the stream,
 * frame and header-copy allocations nghttp2 makes for every call (about
 * four per unary call) stop reaching malloc once the client is warm.
 * Each list keeps at most KK_H2MEM_KEEP blocks (KK_H2MEM_KEEP_LARGE for the
 * 2 and 4 KiB classes: at most ~4.5 MiB kept); larger blocks pass through.
 * Private to src/kubemq; exposed for tests/unit/test_grpc.c.
 */
#ifndef KK_KUBEMQ_H2MEM_H
#define KK_KUBEMQ_H2MEM_H

#include <stddef.h>

#include <nghttp2/nghttp2.h>

#define KK_H2MEM_CLASSES 7 /* 64 B .. 4 KiB */
#define KK_H2MEM_KEEP 512      /* blocks kept per class up to 1 KiB (one per call in flight) */
#define KK_H2MEM_KEEP_LARGE 64 /* ... and for the 2 and 4 KiB classes */

struct kk_h2mem {
    nghttp2_mem mem; /* give &mem to nghttp2_session_client_new3 */
    void *free[KK_H2MEM_CLASSES][KK_H2MEM_KEEP];
    unsigned n[KK_H2MEM_CLASSES];
    unsigned long mallocs; /* blocks taken from malloc (tests and stats) */
};

void kk_h2mem_init(struct kk_h2mem *m);
/* Frees the kept blocks; every session using m must be deleted first. */
void kk_h2mem_free(struct kk_h2mem *m);

#endif

/* One-block protobuf unpacking (see pbarena.h).
 *
 * protobuf-c takes a ProtobufCAllocator; ours bumps a pointer through a
 * block sized from the wire length, so the usual message needs no second
 * malloc, and its free() is a no-op because the blocks go all at once.
 * protobuf-c allocates the message struct first, so the message sits at the
 * start of the first block and kk_pb_free finds the block header right in
 * front of it; kk_pb_unpack checks that instead of trusting it.
 */
#include "pbarena.h"

#include <stdlib.h>

#include "kk/log.h"

#define ALIGN 16u
#define MAGIC 0x6b6b70626172656eull /* "kkpbaren" */
#define SLACK 512u                  /* alignment padding, pointer arrays, a few map entries */

struct blk {
    struct blk *next; /* spill blocks, newest first (first block only) */
    size_t cap, used;
    uint64_t magic;
};

_Static_assert(sizeof(struct blk) % ALIGN == 0, "block header keeps data aligned");

static struct blk *blk_new(size_t cap)
{
    struct blk *b = malloc(sizeof(*b) + cap);

    if (!b)
        return NULL;
    b->next = NULL;
    b->cap = cap;
    b->used = 0;
    b->magic = MAGIC;
    return b;
}

static void *blk_take(struct blk *b, size_t size)
{
    void *p;

    if (b->cap - b->used < size)
        return NULL;
    p = (char *)(b + 1) + b->used;
    b->used += size;
    return p;
}

static void *arena_alloc(void *data, size_t size)
{
    struct blk *head = data, *b;
    void *p;

    size = (size + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    if ((p = blk_take(head, size)) || (head->next && (p = blk_take(head->next, size))))
        return p;
    /* Spill: each new block at least doubles, so a message needs O(log n) of them. */
    b = blk_new(size > 2 * (head->next ? head->next->cap : head->cap)
                    ? size
                    : 2 * (head->next ? head->next->cap : head->cap));
    if (!b)
        return NULL;
    b->next = head->next;
    head->next = b;
    return blk_take(b, size);
}

static void arena_free(void *data, void *p)
{
    (void)data;
    (void)p; /* everything goes with the blocks */
}

static void blocks_free(struct blk *head)
{
    struct blk *b = head->next, *next;

    for (; b; b = next) {
        next = b->next;
        free(b);
    }
    free(head);
}

ProtobufCMessage *kk_pb_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t n)
{
    size_t cap = ((desc->sizeof_message + ALIGN - 1) & ~(size_t)(ALIGN - 1)) + n + n / 8 + SLACK;
    struct blk *head = blk_new(cap);
    ProtobufCAllocator a = {arena_alloc, arena_free, NULL};
    ProtobufCMessage *msg;

    if (!head)
        return NULL;
    a.allocator_data = head;
    msg = protobuf_c_message_unpack(desc, &a, n, p);
    if (msg && (void *)msg != (void *)(head + 1)) {
        KK_ERROR("kubemq", "protobuf-c did not allocate the %s first; cannot unpack in one block",
                 desc->short_name);
        msg = NULL;
    }
    if (!msg)
        blocks_free(head);
    return msg;
}

void kk_pb_free(ProtobufCMessage *msg)
{
    struct blk *head;

    if (!msg)
        return;
    head = (struct blk *)msg - 1;
    if (head->magic != MAGIC) { /* not ours: a caller bug, but do not corrupt the heap */
        KK_ERROR("kubemq", "kk_kmq_free: %s not unpacked by the client", msg->descriptor->short_name);
        protobuf_c_message_free_unpacked(msg, NULL);
        return;
    }
    head->magic = 0;
    blocks_free(head);
}

unsigned kk_pb_blocks(const ProtobufCMessage *msg)
{
    const struct blk *b = ((const struct blk *)msg - 1)->next;
    unsigned n = 1;

    for (; b; b = b->next)
        n++;
    return n;
}

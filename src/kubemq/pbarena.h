/* Protobuf messages unpacked into one heap block: the message, its strings,
 * bytes and sub-messages cost one malloc and one free instead of one per
 * field (a KubeMQ Request has six or more).  Input that expands unusually
 * (many tiny sub-messages) spills into extra blocks chained to the first.
 * Private to src/kubemq; exposed for tests/unit/test_grpc.c.
 */
#ifndef KK_KUBEMQ_PBARENA_H
#define KK_KUBEMQ_PBARENA_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/* NULL when the bytes are not a valid desc message (or out of memory).
 * The result is freed with kk_pb_free only: never free or replace a field. */
ProtobufCMessage *kk_pb_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t n);
/* NULL is ignored. */
void kk_pb_free(ProtobufCMessage *msg);
/* Heap blocks behind msg (1 unless it spilled); for tests. */
unsigned kk_pb_blocks(const ProtobufCMessage *msg);

#endif

// Small helpers shared by the test broker modules.
import { randomUUID } from 'node:crypto';
import grpc from '@grpc/grpc-js';

// Wall-clock nanoseconds that never go backwards within one process (hrtime offset),
// returned as BigInt; proto-loader takes int64 as decimal strings (see nsString).
const wallAtStartNs = BigInt(Date.now()) * 1000000n;
const hrAtStart = process.hrtime.bigint();
export function nowNs() {
    return wallAtStartNs + (process.hrtime.bigint() - hrAtStart);
}
export const nsString = (ns) => ns.toString();

export const uuid = () => randomUUID();

// Errors a KubeMQ broker returns as gRPC INTERNAL with "Error NNN: text" (kubemq-protocol.md §7).
export const ERR = {
    clientId: 'Error 101: invalid clientID value, cannot be empty',
    channel: 'Error 102: invalid channel value, cannot be empty',
    timeout: 'Error 109: invalid set timeout value, cannot be 0 or negative',
    emptyMsg: 'Error 110: invalid message, cannot be empty',
    storeType: 'Error 111: invalid subscription type, cannot be undefined or 0',
    storeSeq: 'Error 112: invalid events store sequence value',
    storeTime: 'Error 113: invalid events store start time value',
    storeDelta: 'Error 114: invalid events store start time delta value',
    emptyReq: 'Error 115: invalid request, cannot be empty',
    requestId: 'Error 117: invalid request id, cannot be empty',
    storeParams: 'Error 118: event store parameters were set but subscribe type is not event store',
    channelDot: 'Error 119: invalid channel value, cannot end with .',
    queueName: 'Error 120: invalid queue name',
    maxMessages: 'Error 122: max messages should be between 1 and max',
    waitTimeout: 'Error 136: invalid wait timeout',
    requestTimeout: 'Error 301: timeout for request message',
    subscribeType: 'Error 207: invalid subscribe type',
    requestType: 'Error 206: invalid request type',
    wildcard: 'Error 103: invalid channel value, cannot contain wildcards or spaces',
};

export function internal(details) {
    return { code: grpc.status.INTERNAL, details };
}

// Channel checks of the community broker: required, no trailing '.', and (for publishing or
// queues) no wildcards or whitespace.  Returns an error text or null.
export function checkChannel(ch, { wildcards = false } = {}) {
    if (!ch) return ERR.channel;
    if (ch.endsWith('.')) return ERR.channelDot;
    if (!wildcards && /[*>\s]/.test(ch)) return ERR.wildcard;
    return null;
}

// NATS subject match: '*' matches one token, '>' the rest (tokens split on '.').
export function channelMatches(pattern, channel) {
    if (pattern === channel) return true;
    if (!/[*>]/.test(pattern)) return false;
    const p = pattern.split('.');
    const c = channel.split('.');
    for (let i = 0; i < p.length; i++) {
        if (p[i] === '>') return c.length > i;
        if (i >= c.length) return false;
        if (p[i] !== '*' && p[i] !== c[i]) return false;
    }
    return p.length === c.length;
}

export function bodyIsEmpty(b) {
    return !b || b.length === 0;
}

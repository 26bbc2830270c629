// Thin async wrappers over kubemq-js 1.2.3 (and a raw @grpc/grpc-js client) for tests.
// Each call opens its own client and closes it afterwards, so tests leave no channels behind.
// Common opts (last argument): {clientId='kk-test-<uuid>', token /* authorization */,
//                               ca /* PEM path: TLS with this CA */}.
//
//   request(metadata, dataBuf?) -> string: the Request JSON the gateway expects,
//       {"metadata":{...},"data":"<base64>"} ("data" left out when dataBuf is null/undefined)
//   sendQuery(addr, channel, body /* string | Buffer | object (JSON) */, timeoutMs=5000, opts)
//       -> {response /* kubemq-js result: executed, error, body (Uint8Array)... */, json /* body parsed, or null */}
//   sendCommand(addr, channel, body, timeoutMs=5000, opts) -> {executed, error, ...}
//   publishEvent(addr, channel, body, opts); publishEventStore(addr, channel, body, opts) -> {id, sent}
//   sendQueue(addr, channel, body, opts) -> SendQueueMessageResult; sendQueueBatch(addr, channel, bodies, opts)
//   pullQueue(addr, channel, {max=32, waitSeconds=0}, opts) -> {messages, ...}; ackAllQueue(addr, channel, opts)
//   subscribeEvents(addr, channel, group='', opts /* + store, startType, startValue */)
//       -> collector {messages, waitFor(n, ms=5000) -> messages, close()}; resolves ~300 ms after the
//          stream opened (kubemq-js 1.2.3 quirk: subscribe() resolves before the broker has it).
//   respondQueries(addr, channel, handler(msg) -> {body?, executed=true, error=''}, {group, command, ...opts})
//       -> {received, close()}: a responder built on kubemq-js subscribe + response.
//   ping(addr, opts)
//   rawClient(addr, {ca, token}) -> {client /* grpc-js kubemq.kubemq stub */, md /* Metadata */, close()}
//   callUnary(raw, method, req) -> Promise<response>
import path from 'node:path';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { randomUUID } from 'node:crypto';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import kubemq from 'kubemq-js';

const { QueriesClient, CommandsClient, EventsClient, EventsStoreClient, QueuesClient } = kubemq;
const PROTO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../src/kubemq/kubemq.proto');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function request(metadata, dataBuf) {
    const o = { metadata };
    if (dataBuf !== undefined && dataBuf !== null) o.data = Buffer.from(dataBuf).toString('base64');
    return JSON.stringify(o);
}

function toBytes(body) {
    if (body === undefined || body === null) return new Uint8Array(0);
    if (typeof body === 'string') return new Uint8Array(Buffer.from(body, 'utf8'));
    if (body instanceof Uint8Array) return new Uint8Array(body);
    return new Uint8Array(Buffer.from(JSON.stringify(body), 'utf8'));
}

export function bytesToString(b) {
    return b ? Buffer.from(b).toString('utf8') : '';
}

// kubemq-js 1.2.3 only knows system roots; TLS with a test CA needs its credentials replaced.
function make(Kind, addr, opts = {}) {
    const cfg = { address: addr, clientId: opts.clientId || `kk-test-${randomUUID()}`, reconnectInterval: 0 };
    if (opts.token) cfg.authToken = opts.token;
    if (!opts.ca) return new Kind(cfg);
    const ca = fs.readFileSync(opts.ca);
    class TlsKind extends Kind {
        getChannelCredentials() { return grpc.credentials.createSsl(ca); }
    }
    return new TlsKind(cfg);
}

async function withClient(Kind, addr, opts, fn) {
    const c = make(Kind, addr, opts);
    try {
        return await fn(c);
    } finally {
        c.grpcClient.close();
    }
}

// Races p against a timer; rejects with `what` after ms.
export function timeout(p, ms, what) {
    let t;
    return Promise.race([p, new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`${what}: timed out after ${ms} ms`)), ms); })])
        .finally(() => clearTimeout(t));
}

export function ping(addr, opts) {
    return withClient(QueriesClient, addr, opts, (c) => timeout(c.ping(), 5000, 'ping'));
}

export async function sendQuery(addr, channel, body, timeoutMs = 5000, opts = {}) {
    const response = await withClient(QueriesClient, addr, opts, (c) =>
        timeout(c.send({ channel, body: toBytes(body), timeout: timeoutMs }), timeoutMs + 2000, `query ${channel}`));
    let json = null;
    try { json = JSON.parse(bytesToString(response.body)); } catch { /* not JSON */ }
    return { response, json };
}

export function sendCommand(addr, channel, body, timeoutMs = 5000, opts = {}) {
    return withClient(CommandsClient, addr, opts, (c) =>
        timeout(c.send({ channel, body: toBytes(body), timeout: timeoutMs }), timeoutMs + 2000, `command ${channel}`));
}

export function publishEvent(addr, channel, body, opts = {}) {
    return withClient(EventsClient, addr, opts, (c) => timeout(c.send({ channel, body: toBytes(body) }), 5000, 'event'));
}

export function publishEventStore(addr, channel, body, opts = {}) {
    return withClient(EventsStoreClient, addr, opts, (c) => timeout(c.send({ channel, body: toBytes(body) }), 5000, 'event store'));
}

export function sendQueue(addr, channel, body, opts = {}) {
    return withClient(QueuesClient, addr, opts, (c) => timeout(c.send({ channel, body: toBytes(body) }), 5000, 'queue send'));
}

export function sendQueueBatch(addr, channel, bodies, opts = {}) {
    return withClient(QueuesClient, addr, opts, (c) =>
        timeout(c.batch(bodies.map((b) => ({ channel, body: toBytes(b) }))), 5000, 'queue batch'));
}

export function pullQueue(addr, channel, { max = 32, waitSeconds = 0 } = {}, opts = {}) {
    return withClient(QueuesClient, addr, opts, (c) =>
        timeout(c.pull({ channel, maxNumberOfMessages: max, waitTimeoutSeconds: waitSeconds }), waitSeconds * 1000 + 5000, 'queue pull'));
}

export function ackAllQueue(addr, channel, opts = {}) {
    return withClient(QueuesClient, addr, opts, (c) => timeout(c.ackAll({ channel }), 5000, 'queue ackAll'));
}

function collector() {
    const col = { messages: [], errors: [], waiters: [] };
    col.push = (m) => {
        col.messages.push(m);
        col.waiters = col.waiters.filter((w) => !w());
    };
    col.waitFor = (n, ms = 5000) => new Promise((resolve, reject) => {
        const check = () => {
            if (col.messages.length >= n) {
                clearTimeout(t);
                resolve(col.messages.slice());
                return true;
            }
            return false;
        };
        const t = setTimeout(() => {
            col.waiters = col.waiters.filter((w) => w !== check);
            reject(new Error(`expected ${n} messages within ${ms} ms, got ${col.messages.length}`));
        }, ms);
        if (!check()) col.waiters.push(check);
    });
    return col;
}

// Uses kubemq-js subscribeFn (one stream, no reconnect loop) so close() ends it at once.
export async function subscribeEvents(addr, channel, group = '', opts = {}) {
    const store = !!opts.store;
    const c = make(store ? EventsStoreClient : EventsClient, addr, opts);
    const col = collector();
    const req = { channel, group };
    if (store) {
        req.requestType = opts.startType ?? 1;
        req.requestTypeValue = opts.startValue ?? 0;
    }
    const { stream } = await c.subscribeFn(req, (err, msg) => {
        if (err) col.errors.push(err);
        else col.push({ ...msg, text: bytesToString(msg.body) });
    });
    col.close = () => {
        stream.cancel();
        c.grpcClient.close();
    };
    await sleep(opts.settleMs ?? 300);
    return col;
}

export async function respondQueries(addr, channel, handler, opts = {}) {
    const c = make(opts.command ? CommandsClient : QueriesClient, addr, opts);
    const received = [];
    const { stream } = await c.subscribeFn({ channel, group: opts.group || '' }, async (err, msg) => {
        if (err) return;
        received.push(msg);
        const r = (await handler(msg)) || {};
        try {
            await c.response({ id: msg.id, replyChannel: msg.replyChannel, executed: r.executed ?? true,
                error: r.error || '', body: toBytes(r.body), metadata: r.metadata || '' });
        } catch { /* late or stopped */ }
    });
    await sleep(opts.settleMs ?? 300);
    return { received, close: () => { stream.cancel(); c.grpcClient.close(); } };
}

let stubCtor = null;
export function rawClient(addr, { ca = null, token = null } = {}) {
    if (!stubCtor) {
        const def = protoLoader.loadSync(PROTO, { keepCase: true, longs: String, enums: Number, defaults: true });
        stubCtor = grpc.loadPackageDefinition(def).kubemq.kubemq;
    }
    const creds = ca ? grpc.credentials.createSsl(fs.readFileSync(ca)) : grpc.credentials.createInsecure();
    const client = new stubCtor(addr, creds);
    const md = new grpc.Metadata();
    if (token) md.add('authorization', token);
    return { client, md, close: () => client.close() };
}

export function callUnary(raw, method, req, ms = 5000) {
    return new Promise((resolve, reject) => {
        raw.client[method](req, raw.md, { deadline: Date.now() + ms }, (err, res) => (err ? reject(err) : resolve(res)));
    });
}

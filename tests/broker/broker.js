#!/usr/bin/env node
// KubeMQ-compatible test broker (gRPC service kubemq.kubemq) with an HTTP control API.
//
// CLI:  node tests/broker/broker.js [--host 127.0.0.1] [--port 0] [--control-port 0]
//                                   [--tls-cert FILE --tls-key FILE] [--token TOKEN] [--min-wait-ms 50]
//       prints exactly one line {"grpc":<port>,"control":<port>} on stdout once listening;
//       exits on SIGTERM/SIGINT.
// API:  import { startBroker } from '../broker/broker.js'
//       const b = await startBroker({host, port, controlPort, tls: {cert, key} (PEM text or Buffer),
//                                    token, minWaitMs});
//       b.grpcPort, b.controlPort, b.stats(), await b.stop() (close gRPC, drop every connection
//       and stream), await b.start() (listen again on the same port), b.reset(), await b.close().
// Control API (HTTP, 127.0.0.1:<controlPort>): GET /stats, POST /stop, POST /start, POST /reset.
// Stats: {running, connections, pings, subscribers: {ch: n}, requests: {ch: {sent, answered,
//        inflight, max_inflight, timeouts, flushed_inflight, max_flushed_inflight}},
//   inflight: delivered to a subscriber, not answered yet; flushed_*: of those, the ones whose
//   HTTP/2 write completed (the subscriber's flow-control window admitted the whole message). events: {ch: {published, delivered}},
//        queues: {ch: {depth, inflight, acked, nacked, delivered, sent}},
//        clients: {subscriberClientId: {requests, events}} (deliveries per subscriber)}
//   connections = distinct client peers (ip:port) that made a call since the last (re)start.
//
// Semantics follow ../shared/docs/kubemq-protocol.md §4 (community broker): events fan-out with
// round-robin groups, events-store history with every start position, request/reply through a
// unique _INBOX reply channel with Timeout (ms) and "Error 301", queues (queues.js: unary API,
// StreamQueueMessage, QueuesUpstream, QueuesDownstream, QueuesInfo).
// Validation errors are gRPC INTERNAL "Error NNN: ..."; with a token, every RPC except Ping
// needs metadata authorization == token, else UNAUTHENTICATED.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import { Queues } from './queues.js';
import {
    nowNs, nsString, uuid, ERR, internal, checkChannel, channelMatches, bodyIsEmpty,
} from './util.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const PROTO = path.resolve(here, '../../src/kubemq/kubemq.proto');

let serviceDef = null;
function service() {
    if (!serviceDef) {
        const def = protoLoader.loadSync(PROTO, { keepCase: true, longs: String, enums: Number, defaults: true });
        serviceDef = grpc.loadPackageDefinition(def).kubemq.kubemq.service;
    }
    return serviceDef;
}

const SUB = { Events: 1, EventsStore: 2, Commands: 3, Queries: 4 };
const STORE = { NewOnly: 1, First: 2, Last: 3, AtSequence: 4, AtTime: 5, AtTimeDelta: 6 };

class Broker {
    constructor(opts) {
        this.host = opts.host || '127.0.0.1';
        this.port = opts.port || 0;
        this.controlPort = opts.controlPort || 0;
        this.tls = opts.tls || null;
        this.token = opts.token || null;
        this.startedAt = Math.floor(Date.now() / 1000);
        this.queues = new Queues({ minWaitMs: opts.minWaitMs ?? 50 });
        this.server = null;
        this.running = false;
        this.eventSubs = [];   // {id, type, channel, group, clientId, call}
        this.requestSubs = []; // {id, type, channel, group, clientId, call}
        this.rr = new Map();   // "kind|channel|group" -> round-robin counter
        this.store = new Map(); // channel -> {seq, events: [{ev, tsNs}]}
        this.pending = new Map(); // replyChannel -> {finish(err, resp), isCommand, channel}
        this.calls = new Set(); // live streaming calls, to drop them on stop()
        this.resetCounters();
    }

    resetCounters() {
        this.peers = new Set();
        this.pings = 0;
        this.reqStats = new Map();
        this.evStats = new Map();
        this.clientStats = new Map();
    }

    // Deliveries per subscriber ClientID (which group member got what).
    cstat(clientId) {
        let s = this.clientStats.get(clientId);
        if (!s) {
            s = { requests: 0, events: 0 };
            this.clientStats.set(clientId, s);
        }
        return s;
    }

    reset() {
        this.resetCounters();
        this.store.clear();
        this.queues.reset();
    }

    rstat(ch) {
        let s = this.reqStats.get(ch);
        if (!s) {
            s = { sent: 0, answered: 0, inflight: 0, max_inflight: 0, timeouts: 0, flushed_inflight: 0,
                max_flushed_inflight: 0 };
            this.reqStats.set(ch, s);
        }
        return s;
    }

    estat(ch) {
        let s = this.evStats.get(ch);
        if (!s) {
            s = { published: 0, delivered: 0 };
            this.evStats.set(ch, s);
        }
        return s;
    }

    stats() {
        const subscribers = {};
        for (const s of [...this.eventSubs, ...this.requestSubs]) subscribers[s.channel] = (subscribers[s.channel] || 0) + 1;
        return {
            running: this.running,
            connections: this.peers.size,
            pings: this.pings,
            subscribers,
            requests: Object.fromEntries(this.reqStats),
            events: Object.fromEntries(this.evStats),
            queues: this.queues.stats(),
            clients: Object.fromEntries(this.clientStats),
        };
    }

    // ---- gRPC plumbing ----
    authOk(call) {
        if (!this.token) return true;
        const v = call.metadata.get('authorization');
        return v.length > 0 && String(v[0]) === this.token;
    }

    // Wraps every handler: records the peer, checks the token, tracks streaming calls.
    handlers() {
        const h = {};
        const unauth = { code: grpc.status.UNAUTHENTICATED, details: 'invalid or missing authorization token' };
        const def = service();
        for (const [name, m] of Object.entries(def)) {
            const impl = this[name] ? this[name].bind(this) : this.queues[name]?.bind(this.queues);
            const streaming = m.requestStream || m.responseStream;
            h[name] = (call, cb) => {
                this.peers.add(call.getPeer());
                if (name !== 'Ping' && !this.authOk(call)) {
                    if (streaming) call.emit('error', unauth);
                    else cb(unauth);
                    return;
                }
                if (!impl) {
                    const e = { code: grpc.status.UNIMPLEMENTED, details: `${name} is not implemented by the test broker` };
                    if (streaming) call.emit('error', e);
                    else cb(e);
                    return;
                }
                if (streaming) {
                    this.calls.add(call);
                    const drop = () => this.calls.delete(call);
                    call.on('cancelled', drop);
                    call.on('close', drop);
                    call.on('finish', drop);
                }
                impl(call, cb);
            };
        }
        return h;
    }

    async start() {
        if (this.running) return;
        const server = new grpc.Server({ 'grpc.max_receive_message_length': 100 * 1024 * 1024 });
        server.addService(service(), this.handlers());
        const creds = this.tls
            ? grpc.ServerCredentials.createSsl(null, [{ cert_chain: Buffer.from(this.tls.cert), private_key: Buffer.from(this.tls.key) }], false)
            : grpc.ServerCredentials.createInsecure();
        this.port = await new Promise((resolve, reject) => {
            server.bindAsync(`${this.host}:${this.port}`, creds, (err, port) => (err ? reject(err) : resolve(port)));
        });
        this.server = server;
        this.running = true;
        this.peers = new Set();
    }

    // Closes the gRPC server and every connection; subscriptions and pending requests end.
    async stop() {
        if (!this.running) return;
        this.running = false;
        for (const p of this.pending.values()) p.finish({ code: grpc.status.UNAVAILABLE, details: 'broker stopped' });
        for (const c of this.calls) {
            try { c.emit('error', { code: grpc.status.UNAVAILABLE, details: 'broker stopped' }); } catch { /* gone */ }
        }
        this.calls.clear();
        this.eventSubs = [];
        this.requestSubs = [];
        this.server.forceShutdown();
        this.server = null;
    }

    // ---- Ping ----
    Ping(call, cb) {
        this.pings++;
        cb(null, { Host: 'kk-test-broker', Version: '0.0.1-test', ServerStartTime: String(this.startedAt),
            ServerUpTimeSeconds: String(Math.floor(Date.now() / 1000) - this.startedAt) });
    }

    // ---- subscriptions ----
    subscribe(list, call, sub) {
        list.push(sub);
        const remove = () => {
            const i = list.indexOf(sub);
            if (i >= 0) list.splice(i, 1);
        };
        call.on('cancelled', remove);
        call.on('close', remove);
        call.on('error', remove);
    }

    // Subscribers of `list` matching channel and type: every group "" member, plus one member per
    // non-empty group (round-robin).
    pick(list, kind, channel, type) {
        const out = [];
        const groups = new Map();
        for (const s of list) {
            if (s.type !== type || !channelMatches(s.channel, channel)) continue;
            if (!s.group) out.push(s);
            else {
                if (!groups.has(s.group)) groups.set(s.group, []);
                groups.get(s.group).push(s);
            }
        }
        for (const [g, members] of groups) {
            const key = `${kind}|${channel}|${g}`;
            const n = this.rr.get(key) || 0;
            this.rr.set(key, n + 1);
            out.push(members[n % members.length]);
        }
        return out;
    }

    SubscribeToEvents(call) {
        const r = call.request;
        let err = null;
        if (!r.ClientID) err = ERR.clientId;
        else if (r.SubscribeTypeData !== SUB.Events && r.SubscribeTypeData !== SUB.EventsStore) err = ERR.subscribeType;
        else err = checkChannel(r.Channel, { wildcards: r.SubscribeTypeData === SUB.Events });
        if (!err && r.SubscribeTypeData === SUB.Events && r.EventsStoreTypeData !== 0) err = ERR.storeParams;
        if (!err && r.SubscribeTypeData === SUB.EventsStore) err = this.checkStoreStart(r);
        if (err) return call.emit('error', internal(err));
        const sub = { id: uuid(), type: r.SubscribeTypeData, channel: r.Channel, group: r.Group, clientId: r.ClientID, call };
        call.sendMetadata(new grpc.Metadata());
        if (sub.type === SUB.EventsStore) {
            for (const e of this.history(r)) call.write(e.ev);
        }
        this.subscribe(this.eventSubs, call, sub);
        return undefined;
    }

    checkStoreStart(r) {
        const v = BigInt(r.EventsStoreTypeValue || '0');
        switch (r.EventsStoreTypeData) {
        case STORE.NewOnly: case STORE.First: case STORE.Last: return null;
        case STORE.AtSequence: return v > 0n ? null : ERR.storeSeq;
        case STORE.AtTime: return v > 0n ? null : ERR.storeTime;
        case STORE.AtTimeDelta: return v > 0n ? null : ERR.storeDelta;
        default: return ERR.storeType;
        }
    }

    // The stored events a new events-store subscription replays, by start position.
    history(r) {
        const s = this.store.get(r.Channel);
        if (!s) return [];
        const v = BigInt(r.EventsStoreTypeValue || '0');
        switch (r.EventsStoreTypeData) {
        case STORE.First: return s.events;
        case STORE.Last: return s.events.slice(-1);
        case STORE.AtSequence: return s.events.filter((e) => BigInt(e.ev.Sequence) >= v);
        case STORE.AtTime: return s.events.filter((e) => e.tsNs >= v);
        case STORE.AtTimeDelta: {
            const since = nowNs() - v * 1000000000n;
            return s.events.filter((e) => e.tsNs >= since);
        }
        default: return [];
        }
    }

    // Validates and fans one Event out; returns the Result.
    publish(ev) {
        const id = ev.EventID || uuid();
        let err = null;
        if (!ev.ClientID) err = ERR.clientId;
        else err = checkChannel(ev.Channel);
        if (!err && bodyIsEmpty(ev.Body) && !ev.Metadata) err = ERR.emptyMsg;
        if (err) return { err, result: { EventID: id, Sent: false, Error: err } };
        const st = this.estat(ev.Channel);
        st.published++;
        const out = { EventID: id, Channel: ev.Channel, Metadata: ev.Metadata, Body: ev.Body, Timestamp: '0',
            Sequence: '0', Tags: ev.Tags || {} };
        let type = SUB.Events;
        if (ev.Store) {
            type = SUB.EventsStore;
            let s = this.store.get(ev.Channel);
            if (!s) {
                s = { seq: 0, events: [] };
                this.store.set(ev.Channel, s);
            }
            const ts = nowNs();
            out.Sequence = String(++s.seq);
            out.Timestamp = nsString(ts);
            s.events.push({ ev: out, tsNs: ts });
        }
        for (const sub of this.pick(this.eventSubs, 'ev', ev.Channel, type)) {
            sub.call.write(out);
            st.delivered++;
            this.cstat(sub.clientId).events++;
        }
        return { err: null, result: { EventID: id, Sent: true, Error: '' } };
    }

    SendEvent(call, cb) {
        const { err, result } = this.publish(call.request);
        if (err) return cb(internal(err));
        return cb(null, result);
    }

    SendEventsStream(call) {
        call.on('data', (ev) => {
            const { err, result } = this.publish(ev);
            if (err || ev.Store) call.write(result);
        });
        call.on('end', () => call.end());
        call.on('error', () => {});
    }

    SubscribeToRequests(call) {
        const r = call.request;
        let err = null;
        if (!r.ClientID) err = ERR.clientId;
        else if (r.SubscribeTypeData !== SUB.Commands && r.SubscribeTypeData !== SUB.Queries) err = ERR.subscribeType;
        else err = checkChannel(r.Channel, { wildcards: true });
        if (err) return call.emit('error', internal(err));
        call.sendMetadata(new grpc.Metadata());
        this.subscribe(this.requestSubs, call,
            { id: uuid(), type: r.SubscribeTypeData, channel: r.Channel, group: r.Group, clientId: r.ClientID, call });
        return undefined;
    }

    SendRequest(call, cb) {
        const r = call.request;
        let err = null;
        if (!r.ClientID) err = ERR.clientId;
        else if (r.RequestTypeData !== 1 && r.RequestTypeData !== 2) err = ERR.requestType;
        else err = checkChannel(r.Channel);
        if (!err && bodyIsEmpty(r.Body) && !r.Metadata) err = ERR.emptyReq;
        if (!err && !(r.Timeout > 0)) err = ERR.timeout;
        if (err) return cb(internal(err));
        const isCommand = r.RequestTypeData === 1;
        const st = this.rstat(r.Channel);
        const subs = this.pick(this.requestSubs, 'rq', r.Channel, isCommand ? SUB.Commands : SUB.Queries);
        if (subs.length === 0) {
            st.timeouts++;
            return cb(internal(ERR.requestTimeout));
        }
        const reply = `_INBOX.${uuid()}`;
        const req = { ...r, RequestID: r.RequestID || uuid(), ReplyChannel: reply };
        st.sent++;
        st.inflight++;
        if (st.inflight > st.max_inflight) st.max_inflight = st.inflight;
        let done = false;
        let flushed = false;
        const finish = (e, resp) => {
            if (done) return;
            done = true;
            clearTimeout(timer);
            this.pending.delete(reply);
            st.inflight--;
            if (flushed) st.flushed_inflight--;
            if (e) cb(e);
            else cb(null, resp);
        };
        const timer = setTimeout(() => {
            st.timeouts++;
            finish(internal(ERR.requestTimeout));
        }, r.Timeout);
        this.pending.set(reply, { finish, isCommand, channel: r.Channel, st });
        call.on('cancelled', () => finish({ code: grpc.status.CANCELLED, details: 'cancelled' }));
        // A write completes once HTTP/2 flow control let the whole message out: "flushed" counts
        // what the subscriber's window admitted, which a consumer pausing at its cap bounds.
        const onFlushed = () => {
            if (done || flushed) return;
            flushed = true;
            st.flushed_inflight++;
            if (st.flushed_inflight > st.max_flushed_inflight) st.max_flushed_inflight = st.flushed_inflight;
        };
        for (const s of subs) {
            s.call.write(req, onFlushed);
            this.cstat(s.clientId).requests++;
        }
        return undefined;
    }

    SendResponse(call, cb) {
        const r = call.request;
        if (!r.ClientID) return cb(internal(ERR.clientId));
        if (!r.RequestID) return cb(internal(ERR.requestId));
        if (!r.ReplyChannel) return cb(internal(ERR.channel));
        const p = this.pending.get(r.ReplyChannel);
        if (p) {
            const resp = { ...r, ReplyChannel: '' };
            if (p.isCommand) {
                resp.Body = Buffer.alloc(0);
                resp.Metadata = '';
                resp.CacheHit = false;
            }
            p.st.answered++;
            p.finish(null, resp);
        }
        return cb(null, {});
    }

    // ---- control API ----
    startControl() {
        this.control = http.createServer((req, res) => {
            const send = (code, obj) => {
                res.writeHead(code, { 'content-type': 'application/json' });
                res.end(JSON.stringify(obj));
            };
            req.resume();
            req.on('end', async () => {
                try {
                    const route = `${req.method} ${req.url}`;
                    if (route === 'GET /stats') return send(200, this.stats());
                    if (route === 'POST /stop') { await this.stop(); return send(200, { ok: true }); }
                    if (route === 'POST /start') { await this.start(); return send(200, { ok: true, grpc: this.port }); }
                    if (route === 'POST /reset') { this.reset(); return send(200, { ok: true }); }
                    return send(404, { error: 'not found' });
                } catch (e) {
                    return send(500, { error: String(e && e.message) });
                }
            });
        });
        return new Promise((resolve, reject) => {
            this.control.once('error', reject);
            this.control.listen(this.controlPort, '127.0.0.1', () => {
                this.controlPort = this.control.address().port;
                resolve();
            });
        });
    }

    async close() {
        await this.stop();
        if (this.control) {
            this.control.closeAllConnections?.();
            await new Promise((r) => this.control.close(() => r()));
            this.control = null;
        }
    }
}

export async function startBroker(opts = {}) {
    const b = new Broker(opts);
    await b.start();
    await b.startControl();
    return {
        get grpcPort() { return b.port; },
        get controlPort() { return b.controlPort; },
        address: () => `127.0.0.1:${b.port}`,
        stats: () => b.stats(),
        reset: () => b.reset(),
        stop: () => b.stop(),
        start: () => b.start(),
        close: () => b.close(),
        broker: b,
    };
}

function parseArgs(argv) {
    const o = {};
    for (let i = 0; i < argv.length; i++) {
        const k = argv[i];
        const v = argv[i + 1];
        switch (k) {
        case '--host': o.host = v; i++; break;
        case '--port': o.port = Number(v); i++; break;
        case '--control-port': o.controlPort = Number(v); i++; break;
        case '--tls-cert': o.certFile = v; i++; break;
        case '--tls-key': o.keyFile = v; i++; break;
        case '--token': o.token = v; i++; break;
        case '--min-wait-ms': o.minWaitMs = Number(v); i++; break;
        default: throw new Error(`unknown argument ${k}`);
        }
    }
    if (!!o.certFile !== !!o.keyFile) throw new Error('--tls-cert and --tls-key go together');
    if (o.certFile) o.tls = { cert: fs.readFileSync(o.certFile), key: fs.readFileSync(o.keyFile) };
    return o;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
    let b;
    try {
        b = await startBroker(parseArgs(process.argv.slice(2)));
    } catch (e) {
        process.stderr.write(`broker: ${e.message}\n`);
        process.exit(2);
    }
    process.stdout.write(`${JSON.stringify({ grpc: b.grpcPort, control: b.controlPort })}\n`);
    const quit = async () => {
        await b.close();
        process.exit(0);
    };
    process.on('SIGTERM', quit);
    process.on('SIGINT', quit);
}

// The test broker itself, driven by kubemq-js 1.2.3 on both sides (and raw @grpc/grpc-js where
// kubemq-js 1.2.3 has no API: QueuesDownstream, validation errors).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import grpc from '@grpc/grpc-js';
import { startBroker, brokerProcess } from './lib/broker.mjs';
import { makeCerts } from './lib/certs.mjs';
import kubemq from 'kubemq-js';
import {
    ping, sendQuery, sendCommand, publishEvent, publishEventStore, sendQueue, sendQueueBatch, pullQueue,
    ackAllQueue, subscribeEvents, respondQueries, rawClient, callUnary, bytesToString, sleep,
} from './lib/kubemq.mjs';

let b;
let addr;
before(async () => {
    b = await startBroker({});
    addr = b.address();
});
after(async () => {
    await b?.close();
});

test('ping answers and is counted', async () => {
    const r = await ping(addr);
    assert.equal(r.host, 'kk-test-broker');
    assert.ok(b.stats().pings >= 1);
    assert.ok(b.stats().connections >= 1);
});

test('query round trip through a unique reply inbox', async () => {
    const resp = await respondQueries(addr, 'bq1', (m) => ({ body: `pong:${bytesToString(m.body)}` }));
    try {
        const { response } = await sendQuery(addr, 'bq1', 'ping', 3000);
        assert.equal(response.executed, true);
        assert.equal(bytesToString(response.body), 'pong:ping');
        assert.equal(resp.received.length, 1);
        assert.match(resp.received[0].replyChannel, /^_INBOX\./);
        const st = b.stats().requests.bq1;
        assert.deepEqual({ ...st }, { sent: 1, answered: 1, inflight: 0, max_inflight: 1, timeouts: 0, flushed_inflight: 0,
            max_flushed_inflight: 1 });
        assert.equal(b.stats().subscribers.bq1, 1);
    } finally {
        resp.close();
    }
});

test('command round trip; the broker clears Body and Metadata of command responses', async () => {
    const raw = rawClient(addr);
    const stream = raw.client.SubscribeToRequests({ ClientID: 'raw-resp', Channel: 'bc1', SubscribeTypeData: 3 }, raw.md);
    stream.on('error', () => {});
    stream.on('data', (req) => {
        callUnary(raw, 'SendResponse', { ClientID: 'raw-resp', RequestID: req.RequestID, ReplyChannel: req.ReplyChannel,
            Executed: true, Body: Buffer.from('dropped'), Metadata: 'dropped' }).catch(() => {});
    });
    await sleep(200);
    try {
        const r = await sendCommand(addr, 'bc1', 'do it', 3000);
        assert.equal(r.executed, true);
        assert.equal(r.error, '');
        const q = await callUnary(raw, 'SendRequest', { ClientID: 'c', Channel: 'bc1', RequestTypeData: 1, Body: Buffer.from('x'), Timeout: 2000 });
        assert.equal(q.Body.length, 0);
        assert.equal(q.Metadata, '');
        assert.equal(q.Executed, true);
    } finally {
        stream.cancel();
        raw.close();
    }
});

test('Error 301 without subscriber and on timeout; late responses still return {}', async () => {
    await assert.rejects(sendQuery(addr, 'nobody', 'x', 500), (e) => e.code === grpc.status.INTERNAL
        && /Error 301: timeout for request message/.test(e.details));
    let late = null;
    const resp = await respondQueries(addr, 'slow', (m) => { late = m; return new Promise(() => {}); });
    try {
        const t0 = Date.now();
        await assert.rejects(sendQuery(addr, 'slow', 'x', 300), (e) => e.code === grpc.status.INTERNAL && /Error 301/.test(e.details));
        assert.ok(Date.now() - t0 >= 280, 'waited for Timeout ms');
        assert.equal(b.stats().requests.slow.timeouts, 1);
        const raw = rawClient(addr);
        try {
            assert.deepEqual(await callUnary(raw, 'SendResponse', { ClientID: 'r', RequestID: late.id, ReplyChannel: late.replyChannel, Executed: true }), {});
        } finally {
            raw.close();
        }
    } finally {
        resp.close();
    }
});

test('validation errors are INTERNAL "Error NNN"', async () => {
    const raw = rawClient(addr);
    try {
        await assert.rejects(callUnary(raw, 'SendEvent', { Channel: 'e', Body: Buffer.from('x') }),
            (e) => e.code === grpc.status.INTERNAL && e.details === 'Error 101: invalid clientID value, cannot be empty');
        await assert.rejects(callUnary(raw, 'SendEvent', { ClientID: 'c', Channel: 'e' }), (e) => /^Error 110/.test(e.details));
        await assert.rejects(callUnary(raw, 'SendRequest', { ClientID: 'c', Channel: 'e', RequestTypeData: 2, Body: Buffer.from('x') }),
            (e) => /^Error 109/.test(e.details));
        await assert.rejects(callUnary(raw, 'SendResponse', { ClientID: 'c', ReplyChannel: 'x' }), (e) => /^Error 117/.test(e.details));
        const s = raw.client.SubscribeToEvents({ ClientID: 'c', Channel: 'es', SubscribeTypeData: 2, EventsStoreTypeData: 4, EventsStoreTypeValue: '0' }, raw.md);
        const err = await new Promise((resolve) => { s.on('error', resolve); s.on('data', () => {}); });
        assert.equal(err.code, grpc.status.INTERNAL);
        assert.match(err.details, /^Error 112/);
    } finally {
        raw.close();
    }
});

test('events fan out to every plain subscriber and once per group, round-robin', async () => {
    const all1 = await subscribeEvents(addr, 'bev', '', { settleMs: 0 });
    const all2 = await subscribeEvents(addr, 'bev', '', { settleMs: 0 });
    const g1 = await subscribeEvents(addr, 'bev', 'g', { settleMs: 0 });
    const g2 = await subscribeEvents(addr, 'bev', 'g', { settleMs: 0 });
    const wild = await subscribeEvents(addr, 'bev.>', '', { settleMs: 0 });
    await sleep(300);
    try {
        for (let i = 0; i < 10; i++) await publishEvent(addr, 'bev', `m${i}`);
        await publishEvent(addr, 'bev.sub', 'w');
        assert.equal((await all1.waitFor(10)).length, 10);
        assert.equal((await all2.waitFor(10)).length, 10);
        assert.deepEqual(all1.messages.map((m) => m.text), [...Array(10).keys()].map((i) => `m${i}`));
        await sleep(100);
        assert.equal(all1.messages.length, 10, 'bev.sub does not reach subscribers of bev');
        assert.equal(g1.messages.length, 5, 'round-robin within the group');
        assert.equal(g2.messages.length, 5);
        assert.deepEqual((await wild.waitFor(1)).map((m) => m.text), ['w']);
        const st = b.stats().events.bev;
        assert.equal(st.published, 10);
        assert.equal(st.delivered, 30);
    } finally {
        for (const c of [all1, all2, g1, g2, wild]) c.close();
    }
});

test('events-store keeps history with sequences from 1 and honours every start position', async () => {
    const ch = 'bstore';
    for (let i = 1; i <= 3; i++) assert.equal((await publishEventStore(addr, ch, `s${i}`)).sent, true);
    await sleep(20);
    const tMid = Date.now() * 1e6; // ns; float precision loss (~256 ns) is far below the 20 ms gaps
    await sleep(20);
    for (let i = 4; i <= 5; i++) await publishEventStore(addr, ch, `s${i}`);
    const texts = (c) => c.messages.map((m) => m.text);
    const subs = {
        first: await subscribeEvents(addr, ch, '', { store: true, startType: 2, settleMs: 0 }),
        last: await subscribeEvents(addr, ch, '', { store: true, startType: 3, settleMs: 0 }),
        seq: await subscribeEvents(addr, ch, '', { store: true, startType: 4, startValue: 3, settleMs: 0 }),
        time: await subscribeEvents(addr, ch, '', { store: true, startType: 5, startValue: tMid, settleMs: 0 }),
        newOnly: await subscribeEvents(addr, ch, '', { store: true, startType: 1, settleMs: 0 }),
    };
    await sleep(300);
    try {
        await publishEventStore(addr, ch, 's6');
        assert.deepEqual(texts({ messages: await subs.first.waitFor(6) }), ['s1', 's2', 's3', 's4', 's5', 's6']);
        assert.deepEqual(subs.first.messages.map((m) => m.sequence), [1, 2, 3, 4, 5, 6]);
        assert.ok(subs.first.messages[0].timestamp > 1.7e18, 'timestamp in ns');
        assert.deepEqual(texts({ messages: await subs.last.waitFor(2) }), ['s5', 's6']);
        assert.deepEqual(texts({ messages: await subs.seq.waitFor(4) }), ['s3', 's4', 's5', 's6']);
        assert.deepEqual(texts({ messages: await subs.time.waitFor(3) }), ['s4', 's5', 's6']);
        assert.deepEqual(texts({ messages: await subs.newOnly.waitFor(1) }), ['s6']);
        await sleep(100);
        assert.equal(subs.first.messages.length, 6);
        assert.equal(subs.newOnly.messages.length, 1);
    } finally {
        for (const c of Object.values(subs)) c.close();
    }
});

test('events-store StartAtTimeDelta (seconds back from now)', async () => {
    const ch = 'bdelta';
    await publishEventStore(addr, ch, 'old');
    await sleep(1100);
    await publishEventStore(addr, ch, 'new');
    const s = await subscribeEvents(addr, ch, '', { store: true, startType: 6, startValue: 1, settleMs: 0 });
    try {
        assert.deepEqual((await s.waitFor(1)).map((m) => m.text), ['new']);
        await sleep(150);
        assert.equal(s.messages.length, 1);
    } finally {
        s.close();
    }
});

test('queue send, pull and ackAll', async () => {
    const ch = 'bq';
    const r = await sendQueue(addr, ch, 'a');
    assert.equal(r.isError, false);
    await sendQueueBatch(addr, ch, ['b', 'c']);
    assert.equal(b.stats().queues[ch].depth, 3);
    const p1 = await pullQueue(addr, ch, { max: 2 });
    assert.deepEqual(p1.messages.map((m) => bytesToString(m.body)), ['a', 'b']);
    assert.deepEqual(p1.messages.map((m) => m.attributes.sequence), [1, 2]);
    const p2 = await pullQueue(addr, ch, { max: 5 });
    assert.deepEqual(p2.messages.map((m) => bytesToString(m.body)), ['c']);
    // A pull with a wait returns when a message arrives.
    const waiting = pullQueue(addr, ch, { max: 1, waitSeconds: 2 });
    await sleep(100);
    await sendQueue(addr, ch, 'd');
    assert.deepEqual((await waiting).messages.map((m) => bytesToString(m.body)), ['d']);
    await sendQueueBatch(addr, ch, ['e', 'f']);
    const ack = await ackAllQueue(addr, ch);
    assert.equal(ack.affectedMessages, 2);
    assert.deepEqual({ ...b.stats().queues[ch] }, { depth: 0, inflight: 0, acked: 6, nacked: 0, delivered: 4, sent: 6 });
    const bad = await pullQueue(addr, ch, { max: 2000 });
    assert.equal(bad.isError, true);
    assert.match(bad.error, /^Error 122/);
});

// QueuesDownstream helper: a bidi stream with a response queue.
function downstream(raw) {
    const call = raw.client.QueuesDownstream(raw.md);
    const got = [];
    const waiters = [];
    call.on('data', (m) => {
        got.push(m);
        while (waiters.length && got.length) waiters.shift()(got.shift());
    });
    call.on('error', () => {});
    return {
        call,
        send: (m) => call.write({ ClientID: 'ds', RequestID: `r${Math.random()}`, ...m }),
        next: (ms = 3000) => new Promise((resolve, reject) => {
            if (got.length) return resolve(got.shift());
            const t = setTimeout(() => reject(new Error('no QueuesDownstream response')), ms);
            waiters.push((m) => { clearTimeout(t); resolve(m); });
            return undefined;
        }),
        pending: () => got.length,
    };
}

test('QueuesDownstream: get, ackRange, nackRange, stream end returns unsettled messages', async () => {
    const ch = 'bds';
    await sendQueueBatch(addr, ch, ['1', '2', '3', '4', '5']);
    const raw = rawClient(addr);
    try {
        const ds = downstream(raw);
        ds.send({ RequestTypeData: 1, Channel: ch, MaxItems: 3, WaitTimeout: 1000 });
        const g = await ds.next();
        assert.equal(g.IsError, false);
        assert.ok(g.TransactionId);
        assert.deepEqual(g.Messages.map((m) => m.Body.toString()), ['1', '2', '3']);
        assert.deepEqual(g.Messages.map((m) => m.Attributes.ReceiveCount), [1, 1, 1]);
        const seq = g.Messages.map((m) => m.Attributes.Sequence);
        ds.send({ RequestTypeData: 3, RefTransactionId: g.TransactionId, SequenceRange: [seq[0]] });
        ds.send({ RequestTypeData: 5, RefTransactionId: g.TransactionId, SequenceRange: [seq[1]] });
        ds.send({ RequestTypeData: 8, RefTransactionId: g.TransactionId });
        const off = await ds.next();
        assert.equal(off.IsError, false, off.Error);
        assert.deepEqual(off.ActiveOffsets, [seq[2]]);
        assert.equal(ds.pending(), 0, 'settles are answered only on error');
        assert.deepEqual({ ...b.stats().queues[ch] }, { depth: 3, inflight: 1, acked: 1, nacked: 1, delivered: 3, sent: 5 });
        // Unknown transaction: an in-band error.
        ds.send({ RequestTypeData: 2, RefTransactionId: 'nope' });
        const e = await ds.next();
        assert.equal(e.IsError, true);
        assert.match(e.Error, /transaction id not found/);
        ds.call.end();
        await sleep(150);
        assert.equal(b.stats().queues[ch].depth, 4);
        assert.equal(b.stats().queues[ch].inflight, 0);
        // Returned messages come back first, in order, with ReceiveCount + 1.
        const ds2 = downstream(raw);
        ds2.send({ RequestTypeData: 1, Channel: ch, MaxItems: 10, WaitTimeout: 100 });
        const g2 = await ds2.next();
        assert.deepEqual(g2.Messages.map((m) => m.Body.toString()), ['2', '3', '4', '5']);
        assert.deepEqual(g2.Messages.map((m) => m.Attributes.ReceiveCount), [2, 2, 1, 1]);
        ds2.send({ RequestTypeData: 2, RefTransactionId: g2.TransactionId });
        // An empty Get answers after WaitTimeout with no messages.
        const t0 = Date.now();
        ds2.send({ RequestTypeData: 1, Channel: ch, MaxItems: 1, WaitTimeout: 200 });
        const g3 = await ds2.next();
        assert.equal(g3.Messages.length, 0);
        assert.ok(Date.now() - t0 >= 180);
        ds2.call.end();
        await sleep(50);
        assert.deepEqual({ ...b.stats().queues[ch] }, { depth: 0, inflight: 0, acked: 5, nacked: 1, delivered: 7, sent: 5 });
    } finally {
        raw.close();
    }
});

test('QueuesDownstream: a waiting Get returns as soon as MaxItems arrived; reQueue moves messages', async () => {
    const raw = rawClient(addr);
    try {
        const ds = downstream(raw);
        ds.send({ RequestTypeData: 1, Channel: 'bw', MaxItems: 2, WaitTimeout: 3000 });
        await sleep(50);
        const t0 = Date.now();
        await sendQueueBatch(addr, 'bw', ['x', 'y']);
        const g = await ds.next();
        assert.ok(Date.now() - t0 < 1000);
        assert.equal(g.Messages.length, 2);
        ds.send({ RequestTypeData: 6, RefTransactionId: g.TransactionId, ReQueueChannel: 'bw.dlq' });
        await sleep(100);
        assert.equal(b.stats().queues['bw.dlq'].depth, 2);
        assert.equal(b.stats().queues.bw.inflight, 0);
        ds.call.end();
    } finally {
        raw.close();
    }
});

test('StreamQueueMessage (kubemq-js transaction): ack, reject returns the message', async () => {
    const ch = 'btx';
    await sendQueueBatch(addr, ch, ['one', 'two']);
    const qc = new kubemq.QueuesClient({ address: addr, clientId: 'tx-test' });
    const take = () => new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('no transaction message')), 3000);
        qc.transaction({ channel: ch, waitTimeoutSeconds: 1, visibilitySeconds: 10 }, (err, msg) => {
            if (err) { clearTimeout(t); reject(err); } else if (msg) { clearTimeout(t); resolve(msg); }
        }).catch(() => {});
    });
    try {
        const m1 = await take();
        assert.equal(bytesToString(m1.message.body), 'one');
        assert.equal(b.stats().queues[ch].inflight, 1);
        await m1.ack();
        const m2 = await take();
        assert.equal(bytesToString(m2.message.body), 'two');
        await m2.reject();
        await sleep(50);
        assert.deepEqual({ ...b.stats().queues[ch] }, { depth: 1, inflight: 0, acked: 1, nacked: 1, delivered: 2, sent: 2 });
        const m3 = await take();
        assert.equal(bytesToString(m3.message.body), 'two');
        assert.equal(m3.message.attributes.receiveCount, 2);
        await m3.ack();
        await sleep(50);
        assert.equal(b.stats().queues[ch].acked, 2);
    } finally {
        qc.grpcClient.close();
    }
});

test('token: every RPC but Ping needs authorization', async () => {
    const tb = await startBroker({ token: 'sekret' });
    const a = tb.address();
    try {
        await ping(a); // kubemq-js sends no token on Ping
        await assert.rejects(publishEvent(a, 'e', 'x'), (e) => e.code === grpc.status.UNAUTHENTICATED);
        await assert.rejects(publishEvent(a, 'e', 'x', { token: 'wrong' }), (e) => e.code === grpc.status.UNAUTHENTICATED);
        assert.equal((await publishEvent(a, 'e', 'x', { token: 'sekret' })).sent, true);
        const raw = rawClient(a);
        try {
            const s = raw.client.SubscribeToRequests({ ClientID: 'c', Channel: 'q', SubscribeTypeData: 4 }, raw.md);
            const err = await new Promise((resolve) => { s.on('error', resolve); s.on('data', () => {}); });
            assert.equal(err.code, grpc.status.UNAUTHENTICATED);
        } finally {
            raw.close();
        }
    } finally {
        await tb.close();
    }
});

test('TLS: clients trusting the test CA connect, plaintext clients do not', async () => {
    const certs = makeCerts();
    const tb = await startBroker({ tls: { cert: fs.readFileSync(certs.cert), key: fs.readFileSync(certs.key) } });
    const a = tb.address();
    try {
        assert.equal((await ping(a, { ca: certs.ca })).host, 'kk-test-broker');
        assert.equal((await publishEvent(`localhost:${tb.grpcPort}`, 'e', 'x', { ca: certs.ca })).sent, true);
        const raw = rawClient(a);
        try {
            await assert.rejects(callUnary(raw, 'Ping', {}, 1000));
        } finally {
            raw.close();
        }
    } finally {
        await tb.close();
    }
});

test('broker process: JSON ports line, control stop/start/reset, SIGTERM exit', async () => {
    const bp = await brokerProcess(['--port', '0', '--control-port', '0']);
    try {
        assert.ok(bp.grpcPort > 0 && bp.controlPort > 0);
        await ping(bp.address);
        await sendQueue(bp.address, 'cq', 'x');
        let st = await bp.stats();
        assert.equal(st.running, true);
        assert.equal(st.pings, 1);
        assert.equal(st.queues.cq.depth, 1);
        // A live subscription is dropped by /stop.
        const sub = await subscribeEvents(bp.address, 'ce', '', { settleMs: 200 });
        assert.equal((await bp.stats()).subscribers.ce, 1);
        await bp.control('stop');
        st = await bp.stats();
        assert.equal(st.running, false);
        assert.deepEqual(st.subscribers, {});
        await sleep(100);
        assert.equal(sub.errors.length, 1, 'subscriber saw the stream end');
        sub.close();
        await assert.rejects(ping(bp.address));
        await bp.control('start');
        assert.equal((await ping(bp.address)).host, 'kk-test-broker');
        await bp.control('reset');
        st = await bp.stats();
        assert.equal(st.pings, 0);
        assert.deepEqual(st.queues, {});
    } finally {
        assert.deepEqual(await bp.stop(), { code: 0, signal: null });
    }
});

// End to end through the gateway: test broker -> kubemq-kinesis (every source kind) -> built-in
// `null` target (success, metadata {"result":"ok"}), as connector-behaviour.md §4 and §8 describe.
// Skips cleanly when ${KK_BUILD_DIR}/kubemq-kinesis has not been built; fails when it misbehaves.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { startBroker, brokerProcess, brokerControl } from './lib/broker.mjs';
import { makeCerts } from './lib/certs.mjs';
import { startGateway, ready, freePort, haveGateway, gatewayPath } from './lib/gateway.mjs';
import {
    request, sendQuery, sendCommand, publishEvent, publishEventStore, sendQueueBatch, pullQueue, subscribeEvents,
    bytesToString, sleep,
} from './lib/kubemq.mjs';
import { until } from './lib/procs.mjs';

const skip = haveGateway() ? false : `gateway binary ${gatewayPath()} is missing (build it: ninja -C <builddir>)`;

const PUT = request({ method: 'put_record', stream_name: 's', partition_key: 'k' }, Buffer.from('hello'));

let broker;
let addr;
before(async () => {
    if (skip) return;
    broker = await startBroker({});
    addr = broker.address();
});
after(async () => {
    await broker?.close();
});

// Config text: YAML whose `bindings` value is a JSON flow sequence (JSON is valid YAML).
function config(apiPort, bindings) {
    return `apiPort: ${apiPort}\nlogLevel: debug\nshutdown_timeout_seconds: 2\nbindings: ${JSON.stringify(bindings)}\n`;
}

function binding(name, kind, props, extra = {}) {
    return { name, source: { kind, properties: { address: addr, client_id: `gw-${name}`, ...props } },
        target: { kind: 'null' }, ...extra };
}

// Starts a gateway with these bindings, waits for /ready, runs fn(gw), then stops it with SIGTERM
// and checks it exits 0.  The log is attached to any failure.
async function withGateway(bindings, fn, { waitReady = true } = {}) {
    const gw = await startGateway({ config: config(await freePort(), bindings) });
    let failed = true;
    try {
        if (waitReady) assert.ok(await ready(gw, 10000), 'gateway /ready within 10 s');
        await fn(gw);
        failed = false;
    } catch (e) {
        e.message += `\n--- gateway log (tail) ---\n${gw.logs().slice(-3000)}`;
        throw e;
    } finally {
        const st = await gw.stop();
        if (!failed) assert.deepEqual(st, { code: 0, signal: null }, `clean exit on SIGTERM; log tail:\n${gw.logs().slice(-2000)}`);
    }
}

// Response JSON of the gateway (connector-behaviour.md §3.2): field order metadata, data, is_error, error.
function assertResponseJson(text, { isError }) {
    const r = JSON.parse(text);
    assert.deepEqual(Object.keys(r), ['metadata', 'data', 'is_error', 'error']);
    assert.equal(r.is_error, isError);
    assert.equal(typeof r.metadata, 'object');
    assert.notEqual(r.metadata, null);
    return r;
}

test('query: the reply body is the Response JSON, Executed true', { skip }, async () => {
    await withGateway([binding('q1', 'kubemq.query', { channel: 'q1' })], async () => {
        const { response } = await sendQuery(addr, 'q1', PUT, 5000);
        assert.equal(response.executed, true);
        assert.equal(response.error, '');
        const r = assertResponseJson(bytesToString(response.body), { isError: false });
        assert.deepEqual(r.metadata, { result: 'ok' });
        assert.equal(r.error, '');
    });
});

test('query: an invalid JSON body gets is_error and "invalid request format, "', { skip }, async () => {
    await withGateway([binding('q2', 'kubemq.query', { channel: 'q2' })], async () => {
        const { response } = await sendQuery(addr, 'q2', 'hello, not json', 5000);
        assert.equal(response.executed, true, 'query source sends Executed=true even on failure (§4.3)');
        const r = assertResponseJson(bytesToString(response.body), { isError: true });
        assert.deepEqual(r.metadata, {});
        assert.equal(r.data, null);
        assert.match(r.error, /^invalid request format, /);
    });
});

test('command: executed true and no body; an invalid body gives executed false', { skip }, async () => {
    await withGateway([binding('c1', 'kubemq.command', { channel: 'c1' })], async () => {
        const ok = await sendCommand(addr, 'c1', PUT, 5000);
        assert.equal(ok.executed, true);
        assert.equal(ok.error, '');
        assert.equal(ok.body, undefined);
        const bad = await sendCommand(addr, 'c1', '{"metadata":', 5000);
        assert.equal(bad.executed, false);
        assert.match(bad.error, /^invalid request format, /);
    });
});

test('events with response_channel: the Response JSON is published there', { skip }, async () => {
    await withGateway([binding('e1', 'kubemq.events', { channel: 'e1', response_channel: 'e1.resp' })], async () => {
        const col = await subscribeEvents(addr, 'e1.resp');
        try {
            await publishEvent(addr, 'e1', PUT);
            await publishEvent(addr, 'e1', 'not json');
            const msgs = await col.waitFor(2, 5000);
            const rs = msgs.map((m) => JSON.parse(m.text));
            const good = rs.find((r) => !r.is_error);
            const bad = rs.find((r) => r.is_error);
            assert.ok(good && bad, `one success and one failure, got ${msgs.map((m) => m.text)}`);
            assertResponseJson(msgs[rs.indexOf(good)].text, { isError: false });
            assert.deepEqual(good.metadata, { result: 'ok' });
            assert.match(bad.error, /^invalid request format, /);
        } finally {
            col.close();
        }
    });
});

test('events-store with start_from: first gets the history', { skip }, async () => {
    for (let i = 0; i < 3; i++) await publishEventStore(addr, 'es1', PUT);
    await withGateway([binding('es1', 'kubemq.events-store', { channel: 'es1', response_channel: 'es1.resp', start_from: 'first' })], async () => {
        // Responses go out as events-store messages; read them from the first one.
        const col = await subscribeEvents(addr, 'es1.resp', '', { store: true, startType: 2 });
        try {
            await publishEventStore(addr, 'es1', PUT);
            const msgs = await col.waitFor(4, 5000);
            for (const m of msgs) assert.deepEqual(JSON.parse(m.text).metadata, { result: 'ok' });
            await sleep(200);
            assert.equal(col.messages.length, 4, 'each stored event handled once');
        } finally {
            col.close();
        }
    });
});

test('queue: N messages sent -> N handled, queue empty and nothing unacked', { skip }, async () => {
    const N = 30;
    await withGateway([binding('qu1', 'kubemq.queue', { channel: 'qu1', batch_size: 10, wait_timeout: 1 })], async () => {
        await sendQueueBatch(addr, 'qu1', Array.from({ length: N }, () => PUT));
        const done = await until(() => {
            const q = broker.stats().queues.qu1;
            return q && q.acked === N && q.depth === 0 && q.inflight === 0;
        }, 10000, 50);
        const q = broker.stats().queues.qu1;
        assert.ok(done, `all ${N} acked: ${JSON.stringify(q)}`);
        assert.equal(q.nacked, 0);
        assert.equal(q.delivered, N);
    });
});

test('queue with response_channel: each Response JSON is queued there', { skip }, async () => {
    await withGateway([binding('qu2', 'kubemq.queue', { channel: 'qu2', batch_size: 5, wait_timeout: 1, response_channel: 'qu2.resp' })], async () => {
        await sendQueueBatch(addr, 'qu2', [PUT, PUT]);
        const ok = await until(() => broker.stats().queues['qu2.resp']?.depth === 2, 5000, 50);
        assert.ok(ok, `2 responses queued: ${JSON.stringify(broker.stats().queues)}`);
        assert.equal(broker.stats().queues.qu2.acked, 2);
        const { messages } = await pullQueue(addr, 'qu2.resp', { max: 10 });
        assert.equal(messages.length, 2);
        for (const m of messages) assert.deepEqual(assertResponseJson(bytesToString(m.body), { isError: false }).metadata, { result: 'ok' });
    });
});

// The gateway caps live requests per binding and stops consuming (no WINDOW_UPDATE) at the cap.  The
// broker's `inflight` counts every request written to the subscriber and not yet answered, so it
// includes requests the gateway holds in its receive window beyond the cap; `flushed_inflight`
// counts only writes that flow control let through completely.  The gateway's per-stream receive
// window is 1 MiB (src/kubemq/client.c STREAM_WINDOW), so with ~342 KB requests a paused source
// bounds it to cap + 3 (+1 for a message that completes as the window reopens).
test('concurrency: the source stops consuming at its cap (broker-side flushed in-flight)', { skip }, async (t) => {
    const conc = 2;
    const big = request({ method: 'put_record', stream_name: 's', partition_key: 'k' }, Buffer.alloc(256 * 1024, 7));
    await withGateway([binding('cc', 'kubemq.query', { channel: 'cc', concurrency: conc }),
        binding('ccbig', 'kubemq.query', { channel: 'ccbig', concurrency: conc })], async () => {
        const small = await Promise.all(Array.from({ length: 50 }, () => sendQuery(addr, 'cc', PUT, 10000)));
        for (const { json } of small) assert.equal(json.is_error, false);
        const s1 = { ...broker.stats().requests.cc };
        const large = await Promise.all(Array.from({ length: 30 }, () => sendQuery(addr, 'ccbig', big, 20000)));
        for (const { json } of large) assert.equal(json.is_error, false);
        const st = broker.stats().requests.ccbig;
        t.diagnostic(`concurrency ${conc}: 50 small parallel queries -> ${JSON.stringify(s1)}`);
        t.diagnostic(`then 30 parallel ~342 KB queries -> ${JSON.stringify(st)}`);
        assert.equal(s1.answered, 50);
        assert.equal(st.answered, 30);
        const bound = conc + Math.ceil((1 << 20) / big.length) + 1;
        assert.ok(st.max_flushed_inflight <= bound, `flushed in-flight ${st.max_flushed_inflight} <= ${bound}`);
    });
});

// flow_control: exact gives the broker message credit instead of a byte window, so the count the
// broker keeps (written completely to the subscriber, not answered) never exceeds `concurrency`.  A
// binding rate limit keeps requests in flight long enough for the broker to try to push more.  The
// same load with flow_control: window shows the broker writing past the cap, so the measurement can
// tell the two apart.
async function capRun(name, props, { n = 40, big = 0 } = {}) {
    const bigReq = request({ method: 'put_record', stream_name: 's', partition_key: 'k' }, Buffer.alloc(200 * 1024, 7));
    await withGateway([binding(name, 'kubemq.query', { channel: name, ...props },
        { properties: { rate_per_second: 100 } })], async () => {
        const sends = Array.from({ length: n }, () => sendQuery(addr, name, PUT, 20000));
        for (let i = 0; i < big; i++) sends.push(sendQuery(addr, name, bigReq, 20000));
        for (const { json } of await Promise.all(sends)) assert.equal(json.is_error, false);
    });
    return { ...broker.stats().requests[name] };
}

test('concurrency: flow_control exact: the broker never has more than `concurrency` unanswered', { skip }, async (t) => {
    const st = await capRun('cx1', { concurrency: 3, flow_control: 'exact' }, { n: 40, big: 10 });
    t.diagnostic(`exact, concurrency 3, 40 small + 10 x 200 KiB parallel queries -> ${JSON.stringify(st)}`);
    assert.equal(st.answered, 50);
    assert.equal(st.timeouts, 0);
    assert.ok(st.max_inflight > 3, `the broker had more to send than the cap (${st.max_inflight})`);
    assert.ok(st.max_flushed_inflight <= 3, `broker-side in flight ${st.max_flushed_inflight} <= 3`);
    assert.ok(st.max_flushed_inflight >= 2, `the cap was used (${st.max_flushed_inflight})`);

    // 5 slots over 2 subscriptions: shares 3 and 2 (the water-fill's remainder).
    const st2 = await capRun('cx2', { concurrency: 5, sources: 2, flow_control: 'exact' }, { n: 40 });
    t.diagnostic(`exact, concurrency 5, sources 2, 40 parallel queries -> ${JSON.stringify(st2)}`);
    assert.equal(st2.answered, 40);
    assert.ok(st2.max_flushed_inflight <= 5, `broker-side in flight ${st2.max_flushed_inflight} <= 5`);
    assert.ok(st2.max_flushed_inflight >= 4, `both shares used (${st2.max_flushed_inflight})`);
    const per = Object.entries(broker.stats().clients).filter(([id]) => id.startsWith('gw-cx2'));
    assert.ok(per.length === 2 && per.every(([, c]) => c.requests > 0), `both subscriptions served: ${JSON.stringify(per)}`);

    const sw = await capRun('cw1', { concurrency: 3, flow_control: 'window' }, { n: 40 });
    t.diagnostic(`window, concurrency 3, 40 parallel queries -> ${JSON.stringify(sw)}`);
    assert.equal(sw.answered, 40);
    assert.ok(sw.max_flushed_inflight > 3, `a byte window lets the broker write past the cap (${sw.max_flushed_inflight})`);
});

// Requests made through the HTTP API take the binding's slots too: when one takes the last slot the
// subscription pauses, so a query arriving meanwhile waits for a slot instead of getting "gateway at its
// concurrency limit".  Both flow_control modes.
test('concurrency: HTTP API requests filling the cap make queries wait, not fail', { skip }, async (t) => {
    for (const fc of ['exact', 'window']) {
        const name = `capi-${fc}`;
        await withGateway([binding(name, 'kubemq.query', { channel: name, concurrency: 2, flow_control: fc },
            { properties: { rate_per_second: 4 } })], async (gw) => {
            const payload = { metadata: { method: 'put_record' }, data: Buffer.from('x').toString('base64') };
            const api = [0, 1, 2].map(() => gw.post('/bindings/request', { binding: name, payload }));
            await sleep(100);
            const qs = await Promise.all([0, 1, 2].map(() => sendQuery(addr, name, PUT, 10000)));
            for (const q of qs) assert.equal(q.json.is_error, false, `${fc}: ${JSON.stringify(q.json)}`);
            for (const r of await Promise.all(api)) assert.equal(r.status, 200);
            const st = broker.stats().requests[name];
            t.diagnostic(`${fc}: ${JSON.stringify(st)}`);
            assert.equal(st.answered, 3);
            if (fc === 'exact') assert.ok(st.max_flushed_inflight <= 2, `broker-side ${st.max_flushed_inflight} <= 2`);
        });
    }
});

test('groups: two gateways in one group share 40 queries', { skip }, async () => {
    const mk = (n) => [binding('gq', 'kubemq.query', { channel: 'gq', group: 'g', client_id: `gw-g${n}` })];
    const g1 = await startGateway({ config: config(await freePort(), mk(1)) });
    let g2;
    try {
        g2 = await startGateway({ config: config(await freePort(), mk(2)) });
        assert.ok(await ready(g1) && await ready(g2), 'both ready');
        assert.ok(await until(() => broker.stats().subscribers.gq === 2, 5000), 'both subscribed');
        const replies = await Promise.all(Array.from({ length: 40 }, () => sendQuery(addr, 'gq', PUT, 5000)));
        for (const { json } of replies) assert.equal(json.is_error, false);
        assert.equal(broker.stats().requests.gq.answered, 40);
        // Round-robin in the broker: each gateway's subscription got about half.
        const per = Object.entries(broker.stats().clients).filter(([id]) => /gw-g[12]/.test(id));
        const n1 = per.filter(([id]) => id.includes('gw-g1')).reduce((s, [, c]) => s + c.requests, 0);
        const n2 = per.filter(([id]) => id.includes('gw-g2')).reduce((s, [, c]) => s + c.requests, 0);
        assert.equal(n1 + n2, 40);
        assert.ok(n1 >= 15 && n2 >= 15, `both members served: ${n1} / ${n2}`);
        await g2.stop();
        assert.ok(await until(() => broker.stats().subscribers.gq === 1, 5000), 'g2 unsubscribed');
        const { json } = await sendQuery(addr, 'gq', PUT, 5000);
        assert.equal(json.is_error, false);
    } finally {
        await g2?.stop();
        await g1.stop();
    }
});

test('auth token: accepted when it matches, gateway not ready when it does not', { skip }, async () => {
    const tb = await startBroker({ token: 'tok-123' });
    const a = tb.address();
    const mk = (tok) => [{ name: 'tq', source: { kind: 'kubemq.query', properties: { address: a, channel: 'tq', client_id: 'gw-t', auth_token: tok } },
        target: { kind: 'null' } }];
    try {
        await withGateway(mk('tok-123'), async () => {
            const { json } = await sendQuery(a, 'tq', PUT, 5000, { token: 'tok-123' });
            assert.deepEqual(json.metadata, { result: 'ok' });
        });
        await withGateway(mk('wrong'), async (gw) => {
            assert.equal(await ready(gw, 1500), false, '/ready must not be 200 with a rejected token');
            assert.equal(tb.stats().subscribers.tq, undefined);
            assert.doesNotMatch(gw.logs(), /wrong/, 'the token never reaches the log');
        }, { waitReady: false });
    } finally {
        await tb.close();
    }
});

test('reconnect: queries work again within 10 s after broker stop/start', { skip }, async (t) => {
    const bp = await brokerProcess([]);
    const a = bp.address;
    try {
        // rqx: message credit (flow_control exact) must outlive the connection: its unused credit opens
        // the new stream's window.
        const b = [{ name: 'rq', source: { kind: 'kubemq.query', properties: { address: a, channel: 'rq', client_id: 'gw-r' } },
            target: { kind: 'null' } },
        { name: 'rqx', source: { kind: 'kubemq.query', properties: { address: a, channel: 'rqx', client_id: 'gw-rx', concurrency: 2,
            flow_control: 'exact' } }, target: { kind: 'null' } }];
        await withGateway(b, async () => {
            assert.equal((await sendQuery(a, 'rq', PUT, 3000)).json.is_error, false);
            for (const r of await Promise.all(Array.from({ length: 5 }, () => sendQuery(a, 'rqx', PUT, 3000)))) {
                assert.equal(r.json.is_error, false);
            }
            await bp.control('stop');
            await sleep(300);
            await bp.control('start');
            const t0 = Date.now();
            const ok = await until(async () => {
                try {
                    return (await sendQuery(a, 'rq', PUT, 1000)).json.is_error === false;
                } catch {
                    return false;
                }
            }, 10000, 100);
            assert.ok(ok, 'answered again within 10 s');
            t.diagnostic(`recovered after ${Date.now() - t0} ms`);
            assert.ok(await until(() => bp.stats().then((st) => st.subscribers.rqx === 1), 5000, 100),
                'rqx resubscribed');
            const rx = await Promise.all(Array.from({ length: 5 }, () => sendQuery(a, 'rqx', PUT, 3000)));
            for (const r of rx) assert.equal(r.json.is_error, false);
        });
    } finally {
        await bp.stop();
    }
});

test('TLS to the broker with tls_ca_file', { skip }, async () => {
    const certs = makeCerts();
    const tb = await startBroker({ tls: { cert: fs.readFileSync(certs.cert), key: fs.readFileSync(certs.key) } });
    const a = tb.address();
    try {
        const props = { address: a, channel: 'tlq', client_id: 'gw-tls', tls: true, tls_ca_file: certs.ca };
        await withGateway([{ name: 'tlq', source: { kind: 'kubemq.query', properties: props }, target: { kind: 'null' } }], async () => {
            const { json } = await sendQuery(a, 'tlq', PUT, 5000, { ca: certs.ca });
            assert.deepEqual(json.metadata, { result: 'ok' });
        });
        // sources: 8 over TLS: the 8 clients share one TLS context (the CA bundle parsed once); all
        // of them connect, verify and subscribe, and the stop frees it after the last client.
        const p8 = { ...props, channel: 'tlq8', client_id: 'gw-tls8', sources: 8 };
        await withGateway([{ name: 'tlq8', source: { kind: 'kubemq.query', properties: p8 }, target: { kind: 'null' } }], async (gw) => {
            for (let i = 0; i < 16; i++) {
                const { json } = await sendQuery(a, 'tlq8', PUT, 5000, { ca: certs.ca });
                assert.deepEqual(json.metadata, { result: 'ok' });
            }
            assert.equal((gw.logs().match(/subscribed to tlq8 \(connection \d+\)/g) || []).length, 8);
        });
        // Without the CA the certificate must be rejected (verification is on by default).
        const noCa = { ...props, tls_ca_file: undefined };
        delete noCa.tls_ca_file;
        await withGateway([{ name: 'tlq', source: { kind: 'kubemq.query', properties: noCa }, target: { kind: 'null' } }], async (gw) => {
            assert.equal(await ready(gw, 1500), false, 'untrusted broker certificate: not ready');
        }, { waitReady: false });
    } finally {
        await tb.close();
    }
});

// ---- start positions, resume, queue at-least-once, invalid bodies, raw payloads, sources: N ----

// The null target's Response carries no data, so events are told apart by their bodies: a short
// non-JSON body ("h3") is rejected by the parser and the error Response quotes it in full
// ("invalid request format, ..., error found in #0 byte of ...|h3|..."), so each Response on the
// response channel names the event the source handed to the binding.
function markerOf(text) {
    const r = assertResponseJson(text, { isError: true });
    assert.match(r.error, /^invalid request format, /);
    const m = /\|([a-z]\d+)\|/.exec(r.error);
    assert.ok(m, `the error quotes the body: ${r.error}`);
    return m[1];
}

// Responses of an events-store source are events-store messages: read the response channel from
// its first message, so nothing published before the subscription is missed.
async function collectMarkers(ch, n, ms = 5000) {
    const col = await subscribeEvents(addr, ch, '', { store: true, startType: 2 });
    try {
        await col.waitFor(n, ms).catch(() => {});
        await sleep(300); // duplicates or extras would show up here
        return col.messages.map((m) => markerOf(m.text));
    } finally {
        col.close();
    }
}

test('events-store start_from: new, first, last, sequence:N, time:<RFC3339>, delta:<s>', { skip }, async (t) => {
    const pub = (ch, ...ms) => Promise.all(ms.map((m) => publishEventStore(addr, ch, m)));
    const cases = {
        new: { from: 'new', want: ['x1'] },
        first: { from: 'first', want: ['h1', 'h2', 'h3', 'h4', 'h5', 'x1'] },
        last: { from: 'last', want: ['h5', 'x1'] },
        seq: { from: 'sequence:3', want: ['h3', 'h4', 'h5', 'x1'] },
        time: { from: null, want: ['h3', 'h4', 'h5', 'x1'] },
        delta: { from: 'delta:3', want: ['h3', 'h4', 'h5', 'x1'] },
    };
    const ch = (k) => `sf-${k}`;
    // h1, h2 of `time` and `delta` are older than the start position; the rest are newer.
    for (const k of ['time', 'delta']) for (const m of ['h1', 'h2']) await pub(ch(k), m);
    await sleep(3100);
    const tStart = new Date();
    cases.time.from = `time:${tStart.toISOString()}`;
    await sleep(30);
    for (const k of Object.keys(cases)) {
        const ms = k === 'time' || k === 'delta' ? ['h3', 'h4', 'h5'] : ['h1', 'h2', 'h3', 'h4', 'h5'];
        for (const m of ms) await pub(ch(k), m); // in order: sequences 1..5 follow the marker numbers
    }
    const bs = Object.entries(cases).map(([k, c]) =>
        binding(`sf${k}`, 'kubemq.events-store', { channel: ch(k), response_channel: `${ch(k)}.resp`, start_from: c.from }));
    await withGateway(bs, async () => {
        for (const k of Object.keys(cases)) await pub(ch(k), 'x1');
        const got = await Promise.all(Object.entries(cases).map(([k, c]) => collectMarkers(`${ch(k)}.resp`, c.want.length)));
        Object.keys(cases).forEach((k, i) => {
            t.diagnostic(`${cases[k].from}: ${got[i].join(',')}`);
            assert.deepEqual([...got[i]].sort(), cases[k].want,
                `start_from ${cases[k].from}: exactly these events, once each`);
        });
    });
});

test('events-store resume after a broker restart: nothing skipped, nothing twice', { skip }, async () => {
    const rb = await startBroker({});
    const a = rb.address();
    const ch = 'esr';
    const pub = async (...ms) => { for (const m of ms) await publishEventStore(a, ch, m); };
    const b = [{ name: 'esr', source: { kind: 'kubemq.events-store',
        properties: { address: a, channel: ch, client_id: 'gw-esr', response_channel: 'esr.resp', start_from: 'first' } },
    target: { kind: 'null' } }];
    const respCount = () => rb.broker.store.get('esr.resp')?.events.length ?? 0;
    try {
        await pub('p1', 'p2', 'p3');
        await withGateway(b, async (gw) => {
            await pub('p4', 'p5');
            assert.ok(await until(() => respCount() === 5, 5000), `5 responses before the restart, got ${respCount()}`);
            await brokerControl(rb.controlPort, 'stop');
            await sleep(300);
            await brokerControl(rb.controlPort, 'start');
            // Published before the gateway is back: a resubscription from "new" would skip these,
            // one from "first" would repeat p1..p5; StartAtSequence last+1 gets exactly these.
            await pub('p6', 'p7', 'p8');
            assert.ok(await until(() => rb.stats().subscribers[ch] === 1, 10000), 'gateway resubscribed');
            assert.ok(await ready(gw, 5000), 'ready again');
            await pub('p9');
            await until(() => respCount() >= 9, 5000);
            await sleep(300);
            const col = await subscribeEvents(a, 'esr.resp', '', { store: true, startType: 2 });
            try {
                await col.waitFor(respCount(), 3000);
                // Requests run concurrently, so Responses may be published out of order: compare as sets.
                const got = col.messages.map((m) => markerOf(m.text)).sort();
                assert.deepEqual(got, ['p1', 'p2', 'p3', 'p4', 'p5', 'p6', 'p7', 'p8', 'p9'], 'each event once');
            } finally {
                col.close();
            }
        });
    } finally {
        await rb.close();
    }
});

test('queue at least once: 200 messages, batch_size 10, sources 2: each handled once', { skip }, async () => {
    const N = 200;
    const props = { channel: 'qal', batch_size: 10, wait_timeout: 1, sources: 2, response_channel: 'qal.resp' };
    await withGateway([binding('qal', 'kubemq.queue', props)], async (gw) => {
        for (const i of [0, 1]) {
            assert.match(gw.logs(), new RegExp(`polling queue qal \\(connection ${i}\\)`), 'both connections poll');
        }
        for (let i = 0; i < N; i += 50) await sendQueueBatch(addr, 'qal', Array.from({ length: 50 }, () => PUT));
        const done = await until(() => {
            const q = broker.stats().queues.qal;
            return q && q.acked === N && q.depth === 0 && q.inflight === 0;
        }, 15000, 50);
        await sleep(200);
        const st = broker.stats().queues;
        assert.ok(done, `all ${N} acked: ${JSON.stringify(st.qal)}`);
        assert.equal(st.qal.sent, N);
        assert.equal(st.qal.delivered, N, 'no message delivered twice');
        assert.equal(st.qal.nacked, 0);
        assert.equal(st.qal.acked, N);
        assert.equal(st['qal.resp']?.depth, N, 'exactly one Response per message');
    });
});

test('queue: an invalid body is nacked and stays queued; valid messages behind it are acked', { skip }, async () => {
    const props = { channel: 'qinv', batch_size: 10, wait_timeout: 1, response_channel: 'qinv.resp' };
    await withGateway([binding('qinv', 'kubemq.queue', props)], async () => {
        await sendQueueBatch(addr, 'qinv', ['q1', PUT, PUT, PUT, PUT]);
        const first = await until(() => {
            const q = broker.stats().queues.qinv;
            return q && q.acked === 4 && q.nacked >= 1 && q;
        }, 5000, 50);
        assert.ok(first, `4 acked, the invalid one nacked: ${JSON.stringify(broker.stats().queues.qinv)}`);
        // After the nack pause (1 s) the source keeps polling: later valid messages still go through.
        await sendQueueBatch(addr, 'qinv', [PUT, PUT, PUT]);
        const later = await until(() => broker.stats().queues.qinv.acked === 7, 5000, 50);
        const q = broker.stats().queues.qinv;
        assert.ok(later, `7 acked: ${JSON.stringify(q)}`);
        assert.equal(q.depth + q.inflight, 1, 'the invalid message is back in the queue (or redelivered), not acked');
        assert.equal(q.sent, 8);
        const resp = broker.stats().queues['qinv.resp'];
        assert.ok(resp && resp.depth >= 8, `Responses queued: ${JSON.stringify(resp)}`);
        const { messages } = await pullQueue(addr, 'qinv.resp', { max: 32 });
        const rs = messages.map((m) => JSON.parse(bytesToString(m.body)));
        assert.equal(rs.filter((r) => !r.is_error).length, 7);
        const bad = rs.filter((r) => r.is_error);
        assert.ok(bad.length >= 1);
        for (const m of messages.filter((x, i) => rs[i].is_error)) assert.equal(markerOf(bytesToString(m.body)), 'q1');
    });
});

test('events-store: an invalid body publishes the error Response', { skip }, async () => {
    const b = binding('esinv', 'kubemq.events-store', { channel: 'esinv', response_channel: 'esinv.resp' });
    await withGateway([b], async () => {
        await publishEventStore(addr, 'esinv', 'e1');
        await publishEventStore(addr, 'esinv', PUT);
        const col = await subscribeEvents(addr, 'esinv.resp', '', { store: true, startType: 2 });
        try {
            // Requests run concurrently, so their Responses may be published in either order.
            const msgs = await col.waitFor(2, 5000);
            const isErr = (m) => JSON.parse(m.text).is_error === true;
            const bad = msgs.filter(isErr);
            const good = msgs.filter((m) => !isErr(m));
            assert.equal(bad.length, 1, 'one error Response');
            assert.equal(good.length, 1, 'one success Response');
            assert.equal(markerOf(bad[0].text), 'e1');
            assert.deepEqual(assertResponseJson(good[0].text, { isError: false }).metadata, { result: 'ok' });
        } finally {
            col.close();
        }
    });
});

test('do_not_parse_payload: a non-JSON query body goes to the target as data and succeeds', { skip }, async () => {
    await withGateway([binding('raw', 'kubemq.query', { channel: 'rawq', do_not_parse_payload: true }),
        binding('parsed', 'kubemq.query', { channel: 'parsedq' })], async () => {
        const { response } = await sendQuery(addr, 'rawq', 'hello, not json', 5000);
        assert.equal(response.executed, true);
        const r = assertResponseJson(bytesToString(response.body), { isError: false });
        assert.deepEqual(r.metadata, { result: 'ok' });
        assert.equal(r.error, '');
        // The same body without the option is rejected: the option is what made the difference.
        const { json } = await sendQuery(addr, 'parsedq', 'hello, not json', 5000);
        assert.equal(json.is_error, true);
    });
});

test('sources: 3 without a group: 60 queries, each answered once, spread over the 3 connections', { skip }, async (t) => {
    const N = 60;
    await withGateway([binding('s3', 'kubemq.query', { channel: 's3q', sources: 3 })], async () => {
        assert.ok(await until(() => broker.stats().subscribers.s3q === 3, 5000), 'three subscriptions');
        const replies = await Promise.all(Array.from({ length: N }, () => sendQuery(addr, 's3q', PUT, 5000)));
        for (const { response, json } of replies) {
            assert.equal(response.executed, true);
            assert.equal(json.is_error, false);
        }
        await sleep(200);
        const st = broker.stats();
        const { sent, answered, timeouts } = st.requests.s3q;
        assert.deepEqual({ sent, answered, timeouts }, { sent: N, answered: N, timeouts: 0 });
        const per = Object.entries(st.clients).filter(([id]) => id.startsWith('gw-s3'));
        t.diagnostic(`per connection: ${JSON.stringify(Object.fromEntries(per))}`);
        assert.equal(per.length, 3, 'three distinct client ids');
        // Without a (generated) group each subscriber would get every query: 3 x 60 deliveries.
        assert.equal(per.reduce((s, [, c]) => s + c.requests, 0), N, 'each query delivered to one connection');
        for (const [id, c] of per) assert.ok(c.requests >= 10, `${id} served its share: ${c.requests}`);
    });
});

// As kubemq-targets' pause after a NAck, the source holds a nack for a second before sending it
// (src/sources/queue.c), so a message the target keeps failing comes back at most once a second, even
// though the next poll is already waiting at the broker.
test('queue: after a nack the message is not redelivered for about a second', {
    skip,
}, async (t) => {
    const props = { channel: 'qpz', batch_size: 1, wait_timeout: 1 };
    await withGateway([binding('qpz', 'kubemq.queue', props)], async () => {
        await sendQueueBatch(addr, 'qpz', ['z1']);
        assert.ok(await until(() => broker.stats().queues.qpz?.nacked >= 1, 3000, 10), 'first nack');
        // Delivery times, sampled every 10 ms for 2.5 s: consecutive ones must be ~1 s apart.
        const times = [];
        let last = broker.stats().queues.qpz.delivered;
        for (const t0 = Date.now(); Date.now() - t0 < 2500; await sleep(10)) {
            const d = broker.stats().queues.qpz.delivered;
            for (let k = last; k < d; k++) times.push(Date.now() - t0); // two in one sample: gap 0
            last = d;
        }
        const gaps = times.slice(1).map((x, i) => x - times[i]);
        t.diagnostic(`redeliveries at ${times.join(', ')} ms after the first nack`);
        assert.ok(times.length >= 2, 'the nacked message comes back');
        assert.ok(Math.min(...gaps) >= 500, `at least ~1 s between redeliveries, gaps ${gaps.join(', ')} ms`);
    });
});

// End to end through the gateway: test broker -> kubemq-kinesis (every source kind) -> built-in
// `null` target (success, metadata {"result":"ok"}), as connector-behaviour.md §4 and §8 describe.
// Skips cleanly when ${KK_BUILD_DIR}/kubemq-kinesis has not been built; fails when it misbehaves.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { startBroker, brokerProcess } from './lib/broker.mjs';
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
        const b = [{ name: 'rq', source: { kind: 'kubemq.query', properties: { address: a, channel: 'rq', client_id: 'gw-r' } },
            target: { kind: 'null' } }];
        await withGateway(b, async () => {
            assert.equal((await sendQuery(a, 'rq', PUT, 3000)).json.is_error, false);
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

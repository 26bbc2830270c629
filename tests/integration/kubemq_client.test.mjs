// The C KubeMQ client (src/kubemq) against the test broker, through tests/tools/kmq-probe.
// kubemq-js 1.2.3 plays the other side (sender/requester); the broker's control API checks counts.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startBroker } from './lib/broker.mjs';
import { makeCerts } from './lib/certs.mjs';
import { sendQuery, publishEvent, publishEventStore, sendQueue } from './lib/kubemq.mjs';
import { track, waitExit, sleep, until } from './lib/procs.mjs';

const BUILD = process.env.KK_BUILD_DIR || 'build';
const PROBE = path.resolve(BUILD, 'tests/tools/kmq-probe');

// Runs the probe; lines are parsed JSON, stderr kept for messages.
function probe(port, args, { timeoutMs = 20000 } = {}) {
    // KK_PROBE_WRAPPER="valgrind -q --leak-check=full --error-exitcode=9" runs every probe under valgrind.
    const wrap = (process.env.KK_PROBE_WRAPPER || '').split(' ').filter(Boolean);
    const argv = [...wrap, PROBE, '--port', String(port), '--timeout-ms', String(timeoutMs), ...args];
    const proc = track(spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] }));
    const p = { proc, lines: [], stderr: '', buf: '' };
    proc.stdout.on('data', (d) => {
        p.buf += d;
        let i;
        while ((i = p.buf.indexOf('\n')) >= 0) {
            const l = p.buf.slice(0, i);
            p.buf = p.buf.slice(i + 1);
            try { p.lines.push({ t: Date.now(), ...JSON.parse(l) }); } catch { p.lines.push({ raw: l }); }
        }
    });
    proc.stderr.on('data', (d) => { p.stderr += d; });
    p.events = (name) => p.lines.filter((l) => l.event === name);
    p.waitFor = async (pred, ms = 5000, what = 'probe line') => {
        const v = await until(() => p.lines.find(pred), ms, 20);
        assert.ok(v, `${what} within ${ms} ms; stdout ${JSON.stringify(p.lines)}; stderr ${p.stderr}`);
        return v;
    };
    p.exit = async (ms = 25000) => {
        const r = await waitExit(proc, ms);
        return r;
    };
    return p;
}

// Every probe ends with the loop closed cleanly (all handles closed, uv_loop_close == 0).
function assertClosed(p) {
    const c = p.events('closed');
    assert.equal(c.length, 1, `closed line; stderr ${p.stderr}`);
    assert.equal(c[0].loop_close, 0);
}

let broker;
let port;
let addr;

before(async () => {
    assert.ok(fs.existsSync(PROBE), `${PROBE} is built`);
    broker = await startBroker({ port: 0 });
    port = broker.grpcPort;
    addr = `127.0.0.1:${port}`;
});

after(async () => {
    if (broker) await broker.close();
});

test('ping: unary call, broker host/version, clean loop close', async () => {
    const p = probe(port, ['ping']);
    const r = await p.exit();
    assert.equal(r.code, 0, p.stderr);
    const ping = p.events('ping')[0];
    assert.equal(ping.host, 'kk-test-broker');
    assert.ok(ping.version.length > 0);
    assert.match(p.stderr, /connected to 127\.0\.0\.1:\d+ \(broker host kk-test-broker/);
    assertClosed(p);
});

test('query round trip: subscribe to queries and answer each', async () => {
    const p = probe(port, ['respond', '--channel', 'q.rt', '--count', '5']);
    await p.waitFor((l) => l.event === 'subscribed');
    const rs = await Promise.all([0, 1, 2, 3, 4].map((i) => sendQuery(addr, 'q.rt', `q${i}`)));
    rs.forEach((r, i) => {
        assert.equal(r.response.executed, true);
        assert.equal(Buffer.from(r.response.body).toString(), `re:q${i}`);
    });
    assert.equal((await p.exit()).code, 0, p.stderr);
    const reqs = p.events('request');
    assert.equal(reqs.length, 5);
    for (const q of reqs) assert.match(q.reply, /^_INBOX\./);
    const st = broker.stats().requests['q.rt'];
    assert.equal(st.answered, 5);
    assert.equal(st.inflight, 0);
    assertClosed(p);
});

test('command round trip', async () => {
    const p = probe(port, ['respond', '--commands', '--channel', 'c.rt', '--count', '2']);
    await p.waitFor((l) => l.event === 'subscribed');
    const { sendCommand } = await import('./lib/kubemq.mjs');
    for (let i = 0; i < 2; i++) assert.equal((await sendCommand(addr, 'c.rt', `c${i}`)).executed, true);
    assert.equal((await p.exit()).code, 0, p.stderr);
    assertClosed(p);
});

test('pause/resume: paused subscription stops acknowledging, held bytes bounded by the window', async () => {
    const N = 30;
    const SIZE = 100000; // 3 MB in total, three times the 1 MiB stream window
    const p = probe(port, ['respond', '--channel', 'q.pause', '--count', String(N), '--pause-after', '1',
        '--pause-ms', '1500']);
    await p.waitFor((l) => l.event === 'subscribed');
    const body = Buffer.alloc(SIZE, 0x61);
    const all = Promise.all([...Array(N).keys()].map(() => sendQuery(addr, 'q.pause', body, 15000)));
    await p.waitFor((l) => l.event === 'pause');
    await sleep(800);
    // Paused: nothing more delivered although the broker has sent every request to the stream.
    assert.equal(p.events('request').length, 1);
    assert.equal(broker.stats().requests['q.pause'].sent, N);
    const resume = await p.waitFor((l) => l.event === 'resume', 3000);
    assert.ok(resume.buffered <= (1 << 20) + (64 << 10), `held ${resume.buffered} bytes`);
    assert.ok(resume.buffered < (N - 1) * SIZE);
    const rs = await all;
    for (const r of rs) assert.equal(r.response.body.length, 3 + 200); // the probe echoes 200 bytes
    assert.equal((await p.exit()).code, 0, p.stderr);
    assert.equal(p.events('request').length, N);
    assert.equal(broker.stats().requests['q.pause'].answered, N);
    assertClosed(p);
});

test('broker restart: reconnect with backoff and resubscribe', async () => {
    const p = probe(port, ['respond', '--channel', 'q.restart', '--count', '6', '--reconnect-ms', '100'], { timeoutMs: 25000 });
    await p.waitFor((l) => l.event === 'subscribed');
    for (let i = 0; i < 3; i++) await sendQuery(addr, 'q.restart', `a${i}`);
    await broker.stop();
    await p.waitFor((l) => l.event === 'lost', 3000);
    await p.waitFor((l) => l.event === 'state' && l.state === 'RECONNECTING', 3000);
    await sleep(500);
    const t0 = Date.now();
    await broker.start();
    // Backoff: base 100 ms doubling with full jitter; a few attempts fit in well under 8 s.
    const sub = await until(() => p.events('subscribed')[1], 8000, 20);
    assert.ok(sub, `resubscribed; stderr ${p.stderr}`);
    assert.ok(sub.t - t0 < 8000);
    await sleep(100);
    for (let i = 0; i < 3; i++) {
        const r = await sendQuery(addr, 'q.restart', `b${i}`);
        assert.equal(Buffer.from(r.response.body).toString(), `re:b${i}`);
    }
    assert.equal((await p.exit()).code, 0, p.stderr);
    assert.deepEqual(p.events('request').map((r) => r.body), ['a0', 'a1', 'a2', 'b0', 'b1', 'b2']);
    assert.match(p.stderr, /reconnecting in \d+ ms/);
    assertClosed(p);
});

test('events: fan-out subscription', async () => {
    const p = probe(port, ['events', '--channel', 'ev.plain', '--count', '3']);
    await p.waitFor((l) => l.event === 'subscribed');
    for (let i = 0; i < 3; i++) await publishEvent(addr, 'ev.plain', `e${i}`);
    assert.equal((await p.exit()).code, 0, p.stderr);
    assert.deepEqual(p.events('msg').map((m) => m.body), ['e0', 'e1', 'e2']);
    assertClosed(p);
});

test('events-store: resumes at last sequence + 1 after a broker restart', async () => {
    for (let i = 0; i < 3; i++) await publishEventStore(addr, 'es.resume', `s${i}`);
    const p = probe(port, ['events', '--channel', 'es.resume', '--store', 'first', '--count', '8',
        '--reconnect-ms', '100'], { timeoutMs: 25000 });
    await p.waitFor((l) => l.event === 'msg' && l.seq === 3);
    for (let i = 3; i < 5; i++) await publishEventStore(addr, 'es.resume', `s${i}`);
    await p.waitFor((l) => l.event === 'msg' && l.seq === 5);
    await broker.stop();
    await p.waitFor((l) => l.event === 'lost', 3000);
    await broker.start();
    await until(() => p.events('subscribed')[1], 8000, 20);
    for (let i = 5; i < 8; i++) await publishEventStore(addr, 'es.resume', `s${i}`);
    assert.equal((await p.exit()).code, 0, p.stderr);
    const msgs = p.events('msg');
    assert.deepEqual(msgs.map((m) => m.seq), [1, 2, 3, 4, 5, 6, 7, 8]); // none skipped, none twice
    assert.deepEqual(msgs.map((m) => m.body), ['s0', 's1', 's2', 's3', 's4', 's5', 's6', 's7']);
    assertClosed(p);
});

test('queue: QueuesDownstream Get + AckRange', async () => {
    for (let i = 0; i < 25; i++) await sendQueue(addr, 'qq.down', `m${i}`);
    const p = probe(port, ['queue', '--channel', 'qq.down', '--count', '25', '--max-items', '10']);
    assert.equal((await p.exit()).code, 0, p.stderr);
    const msgs = p.events('msg');
    assert.equal(msgs.length, 25);
    assert.deepEqual(msgs.map((m) => m.body), [...Array(25).keys()].map((i) => `m${i}`));
    assert.equal(p.events('acked').reduce((a, l) => a + l.n, 0), 25);
    const q = await until(() => {
        const s = broker.stats().queues['qq.down'];
        return s && s.acked === 25 ? s : null;
    }, 3000);
    assert.ok(q, JSON.stringify(broker.stats().queues['qq.down']));
    assert.equal(q.depth, 0);
    assert.equal(q.inflight, 0);
    assertClosed(p);
});

test('token: accepted when it matches, UNAUTHENTICATED otherwise', async () => {
    const b = await startBroker({ port: 0, token: 'sekret-token' });
    try {
        const ok = probe(b.grpcPort, ['send-event', '--channel', 'tok', '--count', '2', '--token', 'sekret-token']);
        assert.equal((await ok.exit()).code, 0, ok.stderr);
        assert.equal(ok.events('sent').length, 2);
        assertClosed(ok);

        const bad = probe(b.grpcPort, ['send-event', '--channel', 'tok', '--count', '1', '--token', 'wrong-token']);
        assert.equal((await bad.exit()).code, 1);
        const e = bad.events('error')[0];
        assert.equal(e.err, 'KK_EGRPC');
        assert.equal(e.grpc_status, 16);
        assert.doesNotMatch(bad.stderr + JSON.stringify(bad.lines), /wrong-token/); // never logged
        assertClosed(bad);

        const sub = probe(b.grpcPort, ['events', '--channel', 'tok', '--count', '1', '--token', 'nope'],
            { timeoutMs: 1500 });
        const lost = await sub.waitFor((l) => l.event === 'lost', 3000);
        assert.equal(lost.err, 'KK_EGRPC');
        assert.equal((await sub.exit()).code, 3);
        assert.match(sub.stderr, /UNAUTHENTICATED/);
        assertClosed(sub);
    } finally {
        await b.close();
    }
});

test('TLS: ALPN h2 with a verified certificate; verification on by default', async () => {
    const certs = makeCerts();
    const b = await startBroker({ port: 0, tls: { cert: fs.readFileSync(certs.cert), key: fs.readFileSync(certs.key) } });
    try {
        const ok = probe(b.grpcPort, ['--tls', '--ca', certs.ca, '--server-name', 'localhost', 'ping']);
        assert.equal((await ok.exit()).code, 0, ok.stderr);
        assert.equal(ok.events('ping').length, 1);
        assertClosed(ok);

        // The system bundle does not know our CA: the handshake fails and the client gives up.
        const unverified = probe(b.grpcPort, ['--tls', '--max-reconnects', '1', '--reconnect-ms', '50', 'ping']);
        assert.equal((await unverified.exit()).code, 4, unverified.stderr);
        assert.ok(unverified.events('state').some((s) => s.state === 'FAILED'));
        assert.equal(unverified.events('ping').length, 0);
        assertClosed(unverified);

        // Plaintext HTTP/2 against the TLS port never becomes READY.
        const plain = probe(b.grpcPort, ['--max-reconnects', '1', '--reconnect-ms', '50', 'ping'], { timeoutMs: 4000 });
        const r = await plain.exit();
        assert.ok(r.code === 4 || r.code === 3, `exit ${r.code}`);
        assert.equal(plain.events('ping').length, 0);
        assertClosed(plain);
    } finally {
        await b.close();
    }
});

// ---- protocol faults, from a scripted HTTP/2 server (node:http2, h2c) ----
// The test broker is well behaved; these cases need a peer that misbehaves on purpose.
import http2 from 'node:http2';

function frame(payload) {
    const h = Buffer.alloc(5);
    h.writeUInt32BE(payload.length, 1);
    return Buffer.concat([h, payload]);
}

// EventReceive{Body(4) = body, Sequence(6) = seq}
function eventReceive(body, seq) {
    const b = Buffer.from(body);
    return Buffer.concat([Buffer.from([0x22, b.length]), b, Buffer.from([0x30, seq])]);
}

async function scriptedServer(onCall) {
    const calls = [];
    const server = http2.createServer();
    const sessions = new Set();
    server.on('session', (s) => { sessions.add(s); s.on('close', () => sessions.delete(s)); });
    server.on('stream', (stream, headers) => {
        const call = { path: headers[':path'], headers, rst: null, n: calls.length };
        calls.push(call);
        stream.on('close', () => { call.rst = stream.rstCode; });
        stream.on('error', () => {});
        onCall(stream, call, calls);
    });
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    return {
        port: server.address().port,
        calls,
        sessions,
        async close() {
            for (const s of sessions) s.destroy();
            await new Promise((r) => server.close(r));
        },
    };
}

const OKHDR = { ':status': 200, 'content-type': 'application/grpc' };

function replyUnary(stream, payload, status = '0', message = 'OK') {
    stream.respond(OKHDR, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': status, 'grpc-message': message }));
    stream.end(frame(payload));
}

test('faults: malformed protobuf and oversized message reset the stream; the client resubscribes', async () => {
    const srv = await scriptedServer((stream, call, calls) => {
        if (call.path === '/kubemq.kubemq/Ping') return replyUnary(stream, Buffer.alloc(0));
        const subs = calls.filter((c) => c.path === '/kubemq.kubemq/SubscribeToEvents').length;
        stream.respond(OKHDR);
        if (subs === 1) stream.write(frame(Buffer.from([0xff, 0xff, 0xff, 0xff]))); // not protobuf
        else if (subs === 2) stream.write(Buffer.from([0, 0, 1, 0, 0])); // announces 65536 bytes
        else stream.write(Buffer.concat([frame(eventReceive('ok', 7)), frame(eventReceive('ok2', 8))]));
    });
    try {
        const p = probe(srv.port, ['--reconnect-ms', '50', '--max-message', '4096', 'events', '--channel', 'x',
            '--count', '2']);
        assert.equal((await p.exit()).code, 0, p.stderr);
        assert.deepEqual(p.events('msg').map((m) => m.body), ['ok', 'ok2']);
        assert.deepEqual(p.events('lost').map((l) => l.err), ['KK_EPARSE', 'KK_ETOOBIG']);
        const subs = srv.calls.filter((c) => c.path === '/kubemq.kubemq/SubscribeToEvents');
        assert.equal(subs.length, 3);
        assert.equal(subs[0].rst, http2.constants.NGHTTP2_CANCEL);
        assert.equal(subs[1].rst, http2.constants.NGHTTP2_CANCEL);
        assert.match(p.stderr, /malformed EventReceive/);
        assertClosed(p);
    } finally {
        await srv.close();
    }
});

test('faults: trailers-only error, missing grpc-status, deadline, GOAWAY', async () => {
    let mode = 'trailers-only';
    const srv = await scriptedServer((stream, call) => {
        const m = call.n === 0 ? 'ok' : mode; // the connect-time ping is answered normally
        if (m === 'ok') return replyUnary(stream, Buffer.alloc(0));
        if (m === 'trailers-only') {
            return stream.respond({ ...OKHDR, 'grpc-status': '13', 'grpc-message': 'Error%20101%3A%20invalid%20clientID' },
                { endStream: true });
        }
        if (m === 'no-status') {
            stream.respond(OKHDR);
            return stream.end(frame(Buffer.alloc(0)));
        }
        if (m === 'http-503') return stream.respond({ ':status': 503 }, { endStream: true });
        // 'hang': never answer
        return undefined;
    });
    const run = async (args) => {
        srv.calls.length = 0;
        const p = probe(srv.port, args);
        await p.exit();
        assertClosed(p);
        return p;
    };
    try {
        let p = await run(['ping']);
        let e = p.events('error')[0];
        assert.equal(e.grpc_status, 13);
        assert.equal(e.message, 'Error 101: invalid clientID');

        mode = 'no-status';
        p = await run(['ping']);
        e = p.events('error')[0];
        assert.equal(e.err, 'KK_EGRPC');
        assert.equal(e.message, 'missing grpc-status');

        mode = 'http-503';
        p = await run(['ping']);
        assert.equal(p.events('error')[0].grpc_status, 14);

        mode = 'hang';
        const t0 = Date.now();
        p = await run(['--call-timeout-ms', '300', 'ping']);
        e = p.events('error')[0];
        assert.equal(e.err, 'KK_ETIMEOUT');
        assert.ok(Date.now() - t0 < 5000);
        await until(() => srv.calls[1] && srv.calls[1].rst !== null, 2000);
        assert.equal(srv.calls[1].rst, http2.constants.NGHTTP2_CANCEL);
        assert.equal(srv.calls[1].headers['grpc-timeout'], '300m');

        // GOAWAY: the subscription the server accepted is gone with the old connection; the client
        // opens a new connection and resubscribes there.
        mode = 'sub';
        const srv2 = await scriptedServer((stream, call, calls) => {
            if (call.path === '/kubemq.kubemq/Ping') return replyUnary(stream, Buffer.alloc(0));
            stream.respond(OKHDR);
            const subs = calls.filter((c) => c.path === '/kubemq.kubemq/SubscribeToEvents').length;
            if (subs === 1) {
                stream.session.goaway(http2.constants.NGHTTP2_NO_ERROR, stream.id);
                setTimeout(() => stream.close(http2.constants.NGHTTP2_NO_ERROR), 100);
            } else {
                stream.write(frame(eventReceive('after-goaway', 1)));
            }
            return undefined;
        });
        try {
            p = probe(srv2.port, ['--reconnect-ms', '50', 'events', '--channel', 'g', '--count', '1']);
            assert.equal((await p.exit()).code, 0, p.stderr);
            assert.equal(p.events('msg')[0].body, 'after-goaway');
            assert.match(p.stderr, /GOAWAY/);
            assert.equal(p.events('state').filter((s) => s.state === 'READY').length, 2);
            assertClosed(p);
        } finally {
            await srv2.close();
        }
    } finally {
        await srv.close();
    }
});

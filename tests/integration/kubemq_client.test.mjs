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
function probe(port, args, { timeoutMs = 20000, env = {} } = {}) {
    // KK_PROBE_WRAPPER="valgrind -q --leak-check=full --error-exitcode=9" runs every probe under valgrind.
    const wrap = (process.env.KK_PROBE_WRAPPER || '').split(' ').filter(Boolean);
    const argv = [...wrap, PROBE, '--port', String(port), '--timeout-ms', String(timeoutMs), ...args];
    const proc = track(spawn(argv[0], argv.slice(1),
        { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } }));
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

// Message credit (opts.message_credit): the window is moved per message, so the broker can finish at
// most the credit, whatever the sizes: 1-byte bodies, and 100 KB bodies split over many DATA frames.
// The probe gives 3 at first and 3 more every 600 ms; the sender has all 12 queries waiting at once.
test('message credit: the broker completes exactly the credit, small and split messages alike', async () => {
    const N = 12;
    const p = probe(port, ['respond', '--channel', 'q.credit', '--count', String(N), '--credit', '3',
        '--credit-step-ms', '600']);
    await p.waitFor((l) => l.event === 'subscribed');
    const sizes = [1, 100000, 10, 40000];
    const all = Promise.all([...Array(N).keys()].map((i) => sendQuery(addr, 'q.credit', Buffer.alloc(sizes[i % 4], 0x61 + i), 15000)));
    const rs = await all;
    assert.equal(rs.length, N);
    assert.equal((await p.exit()).code, 0, p.stderr);
    const credits = p.events('credit');
    // Before the k-th extra grant the subscription had received exactly 3k requests and held none.
    assert.ok(credits.length >= 3, `three grants were needed: ${JSON.stringify(credits)}`);
    credits.slice(0, 3).forEach((c, k) => {
        assert.equal(c.got, 3 * (k + 1), `grant ${k + 1}: ${JSON.stringify(credits)}`);
        assert.equal(c.outstanding, 0);
    });
    const st = broker.stats().requests['q.credit'];
    assert.equal(st.answered, N);
    assert.ok(st.max_inflight > 3, `the broker had more to send (${st.max_inflight})`);
    assert.ok(st.max_flushed_inflight <= 3, `broker-side flushed in flight ${st.max_flushed_inflight} <= 3`);
    assertClosed(p);
});

// Paused under message credit: the window freezes, so what the gateway holds stays within one message
// + 5 x credit (the decoder's bound), not credit x message size.  20 x 200 KB with credit 20 would be 4 MB.
test('message credit: a paused subscription holds at most one message + 5 x credit', async () => {
    const N = 20;
    const p = probe(port, ['respond', '--channel', 'q.pcredit', '--count', String(N), '--max-message', '300000',
        '--credit', String(N), '--pause-after', '1', '--pause-ms', '1500']);
    await p.waitFor((l) => l.event === 'subscribed');
    const all = Promise.all([...Array(N).keys()].map(() => sendQuery(addr, 'q.pcredit', Buffer.alloc(200000, 0x61), 15000)));
    const resume = await p.waitFor((l) => l.event === 'resume', 5000);
    assert.ok(resume.buffered <= 200000 + 64 + 5 * N, `held ${resume.buffered} bytes while paused`);
    const rs = await all;
    assert.equal(rs.length, N);
    assert.equal((await p.exit()).code, 0, p.stderr);
    assert.equal(p.events('request').length, N);
    assert.equal(broker.stats().requests['q.pcredit'].answered, N);
    assertClosed(p);
});

test('message credit: events are counted the same way', async () => {
    const p = probe(port, ['events', '--channel', 'ev.credit', '--count', '5', '--credit', '2',
        '--credit-step-ms', '500']);
    await p.waitFor((l) => l.event === 'subscribed');
    for (let i = 0; i < 5; i++) await publishEvent(addr, 'ev.credit', `e${i}`);
    assert.equal((await p.exit()).code, 0, p.stderr);
    assert.deepEqual(p.events('msg').map((m) => m.body), ['e0', 'e1', 'e2', 'e3', 'e4']);
    const credits = p.events('credit');
    assert.deepEqual(credits.slice(0, 2).map((c) => c.got), [2, 4], JSON.stringify(credits));
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

async function scriptedServer(onCall, { onSession = null } = {}) {
    const calls = [];
    const server = http2.createServer();
    const sessions = new Set();
    server.on('session', (s) => {
        sessions.add(s);
        s.on('close', () => sessions.delete(s));
        if (onSession) onSession(s);
    });
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

// ---- hardening: dead peers, refused calls, FAILED ----
import net from 'node:net';

// Raw TCP proxy to 127.0.0.1:target; silence() turns every open connection into a black hole
// (bytes are dropped both ways, sockets stay open), as a dead peer behind a NAT looks.
// drop() ends every open connection; refuse(true) makes new ones end at once (a broker that is
// down for a while) until refuse(false).
async function tcpProxy(target) {
    const conns = new Set();
    let accepted = 0;
    let refusing = false;
    const server = net.createServer((sock) => {
        accepted++;
        if (refusing) {
            sock.on('error', () => {});
            sock.destroy();
            return;
        }
        const up = net.connect(target, '127.0.0.1');
        const c = { silent: false };
        const end = () => { sock.destroy(); up.destroy(); conns.delete(c); };
        c.end = end;
        conns.add(c);
        sock.on('data', (d) => { if (!c.silent) up.write(d); });
        up.on('data', (d) => { if (!c.silent) sock.write(d); });
        for (const s of [sock, up]) { s.on('error', end); s.on('close', end); }
    });
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    return {
        port: server.address().port,
        accepted: () => accepted,
        silence() { for (const c of conns) c.silent = true; },
        drop() { for (const c of [...conns]) c.end(); },
        refuse(on) { refusing = on; },
        async close() {
            for (const c of [...conns]) c.end();
            await new Promise((r) => server.close(r));
        },
    };
}

test('keepalive: an unanswered PING closes the connection; the client reconnects and resubscribes', async () => {
    const px = await tcpProxy(port);
    try {
        const p = probe(px.port, ['--keepalive-ms', '300', '--keepalive-timeout-ms', '400', '--reconnect-ms', '50',
            'respond', '--channel', 'q.ka', '--count', '2'], { timeoutMs: 15000 });
        await p.waitFor((l) => l.event === 'subscribed');
        assert.equal(Buffer.from((await sendQuery(addr, 'q.ka', 'k0')).response.body).toString(), 're:k0');
        px.silence();
        const t0 = Date.now();
        const lost = await p.waitFor((l) => l.event === 'lost', 5000, 'lost after the silent PING');
        assert.equal(lost.err, 'KK_ETIMEOUT');
        assert.ok(lost.t - t0 >= 350, `detected after ${lost.t - t0} ms: not before PING + timeout`);
        const sub = await until(() => p.events('subscribed')[1], 5000, 20);
        assert.ok(sub, `resubscribed; stderr ${p.stderr}`);
        await sleep(200); // the proxy drops the dead upstream, so the broker forgets the old subscriber
        assert.equal(Buffer.from((await sendQuery(addr, 'q.ka', 'k1')).response.body).toString(), 're:k1');
        assert.equal((await p.exit()).code, 0, p.stderr);
        assert.match(p.stderr, /no answer to PING in 400 ms; closing the connection/);
        assert.equal(px.accepted(), 2);
        assert.deepEqual(p.events('state').map((s) => s.state), ['READY', 'RECONNECTING', 'READY']);
        assertClosed(p);
    } finally {
        await px.close();
    }
});

test('reply during a reconnect: parked, then sent on the next READY connection within its deadline', async () => {
    const px = await tcpProxy(port);
    try {
        const p = probe(px.port, ['--reconnect-ms', '100', 'respond', '--channel', 'q.park', '--count', '1',
            '--reply-delay-ms', '700'], { timeoutMs: 15000 });
        await p.waitFor((l) => l.event === 'subscribed');
        const q = sendQuery(addr, 'q.park', 'p0', 10000);
        await p.waitFor((l) => l.event === 'request');
        px.refuse(true);
        px.drop(); // the probe's connection is gone before its reply is ready
        const replying = await p.waitFor((l) => l.event === 'replying', 3000);
        assert.notEqual(replying.state, 'READY');
        await sleep(300);
        px.refuse(false);
        const r = await q; // the requester still waits on the broker: the reply must arrive
        assert.equal(Buffer.from(r.response.body).toString(), 're:p0');
        assert.equal((await p.exit()).code, 0, p.stderr);
        assert.equal(p.events('error').length, 0, JSON.stringify(p.events('error')));
        assert.ok(p.events('state').filter((s) => s.state === 'READY').length >= 2);
        assertClosed(p);
    } finally {
        await px.close();
    }
});

test('GOAWAY storm: a broker that GOAWAYs every connection at once meets a growing backoff', async () => {
    let sessions = 0;
    const srv = await scriptedServer(() => undefined, {
        onSession: (s) => { sessions++; s.goaway(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM, 0); },
    });
    try {
        const p = probe(srv.port, ['--reconnect-ms', '100', 'events', '--channel', 'gs', '--count', '1'],
            { timeoutMs: 2000 });
        const r = await p.exit();
        assert.equal(r.code, 3, p.stderr); // never delivered anything: the overall timeout ends it
        // Base 100 ms doubling with full jitter: a handful of attempts in 2 s, not hundreds.
        assert.ok(sessions >= 2 && sessions <= 12, `${sessions} connections in 2 s; stderr ${p.stderr.slice(-2000)}`);
        assert.match(p.stderr, /GOAWAY \(ENHANCE_YOUR_CALM/);
        assert.match(p.stderr, /reconnecting in \d+ ms \(attempt [2-9]/);
        assertClosed(p);
    } finally {
        await srv.close();
    }
});

test('keepalive: PINGs only while idle (KK_TEST_KEEPALIVE_MS), acknowledged PINGs keep the connection', async () => {
    const pings = [];
    const srv = await scriptedServer((stream, call) => {
        if (call.path === '/kubemq.kubemq/Ping') return replyUnary(stream, Buffer.alloc(0));
        stream.respond(OKHDR);
        setTimeout(() => stream.write(frame(eventReceive('late', 1))), 1300);
        return undefined;
    }, { onSession: (s) => s.on('ping', () => pings.push(Date.now())) });
    try {
        // No option given: the test variable sets the idle interval (and the PING timeout).
        const p = probe(srv.port, ['events', '--channel', 'ka', '--count', '1'], { env: { KK_TEST_KEEPALIVE_MS: '250' } });
        const r = await p.exit();
        assert.equal(r.code, 0, p.stderr);
        // ~1.3 s idle at 250 ms: about 5 PINGs, never faster than the idle interval.
        assert.ok(pings.length >= 3 && pings.length <= 6, `${pings.length} pings`);
        for (let i = 1; i < pings.length; i++) assert.ok(pings[i] - pings[i - 1] >= 200, `gap ${pings[i] - pings[i - 1]}`);
        assert.equal(p.events('lost').length, 0);
        assert.equal(p.events('state').filter((s) => s.state === 'READY').length, 1);
        assertClosed(p);
    } finally {
        await srv.close();
    }
});

// Result{Sent = true}
const RESULT_SENT = Buffer.from([0x10, 0x01]);

test('refused calls: GOAWAY below the stream id or RST_STREAM REFUSED_STREAM are sent again once', async () => {
    let mode = 'goaway';
    const bodies = [];
    const srv = await scriptedServer((stream, call, calls) => {
        if (call.path === '/kubemq.kubemq/Ping') return replyUnary(stream, Buffer.alloc(0));
        const n = calls.filter((c) => c.path === '/kubemq.kubemq/SendEvent').length;
        let data = Buffer.alloc(0);
        stream.on('data', (d) => { data = Buffer.concat([data, d]); });
        stream.on('end', () => bodies.push(data));
        if (mode === 'goaway' && n === 1) {
            // The broker is going away and has not seen this stream: it was never processed.
            stream.session.goaway(http2.constants.NGHTTP2_NO_ERROR, stream.id - 2);
            return undefined;
        }
        if (mode === 'rst-always' || (mode === 'rst' && n === 1)) {
            return stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
        }
        return replyUnary(stream, RESULT_SENT);
    });
    const sendEvents = () => srv.calls.filter((c) => c.path === '/kubemq.kubemq/SendEvent').length;
    try {
        let p = probe(srv.port, ['--reconnect-ms', '50', 'send-event', '--channel', 'rf', '--count', '2']);
        assert.equal((await p.exit()).code, 0, p.stderr);
        assert.equal(p.events('sent').length, 2);
        assert.equal(sendEvents(), 3);
        await until(() => bodies.length >= 2, 2000);
        assert.ok(bodies[1].length > 5 && bodies[1].includes(Buffer.from('event-1')));
        assert.match(p.stderr, /GOAWAY/);
        assert.match(p.stderr, /SendEvent refused by the broker; sending it again/);
        assert.equal(p.events('state').filter((s) => s.state === 'READY').length, 2);
        assertClosed(p);

        mode = 'rst';
        srv.calls.length = 0;
        p = probe(srv.port, ['send-event', '--channel', 'rf', '--count', '1']);
        assert.equal((await p.exit()).code, 0, p.stderr);
        assert.equal(sendEvents(), 2);
        assert.equal(p.events('state').filter((s) => s.state === 'READY').length, 1); // same connection
        assertClosed(p);

        mode = 'rst-always'; // once only: the second refusal is the caller's error
        srv.calls.length = 0;
        p = probe(srv.port, ['send-event', '--channel', 'rf', '--count', '1']);
        assert.equal((await p.exit()).code, 1, p.stderr);
        assert.equal(p.events('error')[0].err, 'KK_EH2');
        assert.equal(sendEvents(), 2);
        assertClosed(p);
    } finally {
        await srv.close();
    }
});

test('FAILED: reported once after max_reconnects, nothing reconnects afterwards', async () => {
    const tmp = net.createServer();
    await new Promise((r) => tmp.listen(0, '127.0.0.1', r));
    const dead = tmp.address().port;
    await new Promise((r) => tmp.close(r)); // nothing listens there now
    const p = probe(dead, ['--max-reconnects', '2', '--reconnect-ms', '20', '--linger-ms', '700', 'ping']);
    const r = await p.exit();
    assert.equal(r.code, 4, p.stderr);
    const states = p.events('state').map((s) => s.state);
    assert.equal(states.filter((s) => s === 'FAILED').length, 1, JSON.stringify(states));
    assert.equal(states[states.length - 1], 'FAILED');
    assert.equal((p.stderr.match(/giving up/g) || []).length, 1);
    assert.equal((p.stderr.match(/reconnecting in/g) || []).length, 2); // max_reconnects = 2 attempts
    const failed = p.events('state').find((s) => s.state === 'FAILED');
    assert.ok(p.events('done')[0].t - failed.t >= 600, 'lingered with no further state change');
    assertClosed(p);
});

test('FAILED: with auto_reconnect off a GOAWAY is final too (no silent reconnect)', async () => {
    const srv = await scriptedServer((stream, call) => {
        if (call.path === '/kubemq.kubemq/Ping') return replyUnary(stream, Buffer.alloc(0));
        stream.respond(OKHDR);
        stream.write(frame(eventReceive('one', 1)));
        setTimeout(() => stream.session.goaway(http2.constants.NGHTTP2_NO_ERROR, stream.id), 100);
        return undefined;
    });
    try {
        const p = probe(srv.port, ['--no-reconnect', '--linger-ms', '500', 'events', '--channel', 'nr', '--count', '5']);
        assert.equal((await p.exit()).code, 4, p.stderr);
        assert.deepEqual(p.events('state').map((s) => s.state), ['READY', 'FAILED']);
        assert.equal(p.events('msg').length, 1);
        assert.equal(srv.calls.filter((c) => c.path === '/kubemq.kubemq/Ping').length, 1); // one connection only
        assertClosed(p);
    } finally {
        await srv.close();
    }
});

// kubemq-kinesis-load: the fake Kinesis answers signed calls and counts bad signatures (over HTTP and
// HTTPS with its generated certificate); the fake broker drives the gateway (null target, aws.kinesis
// over http and https) and reports a clean JSON summary.
import { test } from 'node:test';
import https from 'node:https';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { untrack, waitExit, tmpDir } from './lib/procs.mjs';
import { startGateway, haveGateway, freePort, ready } from './lib/gateway.mjs';
import { brokerProcess } from './lib/broker.mjs';
import { LOAD, startLoad, portOf } from './lib/load.mjs';

const require = createRequire(import.meta.url);
const aws4 = require('../node_modules/aws4');
const BUILD = process.env.KK_BUILD_DIR || path.resolve('build');
const SECRET = 'bench-secret-not-real';
const AKID = 'AKIDBENCH';


async function kinesisCall(port, target, body, { secret = SECRET } = {}) {
    const opts = {
        host: `127.0.0.1:${port}`, path: '/', method: 'POST', service: 'kinesis', region: 'us-east-1',
        headers: { 'Content-Type': 'application/x-amz-json-1.1', 'X-Amz-Target': `Kinesis_20131202.${target}` },
        body: JSON.stringify(body),
    };
    aws4.sign(opts, { accessKeyId: AKID, secretAccessKey: secret });
    const r = await fetch(`http://127.0.0.1:${port}/`, {
        method: 'POST', headers: opts.headers, body: opts.body, signal: AbortSignal.timeout(5000),
    });
    return { status: r.status, json: await r.json().catch(() => null) };
}

test('kinesis fake: signed PutRecord/PutRecords answered, bad signature rejected and counted', { timeout: 20000 }, async () => {
    const dir = tmpDir('kk-load-');
    const json = path.join(dir, 'k.json');
    const k = startLoad(['kinesis', '--port', '0', '--secret', SECRET, '--access-key', AKID, '--json', json,
        '--quiet', '--latency-ms', '1:3']);
    const port = await portOf(k, 'kinesis fake');

    const pr = await kinesisCall(port, 'PutRecord', { StreamName: 's1', PartitionKey: 'k', Data: Buffer.from('hello').toString('base64') });
    assert.equal(pr.status, 200);
    assert.equal(pr.json.ShardId, 'shardId-000000000000');
    assert.match(pr.json.SequenceNumber, /^\d+$/);

    const recs = [1, 2, 3].map((i) => ({ PartitionKey: `k${i}`, Data: Buffer.alloc(10 * i, 1).toString('base64') }));
    const prs = await kinesisCall(port, 'PutRecords', { StreamName: 's1', Records: recs });
    assert.equal(prs.status, 200);
    assert.equal(prs.json.FailedRecordCount, 0);
    assert.equal(prs.json.Records.length, 3);

    const ls = await kinesisCall(port, 'ListShards', { StreamName: 's1' });
    assert.equal(ls.status, 200);
    assert.equal(ls.json.Shards[0].ShardId, 'shardId-000000000000');

    const bad = await kinesisCall(port, 'PutRecord', { StreamName: 's1', PartitionKey: 'k', Data: 'aGk=' }, { secret: 'wrong' });
    assert.equal(bad.status, 403);
    assert.equal(bad.json.__type, 'InvalidSignatureException');

    process.kill(k.proc.pid, 'SIGTERM');
    const ex = await waitExit(k.proc, 5000);
    untrack(k.proc);
    assert.equal(ex.code, 0, k.err());
    const st = JSON.parse(fs.readFileSync(json, 'utf8'));
    assert.equal(st.requests, 4);
    assert.equal(st.bad_signatures, 1);
    assert.equal(st.records, 4); // 1 + 3, the rejected one is not counted
    assert.equal(st.record_bytes, 5 + 10 + 20 + 30);
    assert.equal(st.by_op.PutRecords, 1);
});

test('kinesis fake: --verify-every 2 checks the 1st and 3rd signatures only', { timeout: 20000 }, async () => {
    const dir = tmpDir('kk-load-');
    const json = path.join(dir, 'k.json');
    const k = startLoad(['kinesis', '--port', '0', '--secret', SECRET, '--access-key', AKID, '--verify-every', '2',
        '--json', json, '--quiet']);
    const port = await portOf(k, 'kinesis fake');
    const statuses = [];
    for (let i = 0; i < 4; i++) {
        const r = await kinesisCall(port, 'PutRecord', { StreamName: 's', PartitionKey: 'k', Data: 'aGk=' }, { secret: 'wrong' });
        statuses.push(r.status);
    }
    assert.deepEqual(statuses, [403, 200, 403, 200]);
    process.kill(k.proc.pid, 'SIGTERM');
    const ex = await waitExit(k.proc, 5000);
    untrack(k.proc);
    assert.equal(ex.code, 0, k.err());
    const st = JSON.parse(fs.readFileSync(json, 'utf8'));
    assert.equal(st.verified, 2);
    assert.equal(st.bad_signatures, 2);
    assert.equal(st.requests, 4);
});

test('kinesis fake: fault injection gives throttles and partial failures', { timeout: 20000 }, async () => {
    const k = startLoad(['kinesis', '--port', '0', '--throttle-rate', '1', '--quiet', '--duration', '10']);
    const port = await portOf(k, 'kinesis fake');
    const r = await kinesisCall(port, 'PutRecord', { StreamName: 's', PartitionKey: 'k', Data: 'aGk=' });
    assert.equal(r.status, 400);
    assert.equal(r.json.__type, 'ProvisionedThroughputExceededException');
    process.kill(k.proc.pid, 'SIGTERM');
    await waitExit(k.proc, 5000);
    untrack(k.proc);

    const k2 = startLoad(['kinesis', '--port', '0', '--partial-failure-rate', '1', '--quiet', '--duration', '10']);
    const port2 = await portOf(k2, 'kinesis fake');
    const p = await kinesisCall(port2, 'PutRecords', { StreamName: 's', Records: [{ PartitionKey: 'a', Data: 'aGk=' }, { PartitionKey: 'b', Data: 'aGk=' }] });
    assert.equal(p.status, 200);
    assert.equal(p.json.FailedRecordCount, 2);
    assert.equal(p.json.Records[1].ErrorCode, 'ProvisionedThroughputExceededException');
    process.kill(k2.proc.pid, 'SIGTERM');
    await waitExit(k2.proc, 5000);
    untrack(k2.proc);
});

test('broker drives the gateway (null target): 200 requests, 0 errors', { timeout: 30000 }, async (t) => {
    if (!haveGateway()) {
        t.skip(`gateway binary ${path.join(BUILD, 'kubemq-kinesis')} not built: skipping the broker run`);
        return;
    }
    const dir = tmpDir('kk-load-');
    const json = path.join(dir, 'b.json');
    const b = startLoad(['broker', '--port', '0', '--kind', 'query', '--channel', 'q.bench', '--requests', '200',
        '--inflight', '8', '--payload-bytes', '100', '--wait-subscribe', '15', '--timeout-ms', '5000',
        '--json', json, '--quiet']);
    const bport = await portOf(b, 'fake broker');
    const apiPort = await freePort();
    const gw = await startGateway({ config: [
        `apiPort: ${apiPort}`,
        'bindings:',
        '  - name: bench',
        '    source:',
        '      kind: kubemq.query',
        '      name: q',
        '      properties:',
        `        address: "127.0.0.1:${bport}"`,
        '        client_id: "bench"',
        '        channel: "q.bench"',
        '        concurrency: 64',
        '    target:',
        '      kind: "null"',
        '      name: n',
        '',
    ].join('\n') });
    try {
        const ex = await waitExit(b.proc, 25000);
        untrack(b.proc);
        assert.equal(ex.code, 0, `broker exit ${JSON.stringify(ex)}\n${b.out()}\n${b.err()}\ngateway:\n${gw.logs().slice(-3000)}`);
        const st = JSON.parse(fs.readFileSync(json, 'utf8'));
        assert.equal(st.sent, 200);
        assert.equal(st.ok, 200);
        assert.equal(st.errors, 0);
        assert.equal(st.latency_ms.count, 200);
        assert.ok(st.latency_ms.p50 > 0 && st.latency_ms.p50 <= st.latency_ms.p99);
        assert.ok(st.subscribed);
    } finally {
        await gw.stop();
    }
});

test('broker --warmup: the first half second is not counted, the measured window is --duration', { timeout: 30000 }, async (t) => {
    if (!haveGateway()) {
        t.skip(`gateway binary ${path.join(BUILD, 'kubemq-kinesis')} not built: skipping the warm-up run`);
        return;
    }
    const dir = tmpDir('kk-load-');
    const json = path.join(dir, 'b.json');
    const b = startLoad(['broker', '--port', '0', '--kind', 'query', '--channel', 'q.warm', '--warmup', '0.5',
        '--duration', '1', '--inflight', '4', '--wait-subscribe', '15', '--timeout-ms', '5000', '--json', json, '--quiet']);
    const bport = await portOf(b, 'fake broker');
    const apiPort = await freePort();
    const gw = await startGateway({ config: [
        `apiPort: ${apiPort}`,
        'bindings:',
        '  - name: warm',
        '    source:',
        '      kind: kubemq.query',
        '      name: q',
        '      properties:',
        `        address: "127.0.0.1:${bport}"`,
        '        client_id: "bench"',
        '        channel: "q.warm"',
        '    target:',
        '      kind: "null"',
        '      name: n',
        '',
    ].join('\n') });
    try {
        const ex = await waitExit(b.proc, 20000);
        untrack(b.proc);
        assert.equal(ex.code, 0, `broker exit ${JSON.stringify(ex)}\n${b.out()}\n${b.err()}`);
        const st = JSON.parse(fs.readFileSync(json, 'utf8'));
        assert.equal(st.warmup_s, 0.5);
        assert.equal(st.errors, 0);
        assert.ok(st.ok > 0);
        assert.equal(st.ok, st.sent, 'replies to warm-up requests are not counted');
        assert.equal(st.latency_ms.count, st.ok);
        assert.ok(st.elapsed_s >= 0.95 && st.elapsed_s < 1.5, `elapsed ${st.elapsed_s}`);
    } finally {
        await gw.stop();
    }
});

test('broker -> gateway (aws.kinesis) -> fake kinesis: signatures verify, every record lands', { timeout: 30000 }, async (t) => {
    if (!haveGateway()) {
        t.skip(`gateway binary ${path.join(BUILD, 'kubemq-kinesis')} not built: skipping the end-to-end run`);
        return;
    }
    const dir = tmpDir('kk-load-');
    const kjson = path.join(dir, 'k.json');
    const bjson = path.join(dir, 'b.json');
    const k = startLoad(['kinesis', '--port', '0', '--secret', SECRET, '--access-key', AKID, '--json', kjson,
        '--quiet', '--latency-ms', '2']);
    const kport = await portOf(k, 'kinesis fake');
    const b = startLoad(['broker', '--port', '0', '--kind', 'query', '--channel', 'q.kin', '--method', 'put_records',
        '--batch', '3', '--payload-bytes', '50', '--requests', '100', '--inflight', '8', '--wait-subscribe', '15',
        '--timeout-ms', '5000', '--json', bjson, '--quiet']);
    const bport = await portOf(b, 'fake broker');
    const apiPort = await freePort();
    const gw = await startGateway({ config: [
        `apiPort: ${apiPort}`,
        'bindings:',
        '  - name: kin',
        '    source:',
        '      kind: kubemq.query',
        '      name: q',
        '      properties:',
        `        address: "127.0.0.1:${bport}"`,
        '        client_id: "bench"',
        '        channel: "q.kin"',
        '    target:',
        '      kind: aws.kinesis',
        '      name: k',
        '      properties:',
        `        aws_key: "${AKID}"`,
        `        aws_secret_key: "${SECRET}"`,
        '        region: "us-east-1"',
        `        endpoint: "http://127.0.0.1:${kport}"`,
        '',
    ].join('\n') });
    try {
        const ex = await waitExit(b.proc, 25000);
        untrack(b.proc);
        assert.equal(ex.code, 0, `broker exit ${JSON.stringify(ex)}\n${b.out()}\n${b.err()}\ngateway:\n${gw.logs().slice(-3000)}`);
        const st = JSON.parse(fs.readFileSync(bjson, 'utf8'));
        assert.equal(st.ok, 100);
        assert.equal(st.errors, 0);
        assert.ok(st.latency_ms.p50 >= 2, 'latency includes the fake 2 ms');
    } finally {
        await gw.stop();
        process.kill(k.proc.pid, 'SIGTERM');
        await waitExit(k.proc, 5000);
        untrack(k.proc);
    }
    const ks = JSON.parse(fs.readFileSync(kjson, 'utf8'));
    assert.equal(ks.bad_signatures, 0);
    assert.equal(ks.unsigned, 0);
    assert.equal(ks.by_op.PutRecords, 100);
    assert.equal(ks.records, 300);
    assert.equal(ks.record_bytes, 300 * 50);
});

function httpsCall(port, target, body, ca) {
    const opts = {
        host: 'localhost', path: '/', method: 'POST', service: 'kinesis', region: 'us-east-1',
        headers: { 'Content-Type': 'application/x-amz-json-1.1', 'X-Amz-Target': `Kinesis_20131202.${target}` },
        body: JSON.stringify(body),
    };
    aws4.sign(opts, { accessKeyId: AKID, secretAccessKey: SECRET });
    return new Promise((resolve, reject) => {
        const req = https.request({ host: '127.0.0.1', servername: 'localhost', port, method: 'POST', path: '/',
            headers: opts.headers, ca, timeout: 5000 }, (res) => {
            let text = '';
            res.on('data', (d) => { text += d; });
            res.on('end', () => resolve({ status: res.statusCode, json: JSON.parse(text) }));
        });
        req.on('timeout', () => req.destroy(new Error('timeout')));
        req.on('error', reject);
        req.end(opts.body);
    });
}

test('kinesis fake over TLS: its certificate verifies for localhost; the gateway puts records over https', { timeout: 30000 }, async (t) => {
    const dir = tmpDir('kk-load-');
    const cert = path.join(dir, 'fake-kinesis.pem');
    const kjson = path.join(dir, 'k.json');
    const bjson = path.join(dir, 'b.json');
    const k = startLoad(['kinesis', '--port', '0', '--tls', cert, '--secret', SECRET, '--access-key', AKID,
        '--json', kjson, '--quiet']);
    const kport = await portOf(k, 'kinesis fake (tls)');
    const ca = fs.readFileSync(cert);
    // A client trusting the written certificate gets answers; one that does not is refused.
    const ls = await httpsCall(kport, 'ListStreams', {}, ca);
    assert.equal(ls.status, 200);
    assert.deepEqual(ls.json.StreamNames, ['bench']);
    await assert.rejects(httpsCall(kport, 'ListStreams', {}, undefined), /self[- ]signed|certificate/i);

    let gw = null;
    try {
        if (!haveGateway()) {
            t.diagnostic(`gateway binary ${path.join(BUILD, 'kubemq-kinesis')} not built: skipping the gateway part`);
            return;
        }
        const b = startLoad(['broker', '--port', '0', '--kind', 'query', '--channel', 'q.tls', '--method', 'put_record',
            '--payload-bytes', '1024', '--requests', '300', '--inflight', '16', '--wait-subscribe', '15',
            '--timeout-ms', '5000', '--json', bjson, '--quiet']);
        const bport = await portOf(b, 'fake broker');
        const apiPort = await freePort();
        gw = await startGateway({ config: [
            `apiPort: ${apiPort}`,
            'bindings:',
            '  - name: kin-tls',
            '    source:',
            '      kind: kubemq.query',
            '      name: q',
            '      properties:',
            `        address: "127.0.0.1:${bport}"`,
            '        client_id: "bench"',
            '        channel: "q.tls"',
            '    target:',
            '      kind: aws.kinesis',
            '      name: k',
            '      properties:',
            `        aws_key: "${AKID}"`,
            `        aws_secret_key: "${SECRET}"`,
            '        region: "us-east-1"',
            `        endpoint: "https://localhost:${kport}"`,
            `        tls_ca_file: "${cert}"`,
            '        max_connections: 8',
            '',
        ].join('\n') });
        const ex = await waitExit(b.proc, 25000);
        untrack(b.proc);
        assert.equal(ex.code, 0, `broker exit ${JSON.stringify(ex)}\n${b.out()}\n${b.err()}\ngateway:\n${gw.logs().slice(-3000)}`);
        const st = JSON.parse(fs.readFileSync(bjson, 'utf8'));
        assert.equal(st.ok, 300);
        assert.equal(st.errors, 0);
    } finally {
        if (gw) await gw.stop();
        process.kill(k.proc.pid, 'SIGTERM');
        const kex = await waitExit(k.proc, 5000);
        untrack(k.proc);
        assert.equal(kex.code, 0, k.err());
    }
    const ks = JSON.parse(fs.readFileSync(kjson, 'utf8'));
    assert.equal(ks.tls, true);
    assert.equal(ks.bad_signatures, 0);
    assert.equal(ks.unsigned, 0);
    assert.equal(ks.by_op.PutRecord, 300);
    assert.equal(ks.records, 300);
    assert.equal(ks.record_bytes, 300 * 1024);
    assert.ok(ks.connections >= 2 && ks.connections <= 2 + 8 + 2, `connections ${ks.connections}`);
});

test('client mode: queries through the test broker and the gateway, events and queue sends', { timeout: 30000 }, async (t) => {
    if (!haveGateway()) {
        t.skip(`gateway binary ${path.join(BUILD, 'kubemq-kinesis')} not built: skipping the client run`);
        return;
    }
    const broker = await brokerProcess();
    const apiPort = await freePort();
    const gw = await startGateway({ config: [
        `apiPort: ${apiPort}`,
        'bindings:',
        '  - name: cq',
        '    source:',
        '      kind: kubemq.query',
        '      name: q',
        '      properties:',
        `        address: "${broker.address}"`,
        '        client_id: "gw"',
        '        channel: "q.client"',
        '    target:',
        '      kind: "null"',
        '      name: n',
        '',
    ].join('\n') });
    try {
        assert.ok(await ready(gw, 10000), 'gateway ready');
        const run = async (args) => {
            const c = startLoad(['client', '--address', broker.address, '--json', '-', '--quiet', ...args]);
            const ex = await waitExit(c.proc, 20000);
            untrack(c.proc);
            const line = c.out().split('\n').find((l) => l.startsWith('{'));
            assert.ok(line, `no JSON from client: ${c.out()} ${c.err()}`);
            return { code: ex.code, st: JSON.parse(line) };
        };
        const q = await run(['--kind', 'query', '--channel', 'q.client', '--requests', '100', '--inflight', '8',
            '--pid', String(gw.pid)]);
        assert.equal(q.code, 0);
        assert.equal(q.st.ok, 100);
        assert.equal(q.st.latency_ms.count, 100);
        assert.ok(q.st.gateway.peak_rss_kb > 0);
        // No subscriber on this channel: the broker answers each query with an error.
        const miss = await run(['--kind', 'query', '--channel', 'q.nobody', '--requests', '5', '--inflight', '5',
            '--timeout-ms', '300']);
        assert.equal(miss.code, 1);
        assert.equal(miss.st.ok, 0);
        assert.equal(miss.st.errors, 5);
        const ev = await run(['--kind', 'events', '--channel', 'e.client', '--requests', '50', '--inflight', '4']);
        assert.equal(ev.st.ok, 50);
        const qu = await run(['--kind', 'queue', '--channel', 'qu.client', '--requests', '50', '--inflight', '4']);
        assert.equal(qu.st.ok, 50);
        const stats = await broker.stats();
        assert.equal(stats.queues['qu.client'].depth, 50);
    } finally {
        await gw.stop();
        await broker.stop();
    }
});

// Overload: the fake broker offers far more than the gateway can do (it keeps 20000 requests of 1 KiB
// outstanding while the gateway's concurrency is 16 and the fake Kinesis answers after 2 ms).  The
// gateway pauses its subscription slot by slot; what it holds must stay bounded by the 1 MiB stream
// window (src/kubemq/client.c), not by what the broker offers (~30 MB here), and nothing may fail.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { untrack, waitExit, tmpDir } from './lib/procs.mjs';
import { startGateway, haveGateway, freePort } from './lib/gateway.mjs';
import { LOAD, startLoad, portOf } from './lib/load.mjs';

const BUILD = process.env.KK_BUILD_DIR || path.resolve('build');
const SECRET = 'overload-secret-not-real';
// Under AddressSanitizer, RSS counts shadow memory and the free quarantine (up to 256 MiB of recently freed
// blocks), so it says nothing about what the gateway holds: the memory bound is checked in the plain build only.
const SANITIZED = (() => {
    try { return fs.readFileSync(path.join(BUILD, 'kubemq-kinesis')).includes('__asan_init'); } catch { return false; }
})();
const AKID = 'AKIDOVERLOAD';


test('overload: paused slot by slot, the gateway holds one stream window, not the offered backlog', { timeout: 60000 }, async (t) => {
    if (!haveGateway() || !fs.existsSync(LOAD)) {
        t.skip('gateway or kubemq-kinesis-load not built');
        return;
    }
    const dir = tmpDir('kk-overload-');
    const bjson = path.join(dir, 'b.json');
    const k = startLoad(['kinesis', '--port', '0', '--secret', SECRET, '--access-key', AKID, '--quiet',
        '--latency-ms', '2']);
    const kport = await portOf(k, 'kinesis fake');
    const b = startLoad(['broker', '--port', '0', '--kind', 'query', '--channel', 'q.over', '--method', 'put_record',
        '--payload-bytes', '1024', '--inflight', '20000', '--warmup', '0', '--duration', '3', '--wait-subscribe', '15',
        '--timeout-ms', '30000', '--json', bjson, '--quiet']);
    const bport = await portOf(b, 'fake broker');
    const apiPort = await freePort();
    const gw = await startGateway({ config: [
        `apiPort: ${apiPort}`,
        'logLevel: warn',
        'bindings:',
        '  - name: over',
        '    source:',
        '      kind: kubemq.query',
        '      name: q',
        '      properties:',
        `        address: "127.0.0.1:${bport}"`,
        '        client_id: "overload"',
        '        channel: "q.over"',
        '        concurrency: 16',
        '    target:',
        '      kind: aws.kinesis',
        '      name: k',
        '      properties:',
        `        aws_key: "${AKID}"`,
        `        aws_secret_key: "${SECRET}"`,
        '        region: "us-east-1"',
        `        endpoint: "http://127.0.0.1:${kport}"`,
        '        max_connections: 16',
        '',
    ].join('\n') });
    try {
        const ex = await waitExit(b.proc, 50000);
        untrack(b.proc);
        assert.equal(ex.code, 0, `broker exit ${JSON.stringify(ex)}\n${b.out()}\n${b.err()}\ngateway:\n${gw.logs().slice(-3000)}`);
        const st = JSON.parse(fs.readFileSync(bjson, 'utf8'));
        assert.equal(st.errors, 0, JSON.stringify(st));
        assert.ok(st.ok > 1000, `only ${st.ok} answered`);
        // Idle, the gateway's RSS is ~4 MiB; before the fix the held buffer took the whole offered backlog.
        const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${gw.pid}/status`, 'utf8'))[1]);
        if (SANITIZED) t.diagnostic(`ASan build: peak RSS ${hwm} KiB not checked`);
        else assert.ok(hwm > 0 && hwm < 12 * 1024, `gateway peak RSS ${hwm} KiB`);
    } finally {
        await gw.stop();
        process.kill(k.proc.pid, 'SIGTERM');
        await waitExit(k.proc, 5000);
        untrack(k.proc);
    }
});

// Kinesis emulator for tests, in a child node process bound to 127.0.0.1 only.
//   startKinesalite({tls=false, certs /* makeCerts() result, needed for tls */, createStreamMs=0,
//                    deleteStreamMs=0, updateStreamMs=0, shardLimit=100})
//     -> {endpoint /* http(s)://127.0.0.1:<port> */, port, pid, stop() -> Promise<{code, signal}>}
//     (kinesalite's bundled certificate is expired, so TLS uses the generated PEMs.)
//   kinesisCall(endpoint, op, body, {ca /* PEM path */, region='us-east-1', accessKeyId, secretAccessKey})
//     -> {status, body /* parsed JSON or null */}: a SigV4-signed (aws4) JSON 1.1 call, e.g.
//        kinesisCall(ep, 'CreateStream', {StreamName: 's', ShardCount: 1}).
//   waitStreamActive(endpoint, name, {ca, ms=5000}) polls DescribeStream until ACTIVE.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import aws4 from 'aws4';
import { track, untrack, waitExit, firstLine, until } from './procs.mjs';

const TESTS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

const CHILD = `
const opts = JSON.parse(process.env.KK_KINESALITE_OPTS);
const fs = require('fs');
for (const k of ['key', 'cert', 'ca']) if (opts[k]) opts[k] = fs.readFileSync(opts[k]);
const srv = require('kinesalite')(opts);
srv.listen(0, '127.0.0.1', () => process.stdout.write(JSON.stringify({ port: srv.address().port }) + '\\n'));
const quit = () => srv.close(() => process.exit(0));
process.on('SIGTERM', quit);
process.on('SIGINT', quit);
`;

export async function startKinesalite({ tls = false, certs = null, createStreamMs = 0, deleteStreamMs = 0,
    updateStreamMs = 0, shardLimit = 100 } = {}) {
    const opts = { createStreamMs, deleteStreamMs, updateStreamMs, shardLimit };
    if (tls) {
        if (!certs) throw new Error('startKinesalite: tls needs certs (makeCerts())');
        Object.assign(opts, { ssl: true, key: certs.key, cert: certs.cert, ca: certs.ca });
    }
    const proc = track(spawn(process.execPath, ['-e', CHILD], {
        cwd: TESTS_DIR, stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, KK_KINESALITE_OPTS: JSON.stringify(opts) },
    }));
    let port;
    try {
        ({ port } = JSON.parse(await firstLine(proc, 10000, 'kinesalite')));
    } catch (e) {
        try { process.kill(proc.pid, 'SIGKILL'); } catch { /* gone */ }
        throw e;
    }
    return {
        endpoint: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`,
        port,
        pid: proc.pid,
        proc,
        async stop() {
            try { process.kill(proc.pid, 'SIGTERM'); } catch { /* gone */ }
            const r = await waitExit(proc, 5000);
            untrack(proc);
            return r;
        },
    };
}

export function kinesisCall(endpoint, op, body, { ca = null, region = 'us-east-1', accessKeyId = 'AKIDEXAMPLE',
    secretAccessKey = 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', timeoutMs = 5000 } = {}) {
    const u = new URL(endpoint);
    const payload = JSON.stringify(body || {});
    const req = {
        host: u.host, hostname: u.hostname, port: u.port, path: '/', method: 'POST', service: 'kinesis', region,
        headers: { 'Content-Type': 'application/x-amz-json-1.1', 'X-Amz-Target': `Kinesis_20131202.${op}` },
        body: payload,
    };
    aws4.sign(req, { accessKeyId, secretAccessKey });
    const mod = u.protocol === 'https:' ? https : http;
    if (ca) req.ca = fs.readFileSync(ca);
    return new Promise((resolve, reject) => {
        const r = mod.request({ ...req, timeout: timeoutMs }, (res) => {
            let data = '';
            res.setEncoding('utf8');
            res.on('data', (d) => { data += d; });
            res.on('end', () => {
                let parsed = null;
                try { parsed = data ? JSON.parse(data) : null; } catch { parsed = { raw: data }; }
                resolve({ status: res.statusCode, body: parsed });
            });
        });
        r.on('timeout', () => r.destroy(new Error(`kinesisCall ${op}: timeout`)));
        r.on('error', reject);
        r.end(payload);
    });
}

export async function waitStreamActive(endpoint, name, { ca = null, ms = 5000 } = {}) {
    const ok = await until(async () => {
        const r = await kinesisCall(endpoint, 'DescribeStream', { StreamName: name }, { ca });
        return r.status === 200 && r.body.StreamDescription.StreamStatus === 'ACTIVE';
    }, ms, 50);
    if (!ok) throw new Error(`stream ${name} not ACTIVE within ${ms} ms`);
}

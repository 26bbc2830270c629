// Runs the built gateway for a test.
//   gatewayPath() -> `${KK_BUILD_DIR}/kubemq-kinesis` (KK_BUILD_DIR defaults to <repo>/build)
//   haveGateway() -> true when that file exists (tests skip cleanly without it, never when it fails)
//   freePort() -> Promise<number>: a currently free 127.0.0.1 TCP port
//   startGateway({config /* YAML text with apiPort: N */, env = {}, args = [], logLevel /* e.g. 'debug' */,
//                 healthMs = 10000})
//     writes config to a temp file, spawns `kubemq-kinesis -c <file> [--log-level L] ...args`, waits until
//     GET http://127.0.0.1:<apiPort>/health answers 200 and returns
//     {proc, pid, apiPort, configPath, logs() -> stdout+stderr so far, get(path), post(path, body)
//      -> {status, text, json}, stop(signal='SIGTERM') -> Promise<{code, signal}>}.
//     The process is SIGKILLed at test-process exit in any case; stop() escalates to SIGKILL after 10 s.
//   ready(gw, ms = 10000) -> true once GET /ready answers 200, false after ms.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { track, untrack, waitExit, tmpDir, until } from './procs.mjs';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

export function gatewayPath() {
    return path.join(process.env.KK_BUILD_DIR || path.join(REPO, 'build'), 'kubemq-kinesis');
}

export function haveGateway() {
    return fs.existsSync(gatewayPath());
}

export function freePort() {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.once('error', reject);
        s.listen(0, '127.0.0.1', () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

async function httpCall(port, method, p, body) {
    const init = { method, signal: AbortSignal.timeout(3000) };
    if (body !== undefined) {
        init.body = typeof body === 'string' ? body : JSON.stringify(body);
        init.headers = { 'content-type': 'application/json' };
    }
    const r = await fetch(`http://127.0.0.1:${port}${p}`, init);
    const text = await r.text();
    let json = null;
    try { json = JSON.parse(text); } catch { /* not JSON */ }
    return { status: r.status, text, json };
}

export async function startGateway({ config, env = {}, args = [], logLevel = null, healthMs = 10000 } = {}) {
    const m = /^apiPort:\s*(\d+)/m.exec(config || '');
    if (!m) throw new Error('startGateway: the config needs a top-level "apiPort: <port>" (use freePort())');
    const apiPort = Number(m[1]);
    const dir = tmpDir('kk-gw-');
    const configPath = path.join(dir, 'config.yaml');
    fs.writeFileSync(configPath, config);
    const argv = ['-c', configPath, ...(logLevel ? ['--log-level', logLevel] : []), ...args];
    const proc = track(spawn(gatewayPath(), argv, {
        cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env },
    }));
    let out = '';
    const keep = (d) => {
        out += d;
        if (out.length > 4 * 1024 * 1024) out = out.slice(-2 * 1024 * 1024); // bounded
    };
    proc.stdout.on('data', keep);
    proc.stderr.on('data', keep);
    let exited = null;
    proc.once('exit', (code, signal) => { exited = { code, signal }; });
    const gw = {
        proc,
        pid: proc.pid,
        apiPort,
        configPath,
        logs: () => out,
        get: (p) => httpCall(apiPort, 'GET', p),
        post: (p, body) => httpCall(apiPort, 'POST', p, body ?? ''),
        async stop(signal = 'SIGTERM') {
            if (!exited) {
                try { process.kill(proc.pid, signal); } catch { /* gone */ }
            }
            const r = await waitExit(proc, 10000);
            untrack(proc);
            return r;
        },
    };
    const healthy = await until(async () => {
        if (exited) return 'exited';
        const r = await gw.get('/health');
        return r.status === 200;
    }, healthMs, 50);
    if (healthy !== true) {
        await gw.stop('SIGKILL');
        const why = exited ? `exited ${JSON.stringify(exited)}` : `no 200 from /health within ${healthMs} ms`;
        throw new Error(`gateway ${why}; log:\n${out.slice(-4000)}`);
    }
    return gw;
}

export async function ready(gw, ms = 10000) {
    const ok = await until(async () => (await gw.get('/ready')).status === 200, ms, 50);
    return !!ok;
}

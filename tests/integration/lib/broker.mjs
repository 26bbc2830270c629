// The test broker, in-process or as a child process.
//   startBroker(opts) -> see tests/broker/broker.js (grpcPort, controlPort, stats(), stop(), start(),
//                        reset(), close())
//   brokerProcess(args = []) -> {proc, pid, grpcPort, controlPort, address, stats(), control(path),
//                        stop(signal) -> Promise<{code, signal}>}: `node tests/broker/broker.js args`
//   brokerStats(controlPort) -> GET /stats JSON; brokerControl(controlPort, 'stop'|'start'|'reset')
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { track, untrack, waitExit, firstLine } from './procs.mjs';

export { startBroker } from '../../broker/broker.js';

const BROKER_JS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../broker/broker.js');

export async function brokerStats(controlPort) {
    const r = await fetch(`http://127.0.0.1:${controlPort}/stats`, { signal: AbortSignal.timeout(3000) });
    return r.json();
}

export async function brokerControl(controlPort, what) {
    const r = await fetch(`http://127.0.0.1:${controlPort}/${what}`, { method: 'POST', signal: AbortSignal.timeout(5000) });
    if (r.status !== 200) throw new Error(`broker /${what}: ${r.status} ${await r.text()}`);
    return r.json();
}

export async function brokerProcess(args = []) {
    const proc = track(spawn(process.execPath, [BROKER_JS, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }));
    let ports;
    try {
        ports = JSON.parse(await firstLine(proc, 10000, 'broker'));
    } catch (e) {
        try { process.kill(proc.pid, 'SIGKILL'); } catch { /* gone */ }
        throw e;
    }
    return {
        proc,
        pid: proc.pid,
        grpcPort: ports.grpc,
        controlPort: ports.control,
        address: `127.0.0.1:${ports.grpc}`,
        stats: () => brokerStats(ports.control),
        control: (what) => brokerControl(ports.control, what),
        async stop(signal = 'SIGTERM') {
            try { process.kill(proc.pid, signal); } catch { /* gone */ }
            const r = await waitExit(proc, 5000);
            untrack(proc);
            return r;
        },
    };
}

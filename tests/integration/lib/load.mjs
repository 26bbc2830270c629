// The load tool (${KK_BUILD_DIR}/kubemq-kinesis-load) as a child process for tests.
//   startLoad(args) -> {proc, out(), err()}: spawned and tracked (killed by pid at exit).
//   portOf(load, what) -> the port from the JSON line a mode prints when it listens.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { track, firstLine } from './procs.mjs';

export const LOAD = path.join(process.env.KK_BUILD_DIR || path.resolve('build'), 'kubemq-kinesis-load');

export function startLoad(args) {
    const proc = track(spawn(LOAD, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
    let out = '';
    let err = '';
    proc.stdout.on('data', (d) => { out += d; });
    proc.stderr.on('data', (d) => { err += d; });
    return { proc, out: () => out, err: () => err };
}

export async function portOf(l, what) {
    return JSON.parse(await firstLine(l.proc, 10000, what)).port;
}

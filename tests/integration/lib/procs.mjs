// Child-process bookkeeping shared by the harness: every process a helper spawns is registered
// here and killed (SIGKILL, by pid) when the test process exits, even after a failed test.
//   track(child) -> child; untrack(child); waitExit(child, ms) -> Promise<{code, signal}>
//   tmpDir(prefix) -> a fresh temp dir, removed at exit.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const live = new Set();
const dirs = new Set();

process.on('exit', () => {
    for (const c of live) {
        try { process.kill(c.pid, 'SIGKILL'); } catch { /* already gone */ }
    }
    for (const d of dirs) {
        try { fs.rmSync(d, { recursive: true, force: true }); } catch { /* ignore */ }
    }
});

export function track(child) {
    live.add(child);
    child.once('exit', () => live.delete(child));
    return child;
}

export function untrack(child) {
    live.delete(child);
}

// Resolves with the exit status; after ms, SIGKILLs the child and resolves anyway.
export function waitExit(child, ms = 5000) {
    if (child.exitCode !== null || child.signalCode !== null) {
        return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
    }
    return new Promise((resolve) => {
        const timer = setTimeout(() => {
            try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ }
        }, ms);
        child.once('exit', (code, signal) => {
            clearTimeout(timer);
            resolve({ code, signal });
        });
    });
}

export function tmpDir(prefix = 'kk-test-') {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    dirs.add(d);
    return d;
}

// Reads the first line a child prints on stdout (bounded by ms); rejects on early exit.
export function firstLine(child, ms, what) {
    return new Promise((resolve, reject) => {
        let buf = '';
        let err = '';
        const timer = setTimeout(() => reject(new Error(`${what}: no output within ${ms} ms; stderr: ${err}`)), ms);
        child.stderr?.on('data', (d) => { err += d; });
        const onData = (d) => {
            buf += d;
            const i = buf.indexOf('\n');
            if (i >= 0) {
                clearTimeout(timer);
                child.stdout.off('data', onData);
                resolve(buf.slice(0, i));
            }
        };
        child.stdout.on('data', onData);
        child.once('exit', (code) => {
            clearTimeout(timer);
            reject(new Error(`${what} exited (${code}) before it was ready; stderr: ${err}`));
        });
    });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls fn() every stepMs until it returns a truthy value or ms pass; returns the last value.
export async function until(fn, ms = 5000, stepMs = 50) {
    const end = Date.now() + ms;
    let v;
    for (;;) {
        try { v = await fn(); } catch { v = undefined; }
        if (v || Date.now() >= end) return v;
        await sleep(stepMs);
    }
}

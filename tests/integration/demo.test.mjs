// scripts/demo, the README's first command, against the gateway of this build:
// it must run the local stack end to end and stop everything with exit 0.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const src = process.env.KK_SOURCE_DIR || process.cwd();
const build = process.env.KK_BUILD_DIR || path.join(src, 'build');

test('scripts/demo runs the local stack and prints each request and reply', () => {
    const r = spawnSync(path.join(src, 'scripts/demo'), [], {
        cwd: src, encoding: 'utf8', timeout: 120000, env: { ...process.env, BUILD_DIR: build },
    });
    const out = `${r.stdout}\n${r.stderr}`;
    assert.equal(r.status, 0, out.slice(-3000));
    assert.match(r.stdout, /^>> query put_record$/m);
    assert.match(r.stdout, /"is_error":false/);
    assert.match(r.stdout, /All attempts fail:\\n#1: error parsing stream_name/);
    assert.match(r.stdout, /invalid request format, /);
    assert.match(r.stdout, /kinesalite now holds 4 records/);
    assert.match(r.stdout, /gateway stopped: \{"code":0,"signal":null\}/);
    assert.match(r.stdout, /^demo: OK$/m);
});

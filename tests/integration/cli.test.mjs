// The kubemq-kinesis command line: --check-config over the shipped configs and
// broken ones, --version, --help, CONFIG, and a real start / reload / stop.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const buildDir = process.env.KK_BUILD_DIR ?? 'build';
const srcDir = process.env.KK_SOURCE_DIR ?? process.cwd();
const bin = path.join(buildDir, 'kubemq-kinesis');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kk-cli-'));

function run(args, env = {}) {
  const e = { ...process.env, ...env };
  if (!('CONFIG' in env)) delete e.CONFIG;
  return spawnSync(bin, args, { encoding: 'utf8', timeout: 10000, env: e, cwd: srcDir });
}

test('--version prints the version', () => {
  const r = run(['--version']);
  assert.equal(r.status, 0);
  assert.match(r.stdout, /^kubemq-kinesis \d+\.\d+\.\d+\n$/);
});

test('--help prints usage and exits 0; a bad flag exits 2', () => {
  const r = run(['--help']);
  assert.equal(r.status, 0);
  assert.match(r.stdout, /usage: kubemq-kinesis/);
  assert.match(r.stdout, /--check-config/);
  const bad = run(['--no-such-flag']);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /usage:/);
  const lvl = run(['--log-level', 'loud', '--version']);
  assert.equal(lvl.status, 2);
});

test('every shipped config in config/ passes --check-config', () => {
  const dir = path.join(srcDir, 'config');
  const files = fs.readdirSync(dir).filter((f) => /\.(ya?ml|json)$/.test(f));
  assert.ok(files.length >= 3, `configs found: ${files}`);
  for (const f of files) {
    const r = run(['--check-config', '-c', path.join(dir, f)]);
    assert.equal(r.status, 0, `${f}: ${r.stderr}`);
    assert.match(r.stdout, /^config ok: \d+ bindings\n$/, f);
  }
});

test('the config inside config/kubernetes/sidecar.yaml (ConfigMap) passes --check-config', () => {
  const k8s = fs.readFileSync(path.join(srcDir, 'config/kubernetes/sidecar.yaml'), 'utf8');
  const m = k8s.match(/config\.yaml: \|\n((?: {4}.*\n|\n)+)/);
  assert.ok(m, 'ConfigMap block not found');
  const f = path.join(tmp, 'k8s.yaml');
  fs.writeFileSync(f, m[1].replace(/^ {4}/gm, ''));
  const r = run(['--check-config', '-c', f]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'config ok: 1 bindings\n');
});

test('a broken config exits 1 and names file:line:column of each problem', () => {
  const f = path.join(tmp, 'broken.yaml');
  fs.writeFileSync(f, [
    'bindings:',
    '  - name: b',
    '    source:',
    '      kind: kubemq.qery',
    '    target:',
    '      kind: aws.kinesis',
    '      properties:',
    '        max_connections: 0',
    '        aws_secret_key: "hunter2\\u0001"',
    '',
  ].join('\n'));
  const r = run(['--check-config', '-c', f]);
  assert.equal(r.status, 1);
  assert.ok(r.stderr.includes(`${f}:4:13: invalid kind kubemq.qery for source`), r.stderr);
  assert.ok(r.stderr.includes(`${f}:8:26: property max_connections: 0 out of range 1..4096`), r.stderr);
  assert.ok(r.stderr.includes(`${f}:9:25: property aws_secret_key: control character in value`), r.stderr);
  assert.ok(!r.stderr.includes('hunter2'), 'secret leaked');
  assert.equal(r.stdout, '');
});

test('the seed example with its tab is rejected at the tab', () => {
  const seed = fs.readFileSync(path.join(srcDir, 'config/seed-example.yaml'), 'utf8');
  const withTab = seed.replace('        aws_key:', '       \taws_key:');
  assert.notEqual(withTab, seed);
  const f = path.join(tmp, 'seed-tab.yaml');
  fs.writeFileSync(f, withTab);
  const line = withTab.split('\n').findIndex((l) => l.includes('\taws_key')) + 1;
  const r = run(['--check-config', '-c', f]);
  assert.equal(r.status, 1);
  assert.ok(r.stderr.includes(`${f}:${line}:8: tab character used for indentation`), r.stderr);
});

test('a missing file is an error naming it', () => {
  const r = run(['--check-config', '-c', path.join(tmp, 'nope.yaml')]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /nope\.yaml: cannot open/);
});

test('CONFIG (plain and base64) is used when -c is absent; -c wins over CONFIG', () => {
  const yaml = fs.readFileSync(path.join(srcDir, 'config/local.yaml'), 'utf8');
  let r = run(['--check-config'], { CONFIG: yaml });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'config ok: 2 bindings\n');
  r = run(['--check-config'], { CONFIG: Buffer.from(yaml).toString('base64') });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'config ok: 2 bindings\n');
  r = run(['--check-config', '-c', path.join(srcDir, 'config/seed-example.yaml')], { CONFIG: yaml });
  assert.equal(r.stdout, 'config ok: 1 bindings\n');
  r = run(['--check-config'], { CONFIG: 'bindings: [' });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /CONFIG:\d+:\d+: YAML syntax error/);
});

test('${VAR} expansion: a missing variable is named', () => {
  const f = path.join(tmp, 'env.yaml');
  fs.writeFileSync(f, 'apiPort: ${KK_CLI_PORT:-9999}\nlogLevel: ${KK_CLI_LEVEL}\nbindings: []\n');
  let r = run(['--check-config', '-c', f], { KK_CLI_LEVEL: 'debug' });
  assert.equal(r.status, 0, r.stderr);
  r = run(['--check-config', '-c', f]);
  assert.equal(r.status, 1);
  assert.ok(r.stderr.includes(`${f}:2:11: environment variable KK_CLI_LEVEL is not set`), r.stderr);
});

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// Collects stderr and resolves when a line matches (bounded by a timeout).
function waitFor(proc, state, re, ms = 10000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timeout waiting for ${re}; got:\n${state.err}`)), ms);
    const check = () => {
      if (re.test(state.err)) {
        clearTimeout(t);
        proc.stderr.off('data', check);
        resolve();
      }
    };
    proc.stderr.on('data', check);
    check();
  });
}

test('start, SIGHUP reload (bad then good), SIGTERM stops with exit 0', async () => {
  const port = await freePort();
  const f = path.join(tmp, 'run.yaml');
  fs.writeFileSync(f, `apiPort: ${port}\nlogLevel: info\nbindings: []\n`);
  const proc = spawn(bin, ['-c', f], { cwd: srcDir, stdio: ['ignore', 'ignore', 'pipe'] });
  const state = { err: '' };
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (d) => { state.err += d; });
  const exited = new Promise((resolve) => proc.on('exit', (code, sig) => resolve({ code, sig })));
  try {
    await waitFor(proc, state, /starting kubemq-kinesis version \d+\.\d+\.\d+/);
    await waitFor(proc, state, /0 bindings loaded/);

    fs.writeFileSync(f, `apiPort: ${port}\nbindings:\n  - name: x\n    source: {kind: nope}\n`);
    proc.kill('SIGHUP');
    await waitFor(proc, state, /run\.yaml:4:20: invalid kind nope for source/);
    await waitFor(proc, state, /keeping the old one/);
    assert.equal(proc.exitCode, null, 'still running after a bad reload');

    fs.writeFileSync(f, `apiPort: ${port}\nbindings: []\nlogLevel: debug\n`);
    proc.kill('SIGHUP');
    await waitFor(proc, state, /configuration reloaded, 0 bindings loaded/);

    proc.kill('SIGTERM');
    let timer;
    const r = await Promise.race([exited, new Promise((res) => { timer = setTimeout(() => res('timeout'), 15000); })]);
    clearTimeout(timer);
    assert.notEqual(r, 'timeout', `did not stop:\n${state.err}`);
    assert.equal(r.code, 0, state.err);
    assert.doesNotMatch(state.err, /handle still open|event loop not empty/);
  } finally {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  }
});

test('an API port already in use fails the start with exit 1 and a clean loop', async () => {
  const busy = net.createServer();
  await new Promise((resolve) => busy.listen(0, '0.0.0.0', resolve));
  try {
    const f = path.join(tmp, 'busy.yaml');
    fs.writeFileSync(f, `apiPort: ${busy.address().port}\nbindings: []\n`);
    const proc = spawn(bin, ['-c', f], { cwd: srcDir, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (d) => { err += d; });
    let timer;
    const r = await Promise.race([
      new Promise((resolve) => proc.on('exit', (code) => resolve(code))),
      new Promise((resolve) => { timer = setTimeout(() => resolve('timeout'), 10000); }),
    ]);
    clearTimeout(timer);
    if (r === 'timeout') proc.kill('SIGKILL');
    assert.equal(r, 1, err);
    assert.match(err, /cannot start/);
    assert.doesNotMatch(err, /handle still open|event loop not empty/);
  } finally {
    busy.close();
  }
});

test('a config error at normal start exits 1 with every problem', () => {
  const f = path.join(tmp, 'two.yaml');
  fs.writeFileSync(f, 'bindings:\n  - source: {kind: kubemq.query}\n    target: {kind: bogus}\n');
  const r = run(['-c', f]);
  assert.equal(r.status, 1);
  assert.ok(r.stderr.includes(`${f}:2:5: binding must have name`), r.stderr);
  assert.ok(r.stderr.includes(`${f}:3:20: invalid kind bogus for target`), r.stderr);
  assert.match(r.stderr, /missing required property channel/);
});

test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

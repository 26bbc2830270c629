// Cross-checks kk_sigv4_kinesis_head against npm aws4 (an independent SigV4
// implementation): 200 random Kinesis requests (bodies, targets, tokens,
// dates, regions, hosts, keys), signed by both, must give identical heads'
// Authorization values.  aws4 is told to skip content-length so both sign the
// botocore set (kinesis-vectors.md variant A/B).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import path from 'node:path';
import { createRequire } from 'node:module';

const srcDir = process.env.KK_SOURCE_DIR ?? process.cwd();
const buildDir = process.env.KK_BUILD_DIR ?? path.join(srcDir, 'build');
const require = createRequire(path.join(srcDir, 'tests', 'package.json'));
const aws4 = require('aws4');
const tool = path.join(buildDir, 'tests', 'tools', 'sigv4_tool');

const OPS = ['PutRecord', 'PutRecords', 'CreateStream', 'DescribeStream', 'ListStreams', 'GetRecords',
  'GetShardIterator', 'ListShards', 'DeleteStream', 'DescribeStreamSummary'];
const REGIONS = ['us-east-1', 'us-west-2', 'eu-west-1', 'cn-north-1', 'ap-southeast-2', 'us-gov-west-1'];

// Deterministic per run seed (printed) so a failure can be replayed.
const seed = Number(process.env.KK_SIGV4_SEED ?? crypto.randomInt(1, 2 ** 31));
let state = seed;
function rnd(n) { // xorshift32
  state ^= state << 13; state >>>= 0;
  state ^= state >>> 17;
  state ^= state << 5; state >>>= 0;
  return state % n;
}
function pick(a) { return a[rnd(a.length)]; }
function randStr(alphabet, min, max) {
  const n = min + rnd(max - min + 1);
  let s = '';
  for (let i = 0; i < n; i++) s += alphabet[rnd(alphabet.length)];
  return s;
}
const UPPER = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
const SECRET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=';

function makeCase(i) {
  const region = rnd(4) === 0 ? `${randStr('abcdefghijklmnopqrstuvwxyz', 2, 3)}-${randStr('abcdefghijklmnopqrstuvwxyz', 3, 9)}-${1 + rnd(9)}` : pick(REGIONS);
  const hostKind = rnd(3);
  const host = hostKind === 0 ? `kinesis.${region}.amazonaws.com${region.startsWith('cn-') ? '.cn' : ''}`
    : hostKind === 1 ? `127.0.0.1:${1024 + rnd(60000)}` : `[::1]:${1024 + rnd(60000)}`;
  const bodyLen = pick([0, 1, 2, 3, 74, 100 + rnd(2000), rnd(70000)]);
  const body = Buffer.alloc(bodyLen);
  for (let j = 0; j < bodyLen; j++) body[j] = rnd(256);
  return {
    ak: randStr(UPPER, 16, 20),
    sk: randStr(SECRET, 20, 40),
    token: rnd(2) ? randStr(SECRET, 16, 1200) : '',
    region,
    host,
    target: `Kinesis_20131202.${pick(OPS)}`,
    // 2000-01-01 .. 2099-12-31, any second of the day (day boundaries included)
    epoch: 946684800 + rnd(3155760000 / 60) * 60 + rnd(60),
    body,
  };
}

function amzDate(epoch) {
  return new Date(epoch * 1000).toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z');
}

function aws4Auth(c) {
  const opts = {
    host: c.host, path: '/', method: 'POST', service: 'kinesis', region: c.region, body: c.body,
    headers: {
      Host: c.host,
      'Content-Type': 'application/x-amz-json-1.1',
      'X-Amz-Target': c.target,
      'X-Amz-Date': amzDate(c.epoch),
    },
    extraHeadersToIgnore: { 'content-length': true },
  };
  const creds = { accessKeyId: c.ak, secretAccessKey: c.sk };
  if (c.token) creds.sessionToken = c.token;
  aws4.sign(opts, creds);
  return opts.headers;
}

function runTool(cases) {
  const input = cases.map((c) => [c.ak, c.sk, c.token, c.region, c.host, c.target, String(c.epoch),
    c.body.toString('base64')].join('\t')).join('\n') + '\n';
  const r = spawnSync(tool, [], { input, encoding: 'utf8', timeout: 30000, maxBuffer: 64 << 20 });
  assert.equal(r.error, undefined, `cannot run ${tool}: ${r.error}`);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  assert.equal(lines.length, cases.length);
  return lines.map((l) => {
    assert.ok(!l.startsWith('ERR'), l);
    return Buffer.from(l, 'base64').toString('latin1');
  });
}

function parseHead(head) {
  assert.ok(head.endsWith('\r\n\r\n'), 'head ends with a blank line');
  const lines = head.slice(0, -4).split('\r\n');
  assert.equal(lines[0], 'POST / HTTP/1.1');
  const h = {};
  for (const l of lines.slice(1)) {
    const i = l.indexOf(': ');
    assert.ok(i > 0, `header line ${l}`);
    const name = l.slice(0, i).toLowerCase();
    assert.equal(h[name], undefined, `duplicate ${name}`);
    h[name] = l.slice(i + 2);
  }
  return h;
}

test(`200 random Kinesis requests: kk_sigv4_kinesis_head == aws4 (seed ${seed})`, () => {
  const cases = Array.from({ length: 200 }, (_, i) => makeCase(i));
  const heads = runTool(cases);
  let withToken = 0;
  cases.forEach((c, i) => {
    const ours = parseHead(heads[i]);
    const theirs = aws4Auth(c);
    const what = `case ${i} (seed ${seed})`;
    assert.equal(ours.host, c.host, what);
    assert.equal(ours['content-type'], 'application/x-amz-json-1.1', what);
    assert.equal(ours['x-amz-target'], c.target, what);
    assert.equal(ours['x-amz-date'], theirs['X-Amz-Date'], what);
    assert.equal(ours['content-length'], String(c.body.length), what);
    if (c.token) {
      withToken++;
      assert.equal(ours['x-amz-security-token'], c.token, what);
    } else {
      assert.equal(ours['x-amz-security-token'], undefined, what);
    }
    assert.equal(ours.authorization, theirs.Authorization, what);
  });
  assert.ok(withToken > 0 && withToken < cases.length, 'both token and no-token cases ran');
});

test('a different secret, date or body changes the signature (the comparison can fail)', () => {
  const base = makeCase(0);
  const variants = [base,
    { ...base, sk: base.sk + 'x' },
    { ...base, epoch: base.epoch + 86400 },
    { ...base, body: Buffer.concat([base.body, Buffer.from('!')]) }];
  const heads = runTool(variants).map(parseHead);
  assert.equal(heads[0].authorization, aws4Auth(base).Authorization);
  for (let i = 1; i < variants.length; i++) {
    assert.notEqual(heads[i].authorization, heads[0].authorization, `variant ${i}`);
    assert.equal(heads[i].authorization, aws4Auth(variants[i]).Authorization, `variant ${i}`);
  }
});

test('header injection through the host, target or token is refused', () => {
  // The tool reads one case per line, so the injected break is a bare CR.
  const c = makeCase(1);
  const rows = [
    [c.ak, c.sk, '', c.region, 'evil\rX-Bad: 1', c.target],
    [c.ak, c.sk, '', c.region, c.host, 'Kinesis_20131202.PutRecord\rX-Bad: 1'],
    [c.ak, c.sk, 'tok\rX-Bad: 1', c.region, c.host, c.target],
  ];
  const input = rows.map((r) => [...r, '1440938160', ''].join('\t')).join('\n') + '\n';
  const r = spawnSync(tool, [], { input, encoding: 'utf8', timeout: 10000 });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(r.stdout.trim().split('\n'), ['ERR KK_EINVAL', 'ERR KK_EINVAL', 'ERR KK_EINVAL']);
});

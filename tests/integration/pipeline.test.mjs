// The binding pipeline and the app around it, end to end: test broker -> kubemq-kinesis -> built-in
// `null` target.  The HTTP API (/health, /ready, /metrics parsed as Prometheus text 0.0.4, /bindings
// with secrets masked, /bindings/stats, POST /bindings/request), SIGTERM with requests in flight
// (every one replied, exit 0) and SIGHUP with a changed and an unchanged binding (the unchanged one
// keeps its broker connection).
// Skips cleanly when ${KK_BUILD_DIR}/kubemq-kinesis has not been built; fails when it misbehaves.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { startBroker } from './lib/broker.mjs';
import { startGateway, ready, freePort, haveGateway, gatewayPath } from './lib/gateway.mjs';
import { request, sendQuery, bytesToString, sleep } from './lib/kubemq.mjs';
import { until } from './lib/procs.mjs';

const skip = haveGateway() ? false : `gateway binary ${gatewayPath()} is missing (build it: ninja -C <builddir>)`;

const PUT = request({ method: 'put_record', stream_name: 's', partition_key: 'k' }, Buffer.from('hello'));

let broker;
let addr;
before(async () => {
    if (skip) return;
    broker = await startBroker({});
    addr = broker.address();
});
after(async () => {
    await broker?.close();
});

function config(apiPort, bindings, shutdown = 2) {
    return `apiPort: ${apiPort}\nlogLevel: debug\nshutdown_timeout_seconds: ${shutdown}\nbindings: ${JSON.stringify(bindings)}\n`;
}

function binding(name, channel, { source = {}, target = { kind: 'null' }, props } = {}) {
    const b = { name, source: { kind: 'kubemq.query', properties: { address: addr, channel, client_id: `gw-${name}`, ...source } }, target };
    if (props) b.properties = props;
    return b;
}

async function withGateway(cfg, fn) {
    const gw = await startGateway({ config: cfg });
    let failed = true;
    try {
        await fn(gw);
        failed = false;
    } catch (e) {
        e.message += `\n--- gateway log (tail) ---\n${gw.logs().slice(-3000)}`;
        throw e;
    } finally {
        const st = await gw.stop();
        if (!failed) assert.deepEqual(st, { code: 0, signal: null }, `clean exit; log tail:\n${gw.logs().slice(-2000)}`);
    }
}

// Prometheus text format 0.0.4: # HELP / # TYPE lines and samples `name{l="v",...} value`.
function parseProm(text) {
    const types = new Map();
    const helps = new Map();
    const samples = [];
    for (const line of text.split('\n')) {
        if (line === '') continue;
        let m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
        if (m) {
            (m[1] === 'HELP' ? helps : types).set(m[2], m[3]);
            continue;
        }
        assert.ok(!line.startsWith('#'), `unexpected comment line: ${line}`);
        m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
        assert.ok(m, `malformed sample line: ${JSON.stringify(line)}`);
        const labels = {};
        if (m[2]) {
            const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/g;
            let consumed = 0;
            for (let l; (l = re.exec(m[2]));) {
                labels[l[1]] = l[2].replace(/\\n/g, '\n').replace(/\\(.)/g, '$1');
                consumed = re.lastIndex;
            }
            assert.equal(consumed, m[2].length, `malformed labels: ${m[2]}`);
        }
        const value = m[3] === '+Inf' ? Infinity : Number(m[3]);
        assert.ok(!Number.isNaN(value), `bad value in ${line}`);
        samples.push({ name: m[1], labels, value });
    }
    for (const s of samples) {
        const fam = types.has(s.name) ? s.name : s.name.replace(/_(bucket|sum|count)$/, '');
        assert.ok(types.has(fam), `no # TYPE for ${s.name}`);
        assert.ok(helps.has(fam), `no # HELP for ${s.name}`);
    }
    const get = (name, labels = {}) => samples.filter((s) => s.name === name &&
        Object.entries(labels).every(([k, v]) => s.labels[k] === v));
    return { types, helps, samples, get };
}

test('API: health, ready, request, metrics, stats', { skip }, async () => {
    const port = await freePort();
    const b = binding('p1', 'p1', { props: { metadata: '{"stream_name":"from-binding"}' } });
    await withGateway(config(port, [b]), async (gw) => {
        let r = await gw.get('/health');
        assert.equal(r.status, 200);
        assert.equal(r.text, 'ok');
        assert.ok(await ready(gw), '/ready 200 within 10 s');
        r = await gw.get('/ready');
        assert.equal(r.text, 'ready');

        for (let i = 0; i < 3; i++) {
            const { response } = await sendQuery(addr, 'p1', PUT, 5000);
            assert.equal(response.executed, true);
            assert.deepEqual(JSON.parse(bytesToString(response.body)),
                { metadata: { result: 'ok' }, data: null, is_error: false, error: '' });
        }

        r = await gw.post('/bindings/request', { binding: 'p1', payload: { metadata: { method: 'put_record' }, data: 'aGVsbG8=' } });
        assert.equal(r.status, 200);
        assert.deepEqual(r.json, { metadata: { result: 'ok' }, data: null, is_error: false, error: '' });
        r = await gw.post('/bindings/request', { binding: 'nope', payload: {} });
        assert.equal(r.status, 200);
        assert.equal(r.json.is_error, true);
        assert.equal(r.json.error, 'no such binding, nope');
        r = await gw.post('/bindings/request', { binding: 'p1', payload: { data: '%%%not base64' } });
        assert.equal(r.status, 200);
        assert.equal(r.json.is_error, true);
        assert.match(r.json.error, /^error during parsing request: /);
        r = await gw.post('/bindings/request', '{"binding": ');
        assert.equal(r.status, 400);
        assert.match(r.json.Error, /^invalid request, /);
        r = await gw.get('/nowhere');
        assert.equal(r.status, 404);

        r = await gw.get('/metrics');
        assert.equal(r.status, 200);
        const prom = parseProm(r.text);
        const lab = { binding: 'p1', source_name: '', source_kind: 'kubemq.query', target_name: '', target_kind: 'null' };
        const one = (name, labels) => {
            const s = prom.get(name, labels);
            assert.equal(s.length, 1, `one sample of ${name} ${JSON.stringify(labels)}; got ${JSON.stringify(s)}`);
            return s[0].value;
        };
        for (const f of ['requests_count', 'requests_volume', 'responses_count', 'responses_volume', 'errors_count'])
            assert.equal(prom.types.get(`kubemq_targets_${f}`), 'counter');
        // 3 queries + 1 good POST reached the middleware; the invalid payload did not.
        assert.equal(one('kubemq_targets_requests_count', lab), 4);
        assert.equal(one('kubemq_targets_requests_volume', lab), 20);
        assert.equal(one('kubemq_targets_responses_count', lab), 4);
        assert.equal(one('kubemq_targets_responses_volume', lab), 0);
        assert.equal(one('kubemq_targets_errors_count', lab), 0);
        assert.equal(one('kubemq_kinesis_inflight', { binding: 'p1' }), 0);
        assert.equal(one('kubemq_kinesis_retries_total', { binding: 'p1' }), 0);
        assert.equal(prom.types.get('kubemq_kinesis_request_duration_seconds'), 'histogram');
        const buckets = prom.get('kubemq_kinesis_request_duration_seconds_bucket', { binding: 'p1' });
        assert.ok(buckets.length >= 2);
        for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i].value >= buckets[i - 1].value, 'cumulative buckets');
        assert.equal(buckets.at(-1).labels.le, '+Inf');
        assert.equal(buckets.at(-1).value, 4);
        assert.equal(one('kubemq_kinesis_request_duration_seconds_count', { binding: 'p1' }), 4);
        assert.ok(one('kubemq_kinesis_request_duration_seconds_sum', { binding: 'p1' }) >= 0);

        r = await gw.get('/bindings/stats');
        assert.equal(r.status, 200);
        assert.equal(r.json.length, 1);
        assert.equal(r.json[0].binding, 'p1');
        assert.equal(r.json[0].request_count, 4);
        assert.equal(r.json[0].errors_count, 0);
    });
});

test('API: a binding named a"b\\c renders valid Prometheus exposition (one label escaping)', { skip }, async () => {
    const port = await freePort();
    const name = 'a"b\\c';
    await withGateway(config(port, [binding(name, 'pq1')]), async (gw) => {
        assert.ok(await ready(gw), '/ready 200 within 10 s');
        const { response } = await sendQuery(addr, 'pq1', PUT, 5000);
        assert.equal(response.executed, true);
        const r = await gw.get('/metrics');
        assert.equal(r.status, 200);
        const prom = parseProm(r.text); // asserts every sample and label set is well-formed
        const one = (metric) => {
            const s = prom.get(metric, { binding: name });
            assert.equal(s.length, 1, `one sample of ${metric}; got ${JSON.stringify(s)}`);
            return s[0].value;
        };
        assert.equal(one('kubemq_kinesis_source_messages_total'), 1); // sources
        assert.equal(one('kubemq_kinesis_source_reply_errors_total'), 0);
        assert.equal(one('kubemq_targets_requests_count'), 1); // api
        assert.equal(one('kubemq_kinesis_inflight'), 0);
        assert.equal(prom.get('kubemq_kinesis_source_published_total', { binding: name, result: 'ok' }).length, 1);
        assert.ok(r.text.includes('binding="a\\"b\\\\c"'), 'escaped as \\" and \\\\');
    });
});

test('API: /bindings masks secrets; /ready lists what is not ready', { skip }, async () => {
    const port = await freePort();
    const dead = await freePort(); // nothing listens there
    const kin = binding('k1', 'k1', {
        target: { kind: 'aws.kinesis', properties: { aws_key: 'AKIDEXAMPLE', aws_secret_key: 'very-secret-value', region: 'us-east-1', endpoint: `http://127.0.0.1:${dead}` } },
    });
    const off = binding('off', 'off', { source: { address: `127.0.0.1:${dead}`, auth_token: 'tok-secret-value' } });
    await withGateway(config(port, [kin, off]), async (gw) => {
        const r = await gw.get('/bindings');
        assert.equal(r.status, 200);
        assert.ok(!r.text.includes('very-secret-value'), 'aws_secret_key not shown');
        assert.ok(!r.text.includes('tok-secret-value'), 'auth_token not shown');
        assert.ok(!r.text.includes('AKIDEXAMPLE'), 'aws_key not shown');
        assert.equal(r.json.length, 2);
        assert.equal(r.json[0].binding, 'k1');
        assert.equal(r.json[0].target_type, 'aws.kinesis');
        assert.equal(r.json[0].target_config.aws_secret_key, '***');
        assert.equal(r.json[0].target_config.region, 'us-east-1');
        assert.equal(r.json[0].source_connection, `${addr}/k1`);
        assert.equal(r.json[1].source_config.auth_token, '***');
        assert.equal(r.json[1].ready, false);
        const rd = await gw.get('/ready');
        assert.equal(rd.status, 503);
        assert.match(rd.text, /^off: .+/m);
        assert.ok(!rd.text.includes('very-secret-value'));
    });
});

test('a binding that cannot start (no AWS credentials) is retried and reported; the others run', { skip }, async () => {
    const port = await freePort();
    const home = fs.mkdtempSync('/tmp/kk-nocreds-');
    const nocreds = binding('nocreds', 'nc', { target: { kind: 'aws.kinesis', properties: { region: 'us-east-1' } } });
    const ok = binding('ok', 'okc');
    const env = {
        HOME: home, AWS_SHARED_CREDENTIALS_FILE: `${home}/none`, AWS_ACCESS_KEY_ID: '', AWS_SECRET_ACCESS_KEY: '',
        AWS_SESSION_TOKEN: '', AWS_PROFILE: '',
    };
    const gw = await startGateway({ config: config(port, [nocreds, ok]), env });
    try {
        // The working binding serves while the other one is down.
        const reply = await until(async () => {
            try { return (await sendQuery(addr, 'okc', PUT, 2000)).json; } catch { return null; }
        }, 10000, 200);
        assert.equal(reply?.is_error, false, 'the healthy binding answers');
        const rd = await gw.get('/ready');
        assert.equal(rd.status, 503);
        assert.match(rd.text, /^nocreds: .*credentials/mi);
        assert.doesNotMatch(rd.text, /^ok:/m);
        // Start is retried with backoff: at least two failed attempts within ~3 s.
        assert.ok(await until(() => (gw.logs().match(/nocreds.*(attempt|retry)/gi) || []).length >= 2, 5000, 100),
            `start retried; log tail:\n${gw.logs().slice(-1500)}`);
    } finally {
        const st = await gw.stop();
        fs.rmSync(home, { recursive: true, force: true });
        assert.deepEqual(st, { code: 0, signal: null });
    }
});

test('/ready says when a source gave up reconnecting (max_reconnects reached)', { skip }, async () => {
    const port = await freePort();
    const dead = await freePort();
    const gone = binding('gone', 'gone', { source: { address: `127.0.0.1:${dead}`, max_reconnects: 1, connect_timeout_ms: 200 } });
    await withGateway(config(port, [gone]), async (gw) => {
        const text = await until(async () => {
            const r = await gw.get('/ready');
            return r.status === 503 && /failed permanently/.test(r.text) ? r.text : null;
        }, 8000, 100);
        assert.ok(text, 'ready reason names the permanent failure');
        assert.match(text, /^gone: .*max_reconnects/m);
    });
});

test('SIGTERM with requests in flight: every request is replied to, exit 0', { skip }, async () => {
    const port = await freePort();
    // One token per second: the first query runs at once, the others wait for tokens when SIGTERM
    // comes, so they are still in flight after the 1 s shutdown timeout.
    const b = binding('d1', 'd1', { props: { rate_per_second: '1' } });
    const gw = await startGateway({ config: config(port, [b], 1) });
    try {
        assert.ok(await ready(gw));
        const pending = Array.from({ length: 6 }, () => sendQuery(addr, 'd1', PUT, 15000));
        const seen = await until(() => (broker.stats().requests.d1?.sent ?? 0) >= 6, 5000, 20);
        assert.ok(seen, 'the broker delivered all 6 queries');
        await sleep(200);
        const t0 = Date.now();
        const st = await gw.stop('SIGTERM');
        const results = await Promise.all(pending);
        const took = Date.now() - t0;
        assert.deepEqual(st, { code: 0, signal: null });
        assert.ok(took < 5000, `stopped in ${took} ms`);
        const bodies = results.map(({ response }) => JSON.parse(bytesToString(response.body)));
        const ok = bodies.filter((x) => !x.is_error).length;
        const failed = bodies.filter((x) => x.error === 'shutting down: request not completed within shutdown_timeout_seconds');
        assert.ok(ok >= 1, 'the first one succeeded');
        assert.equal(ok + failed.length, 6, `all replied: ${JSON.stringify(bodies)}`);
        assert.ok(failed.length >= 3, 'the ones waiting for tokens failed at the shutdown timeout');
        assert.equal(broker.stats().requests.d1.answered, 6);
        // A SendResponse whose ack the client close cancels is expected on stop: debug, not error.
        assert.doesNotMatch(gw.logs(), /ERROR\t[^\n]*error sending reply to kubemq: canceled/);
    } catch (e) {
        e.message += `\n--- gateway log (tail) ---\n${gw.logs().slice(-3000)}`;
        await gw.stop('SIGKILL');
        throw e;
    }
});

test('SIGHUP: the changed binding is replaced, the unchanged keeps its connection', { skip }, async () => {
    const port = await freePort();
    const keep = binding('keep', 'hk');
    const chg1 = binding('chg', 'hc1');
    const chg2 = binding('chg', 'hc2');
    await withGateway(config(port, [keep, chg1]), async (gw) => {
        assert.ok(await ready(gw));
        let r = await sendQuery(addr, 'hk', PUT, 5000);
        assert.equal(r.response.executed, true);
        await until(() => broker.stats().subscribers.hk === 1 && broker.stats().subscribers.hc1 === 1, 5000, 20);
        const before = broker.stats().connections;

        fs.writeFileSync(gw.configPath, config(port, [keep, chg2]));
        process.kill(gw.pid, 'SIGHUP');
        const moved = await until(() => {
            const s = broker.stats().subscribers;
            return s.hc2 === 1 && !s.hc1;
        }, 8000, 20);
        assert.ok(moved, `subscription moved from hc1 to hc2: ${JSON.stringify(broker.stats().subscribers)}`);
        assert.equal(broker.stats().subscribers.hk, 1);
        const after = broker.stats().connections;
        assert.equal(after - before, 1, 'only the changed binding made a new broker connection');
        assert.match(gw.logs(), /binding: keep unchanged, kept running/);
        assert.ok(await ready(gw));

        for (const ch of ['hk', 'hc2']) {
            r = await sendQuery(addr, ch, PUT, 5000);
            assert.equal(r.response.executed, true, `query on ${ch}`);
            assert.equal(JSON.parse(bytesToString(r.response.body)).is_error, false);
        }
        const bs = (await gw.get('/bindings')).json;
        assert.deepEqual(bs.map((x) => x.binding), ['keep', 'chg']);
        assert.equal(bs[1].source_connection, `${addr}/hc2`);

        // apiPort change: the API server moves, the bindings stay.
        const port2 = await freePort();
        fs.writeFileSync(gw.configPath, config(port2, [keep, chg2]));
        const conns = broker.stats().connections;
        process.kill(gw.pid, 'SIGHUP');
        const health = (p) => fetch(`http://127.0.0.1:${p}/health`, { signal: AbortSignal.timeout(1000) })
            .then((x) => x.status, () => 0);
        assert.ok(await until(async () => (await health(port2)) === 200, 5000, 20), 'API on the new port');
        assert.ok(await until(async () => (await health(port)) === 0, 5000, 20), 'old port closed');
        assert.equal(broker.stats().connections, conns, 'no binding reconnected');
        r = await sendQuery(addr, 'hk', PUT, 5000);
        assert.equal(r.response.executed, true);
    });
});

// The whole chain, end to end: kubemq-js (or a raw grpc-js client for bursts) -> test broker ->
// kubemq-kinesis (every source kind, the aws.kinesis target) -> kinesalite over HTTP and TLS, or the
// fault-injecting Kinesis server (tests/fault/kinesis-fault.mjs).  Checks every Kinesis method and its
// output JSON (connector-behaviour.md §7), the reply rules of each source kind (§4, §8), the retry /
// rate / metadata middleware (§5), the per-binding concurrency cap, SIGTERM with ~500 queries and
// with queue messages in flight, and a broker restart with messages in flight (no queue message lost).
// One broker and one kinesalite per transport for the whole file; each group of bindings runs in its
// own gateway, stopped with SIGTERM after its tests (exit 0 and no AWS key or secret in its log).
// Skips cleanly when ${KK_BUILD_DIR}/kubemq-kinesis has not been built; fails when it misbehaves.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startBroker } from './lib/broker.mjs';
import { makeCerts } from './lib/certs.mjs';
import { startGateway, ready, freePort, haveGateway, gatewayPath } from './lib/gateway.mjs';
import { startKinesalite, kinesisCall, waitStreamActive } from './lib/kinesalite.mjs';
import {
    request, sendQuery, sendCommand, publishEvent, publishEventStore, sendQueueBatch, pullQueue, subscribeEvents,
    rawClient, callUnary, bytesToString, sleep,
} from './lib/kubemq.mjs';
import { until } from './lib/procs.mjs';
import { startFaultServer } from '../fault/kinesis-fault.mjs';

const skip = haveGateway() ? false : `gateway binary ${gatewayPath()} is missing (build it: ninja -C <builddir>)`;

const KEY = 'AKIDE2ETEST';
const SECRET = 'e2e-secret-never-logged';
const SHARD0 = 'shardId-000000000000';
const b64 = (x) => Buffer.from(x).toString('base64');

let broker;
let addr;
let kl; // kinesalite over HTTP
let kls; // kinesalite over TLS
let certs;
before(async () => {
    if (skip) return;
    certs = makeCerts();
    [broker, kl, kls] = await Promise.all([startBroker({}), startKinesalite(), startKinesalite({ tls: true, certs })]);
    addr = broker.address();
});
after(async () => {
    await Promise.all([broker?.close(), kl?.stop(), kls?.stop()]);
});

// ---- helpers ----

function config(apiPort, bindings, shutdown = 2) {
    return `apiPort: ${apiPort}\nlogLevel: info\nshutdown_timeout_seconds: ${shutdown}\nbindings: ${JSON.stringify(bindings)}\n`;
}

function kinesisTarget(endpoint, extra = {}) {
    return { kind: 'aws.kinesis', name: 'kin',
        properties: { aws_key: KEY, aws_secret_key: SECRET, region: 'us-east-1', endpoint, ...extra } };
}

function binding(name, kind, source, target, props) {
    const b = { name, source: { kind, name: `src-${name}`, properties: { address: addr, client_id: `e2e-${name}`, ...source } }, target };
    if (props) b.properties = props;
    return b;
}

// A gateway for one describe(): started in before(), stopped with SIGTERM in after() (exit 0, no
// secret in its log).  `g.gw` is the running gateway; `g.fail(e)` appends its log tail to an error.
function gatewayFor(mkBindings, { shutdown = 2 } = {}) {
    const g = { gw: null };
    before(async () => {
        if (skip) return;
        g.gw = await startGateway({ config: config(await freePort(), await mkBindings(), shutdown) });
        assert.ok(await ready(g.gw, 10000), `gateway /ready within 10 s; log:\n${g.gw.logs().slice(-3000)}`);
    });
    after(async () => {
        if (!g.gw) return;
        const st = await g.gw.stop();
        const logs = g.gw.logs();
        assert.deepEqual(st, { code: 0, signal: null }, `clean exit on SIGTERM; log tail:\n${logs.slice(-2000)}`);
        assert.ok(!logs.includes(SECRET), 'the AWS secret never appears in the log');
        assert.ok(!logs.includes(KEY), 'the AWS key id never appears in the log');
    });
    g.wrap = (fn) => async (t) => {
        try {
            await fn(t);
        } catch (e) {
            if (g.gw) e.message += `\n--- gateway log (tail) ---\n${g.gw.logs().slice(-3000)}`;
            throw e;
        }
    };
    return g;
}

// Response JSON (§3.2): field order metadata, data, is_error, error; metadata never null.
function parseResponse(text) {
    let r;
    try {
        r = JSON.parse(text);
    } catch {
        assert.fail(`reply body is not JSON: ${JSON.stringify(text)}`);
    }
    assert.deepEqual(Object.keys(r), ['metadata', 'data', 'is_error', 'error'], `Response JSON layout: ${text}`);
    assert.equal(typeof r.metadata, 'object');
    assert.notEqual(r.metadata, null);
    return r;
}

const dataOf = (r) => (r.data === null ? null : JSON.parse(Buffer.from(r.data, 'base64').toString('utf8')));

function assertOk(r, what = '') {
    assert.equal(r.is_error, false, `${what} unexpected error: ${r.error}`);
    assert.equal(r.error, '');
    assert.equal(r.metadata.result, 'ok');
}

// One query through kubemq-js; returns the parsed Response JSON (Executed must be true, §4.3).
async function query(channel, metadata, data, opts = {}) {
    const body = typeof metadata === 'string' ? metadata : request(metadata, data);
    const { response } = await sendQuery(addr, channel, body, opts.timeoutMs ?? 8000);
    assert.equal(response.executed, true, 'a query reply is always Executed=true');
    return parseResponse(bytesToString(response.body));
}

// Many queries over one raw grpc-js channel (kubemq-js opens a client per call, too heavy for bursts).
// Resolves [{r /* Response JSON */, at /* ms since t0 */} | {err}] in request order.
async function burst(channel, bodies, timeoutMs = 15000) {
    const raw = rawClient(addr);
    const t0 = Date.now();
    try {
        return await Promise.all(bodies.map((body, i) => callUnary(raw, 'SendRequest', {
            RequestID: `e2e-${channel}-${i}`, RequestTypeData: 2, ClientID: 'e2e-burst', Channel: channel,
            Body: Buffer.from(body), Timeout: timeoutMs,
        }, timeoutMs + 3000).then((res) => ({ res, at: Date.now() - t0 }), (err) => ({ err, at: Date.now() - t0 }))));
    } finally {
        raw.close();
    }
}

// Every record of a stream (all shards, from TRIM_HORIZON), read with signed calls.
async function readStream(endpoint, stream, ca = null) {
    const ls = await kinesisCall(endpoint, 'ListShards', { StreamName: stream }, { ca });
    assert.equal(ls.status, 200, `ListShards ${stream}: ${JSON.stringify(ls.body)}`);
    const out = [];
    for (const sh of ls.body.Shards) {
        const it = await kinesisCall(endpoint, 'GetShardIterator',
            { StreamName: stream, ShardId: sh.ShardId, ShardIteratorType: 'TRIM_HORIZON' }, { ca });
        let iter = it.body.ShardIterator;
        for (let i = 0; i < 10 && iter; i++) {
            const gr = await kinesisCall(endpoint, 'GetRecords', { ShardIterator: iter, Limit: 10000 }, { ca });
            assert.equal(gr.status, 200, JSON.stringify(gr.body));
            out.push(...gr.body.Records);
            if (gr.body.Records.length === 0) break;
            iter = gr.body.NextShardIterator;
        }
    }
    return out;
}

async function createStream(endpoint, stream, shards = 1, ca = null) {
    const r = await kinesisCall(endpoint, 'CreateStream', { StreamName: stream, ShardCount: shards }, { ca });
    assert.equal(r.status, 200, `CreateStream ${stream}: ${JSON.stringify(r.body)}`);
    await waitStreamActive(endpoint, stream, { ca });
}

const RATE_TOLERANCE = { lo: 0.9, hi: 1.1 };
const BUSY = { status: 503, code: 'ServiceUnavailable', message: 'busy' };

// ---- 1. every method through a query source, HTTP and TLS ----

for (const tls of [false, true]) {
    describe(`query -> kinesalite over ${tls ? 'TLS' : 'HTTP'}: every method`, () => {
        const ch = tls ? 'e2e.q.tls' : 'e2e.q.http';
        const S = tls ? 'e2e-tls' : 'e2e-http';
        const S2 = `${S}-legacy`;
        const srv = () => (tls ? kls : kl);
        const ca = () => (tls ? certs.ca : null);
        const g = gatewayFor(() => {
            const bs = [binding(ch, 'kubemq.query', { channel: ch },
                kinesisTarget(srv().endpoint, tls ? { tls_ca_file: certs.ca } : {}))];
            // Same server without the CA: verification is on by default, so every call must fail.
            if (tls) bs.push(binding('e2e.q.noca', 'kubemq.query', { channel: 'e2e.q.noca' }, kinesisTarget(srv().endpoint)));
            // By host name: the certificate's DNS:localhost SAN is checked.
            if (tls) {
                bs.push(binding('e2e.q.lh', 'kubemq.query', { channel: 'e2e.q.lh' },
                    kinesisTarget(`https://localhost:${srv().port}`, { tls_ca_file: certs.ca })));
            }
            return bs;
        });

        test('create_stream / create, list_streams, list_shards', { skip }, g.wrap(async () => {
            let r = await query(ch, { method: 'create_stream', stream_name: S, shard_count: '1' });
            assertOk(r, 'create_stream');
            assert.equal(r.data, null, 'create_stream has no data');
            assert.deepEqual(r.metadata, { result: 'ok' });
            r = await query(ch, { method: 'create', stream: S2, shard_count: '2' });
            assertOk(r, 'create (seed form)');
            assert.equal(r.data, null);
            await waitStreamActive(srv().endpoint, S, { ca: ca() });
            await waitStreamActive(srv().endpoint, S2, { ca: ca() });
            const d = await kinesisCall(srv().endpoint, 'DescribeStream', { StreamName: S2 }, { ca: ca() });
            assert.equal(d.body.StreamDescription.Shards.length, 2, 'shard_count honoured by the seed form');

            r = await query(ch, { method: 'list_streams' });
            assertOk(r, 'list_streams');
            const ls = dataOf(r);
            assert.deepEqual(Object.keys(ls), ['HasMoreStreams', 'StreamNames']);
            assert.equal(ls.HasMoreStreams, false);
            assert.ok(ls.StreamNames.includes(S) && ls.StreamNames.includes(S2), JSON.stringify(ls));

            r = await query(ch, { method: 'list_shards', stream_name: S2 });
            assertOk(r, 'list_shards');
            const sh = dataOf(r);
            assert.deepEqual(Object.keys(sh), ['NextToken', 'Shards']);
            assert.equal(sh.Shards.length, 2);
            assert.deepEqual(Object.keys(sh.Shards[0]),
                ['AdjacentParentShardId', 'HashKeyRange', 'ParentShardId', 'SequenceNumberRange', 'ShardId']);
            assert.deepEqual(Object.keys(sh.Shards[0].HashKeyRange), ['EndingHashKey', 'StartingHashKey']);
            assert.deepEqual(Object.keys(sh.Shards[0].SequenceNumberRange), ['EndingSequenceNumber', 'StartingSequenceNumber']);
            assert.equal(sh.Shards[0].ShardId, SHARD0);
        }));

        test('put_record, put, put_records, get_shard_iterator, get_records read the same bytes back', { skip }, g.wrap(async () => {
            const payload = Buffer.from([0, 1, 2, 0xff, 0xfe, 0x7b, 0x22, 0x3c]);
            let r = await query(ch, { method: 'put_record', stream_name: S, partition_key: 'pk-1' }, payload);
            assertOk(r, 'put_record');
            const pr = dataOf(r);
            assert.deepEqual(Object.keys(pr), ['EncryptionType', 'SequenceNumber', 'ShardId']);
            assert.equal(pr.ShardId, SHARD0);
            assert.match(pr.SequenceNumber, /^\d+$/);

            r = await query(ch, { method: 'put', stream: S }, Buffer.from('seed form, no key'));
            assertOk(r, 'put (seed form)');
            assert.match(dataOf(r).SequenceNumber, /^\d+$/);

            const recs = { 'pk-a': b64('first <&> record'), 'pk-ü✓"\\': b64(Buffer.from([9, 8, 7])) };
            r = await query(ch, { method: 'put_records', stream_name: S }, Buffer.from(JSON.stringify(recs)));
            assertOk(r, 'put_records');
            const prs = dataOf(r);
            assert.deepEqual(Object.keys(prs), ['EncryptionType', 'FailedRecordCount', 'Records']);
            assert.equal(prs.FailedRecordCount, 0);
            assert.equal(prs.Records.length, 2);
            assert.deepEqual(Object.keys(prs.Records[0]), ['ErrorCode', 'ErrorMessage', 'SequenceNumber', 'ShardId']);
            for (const e of prs.Records) assert.equal(e.ErrorCode, null);

            r = await query(ch, { method: 'get_shard_iterator', stream_name: S, shard_id: SHARD0, shard_iterator_type: 'TRIM_HORIZON' });
            assertOk(r, 'get_shard_iterator');
            const gsi = dataOf(r);
            assert.deepEqual(Object.keys(gsi), ['ShardIterator']);
            assert.ok(gsi.ShardIterator.length > 0);
            assert.deepEqual(Object.keys(r.metadata), ['result', 'shard_iterator'], 'metadata keys sorted');
            assert.equal(r.metadata.shard_iterator, gsi.ShardIterator);

            r = await query(ch, { method: 'get_records', stream_name: S, shard_iterator_id: r.metadata.shard_iterator, limit: '10' });
            assertOk(r, 'get_records');
            const gr = dataOf(r);
            assert.deepEqual(Object.keys(gr), ['ChildShards', 'MillisBehindLatest', 'NextShardIterator', 'Records']);
            assert.equal(gr.Records.length, 4, JSON.stringify(gr.Records.map((x) => x.PartitionKey)));
            assert.deepEqual(Object.keys(gr.Records[0]),
                ['ApproximateArrivalTimestamp', 'Data', 'EncryptionType', 'PartitionKey', 'SequenceNumber']);
            assert.match(gr.Records[0].ApproximateArrivalTimestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,3})?Z$/);
            assert.equal(gr.Records[0].PartitionKey, 'pk-1');
            assert.deepEqual(Buffer.from(gr.Records[0].Data, 'base64'), payload);
            assert.equal(gr.Records[0].SequenceNumber, pr.SequenceNumber);
            assert.ok(gr.Records[1].PartitionKey.length > 0, 'a key was generated for the seed form');
            assert.equal(Buffer.from(gr.Records[1].Data, 'base64').toString(), 'seed form, no key');
            assert.deepEqual(Object.fromEntries(gr.Records.slice(2).map((x) => [x.PartitionKey, x.Data])), recs);
            // and the same through the emulator directly
            assert.equal((await readStream(srv().endpoint, S, ca())).length, 4);
        }));

        test('a 1 MiB record and 60 parallel puts arrive intact', { skip }, g.wrap(async () => {
            // Kinesis counts data + partition key against the 1 MiB record limit: exactly at the limit.
            const big = Buffer.alloc((1 << 20) - 'big'.length);
            for (let i = 0; i < big.length; i++) big[i] = (i * 131 + (i >> 9)) & 0xff;
            let r = await query(ch, { method: 'put_record', stream_name: S2, partition_key: 'big' }, big, { timeoutMs: 15000 });
            assertOk(r, 'put_record of 1 MiB (data + key)');
            r = await query(ch, { method: 'put_record', stream_name: S2, partition_key: 'too-big' }, Buffer.alloc((1 << 20) + 1, 1));
            assert.equal(r.is_error, true, 'a record over 1 MiB is refused');
            const N = 60;
            const res = await burst(ch, Array.from({ length: N }, (_, i) =>
                request({ method: 'put_record', stream_name: S2, partition_key: `par-${i}` }, Buffer.from(`parallel ${i}`))));
            for (const x of res) {
                assert.ok(!x.err, `query failed: ${x.err?.message}`);
                assertOk(parseResponse(bytesToString(x.res.Body)), 'parallel put_record');
            }
            const recs = await readStream(srv().endpoint, S2, ca());
            const bigRec = recs.filter((x) => x.PartitionKey === 'big');
            assert.equal(bigRec.length, 1);
            assert.ok(Buffer.from(bigRec[0].Data, 'base64').equals(big), '1 MiB read back byte for byte');
            assert.ok(!recs.some((x) => x.PartitionKey === 'too-big'));
            const par = recs.filter((x) => x.PartitionKey.startsWith('par-'));
            assert.equal(par.length, N);
            for (const x of par) assert.equal(Buffer.from(x.Data, 'base64').toString(), `parallel ${x.PartitionKey.slice(4)}`);
        }));

        test('errors: consumers unsupported, missing stream_name, invalid JSON, unknown stream', { skip }, g.wrap(async () => {
            const arn = `arn:aws:kinesis:us-east-1:000000000000:stream/${S}`;
            let r = await query(ch, { method: 'list_stream_consumers', stream_arn: arn });
            assert.equal(r.is_error, true);
            assert.match(r.error, /^All attempts fail:\n#1: UnknownOperationException/);
            r = await query(ch, { method: 'create_stream_consumer', stream_arn: arn, consumer_name: 'c1' });
            assert.equal(r.is_error, true);
            assert.match(r.error, /^All attempts fail:\n#1: UnknownOperationException/);

            r = await query(ch, { method: 'put_record', partition_key: 'k' }, Buffer.from('x'));
            assert.deepEqual(r, { metadata: {}, data: null, is_error: true,
                error: 'All attempts fail:\n#1: error parsing stream_name, value of key stream_name cannot be empty' });

            r = await query(ch, 'this is {not json');
            assert.equal(r.is_error, true);
            assert.deepEqual(r.metadata, {});
            assert.equal(r.data, null);
            assert.match(r.error, /^invalid request format, /);

            r = await query(ch, '{"metadata":{"method":"list_streams"},"data":"%%% not base64"}');
            assert.equal(r.is_error, true);
            assert.match(r.error, /^invalid request format, /);

            r = await query(ch, { method: 'no_such_method', stream_name: S });
            assert.equal(r.is_error, true);
            assert.match(r.error, /^All attempts fail:\n#1: invalid method type, method type should be one of the following:/);

            r = await query(ch, { method: 'get_shard_iterator', stream_name: S, shard_iterator_type: 'LATEST' });
            assert.equal(r.error, 'All attempts fail:\n#1: shard_id is required when using get_shard_iterator '
                + 'error parsing shard_id, value of key shard_id cannot be empty');
            r = await query(ch, { method: 'get_records', stream_name: S });
            assert.equal(r.error, 'All attempts fail:\n#1: shard_iterator_id is required when using get_records,'
                + 'error parsing shard_iterator_id, value of key shard_iterator_id cannot be empty');
            r = await query(ch, { method: 'put_records', stream_name: S }, Buffer.from('[1, 2'));
            assert.equal(r.is_error, true, 'put_records data that is not a JSON map');
            assert.match(r.error, /^All attempts fail:\n#1: /);

            r = await query(ch, { method: 'put_record', stream_name: 'no-such-stream', partition_key: 'k' }, Buffer.from('x'));
            assert.equal(r.is_error, true);
            assert.match(r.error,
                /^All attempts fail:\n#1: ResourceNotFoundException: Stream no-such-stream under account \d+ not found\.$/);
        }));

        test('POST /bindings/request runs the same pipeline', { skip }, g.wrap(async () => {
            const r = await g.gw.post('/bindings/request', { binding: ch, payload: { metadata: { method: 'list_streams' } } });
            assert.equal(r.status, 200);
            assertOk(r.json, 'list_streams via the HTTP API');
            // §6.2: here `data` is the JSON value itself, not base64.
            assert.deepEqual(Object.keys(r.json.data), ['HasMoreStreams', 'StreamNames']);
            assert.ok(r.json.data.StreamNames.includes(S));
        }));

        test('delete_stream', { skip }, g.wrap(async () => {
            const r = await query(ch, { method: 'delete_stream', stream_name: S2 });
            assertOk(r, 'delete_stream');
            assert.equal(r.data, null);
            const gone = await until(async () => {
                const ls = await kinesisCall(srv().endpoint, 'ListStreams', {}, { ca: ca() });
                return !ls.body.StreamNames.includes(S2);
            }, 5000, 50);
            assert.ok(gone, `${S2} deleted`);
        }));

        if (tls) {
            test('TLS verification is on by default: without tls_ca_file the call fails', { skip }, g.wrap(async () => {
                const r = await query('e2e.q.noca', { method: 'list_streams' });
                assert.equal(r.is_error, true, 'an untrusted Kinesis certificate must be rejected');
                assert.match(r.error, /^All attempts fail:\n#1: .*certificate verification failed/);
            }));

            test('TLS by host name (https://localhost:<port>)', { skip }, g.wrap(async () => {
                const r = await query('e2e.q.lh', { method: 'list_streams' });
                assertOk(r, 'list_streams via localhost');
                assert.ok(dataOf(r).StreamNames.includes(S));
            }));
        }
    });
}

// ---- 2. reply rules per source kind, with the kinesis target ----

describe('source kinds -> kinesalite: reply rules', () => {
    const S = 'e2e-kinds';
    const SN = 'e2e-later'; // created only after the queue messages for it were nacked
    const g = gatewayFor(async () => {
        const tgt = kinesisTarget(kl.endpoint);
        return [
            binding('e2e.cmd', 'kubemq.command', { channel: 'e2e.cmd' }, tgt),
            binding('e2e.ev', 'kubemq.events', { channel: 'e2e.ev', response_channel: 'e2e.ev.resp' }, tgt),
            binding('e2e.es', 'kubemq.events-store', { channel: 'e2e.es', response_channel: 'e2e.es.resp' }, tgt),
            binding('e2e.qu', 'kubemq.queue', { channel: 'e2e.qu', batch_size: 10, wait_timeout: 1 }, tgt),
            binding('e2e.qr', 'kubemq.queue', { channel: 'e2e.qr', wait_timeout: 1, response_channel: 'e2e.qr.resp' }, tgt),
            binding('e2e.qbig', 'kubemq.queue', { channel: 'e2e.qbig', batch_size: 50, wait_timeout: 1 }, tgt),
            binding('e2e.multi', 'kubemq.query', { channel: 'e2e.multi', sources: 2 }, tgt),
            binding('e2e.raw', 'kubemq.query', { channel: 'e2e.raw', do_not_parse_payload: true }, tgt,
                { metadata: `{"stream_name":"${S}"}` }),
        ];
    });
    before(async () => {
        if (!skip) await createStream(kl.endpoint, S);
    });
    const put = (key, data, stream = S) => request({ method: 'put_record', stream_name: stream, partition_key: key }, Buffer.from(data));

    test('command: executed true/false with the error text; the record lands', { skip }, g.wrap(async () => {
        const ok = await sendCommand(addr, 'e2e.cmd', put('cmd-1', 'from a command'), 8000);
        assert.equal(ok.executed, true, `command failed: ${ok.error}`);
        assert.equal(ok.error, '');
        const bad = await sendCommand(addr, 'e2e.cmd', request({ method: 'put_record', partition_key: 'k' }, Buffer.from('x')), 8000);
        assert.equal(bad.executed, false);
        assert.equal(bad.error, 'All attempts fail:\n#1: error parsing stream_name, value of key stream_name cannot be empty');
        const nf = await sendCommand(addr, 'e2e.cmd', put('k', 'x', 'no-such-stream'), 8000);
        assert.equal(nf.executed, false);
        assert.match(nf.error, /ResourceNotFoundException/);
        const inv = await sendCommand(addr, 'e2e.cmd', '{"metadata":', 8000);
        assert.equal(inv.executed, false);
        assert.match(inv.error, /^invalid request format, /);
        const recs = await readStream(kl.endpoint, S);
        assert.ok(recs.some((x) => x.PartitionKey === 'cmd-1' && Buffer.from(x.Data, 'base64').toString() === 'from a command'));
    }));

    test('events with response_channel: the Response JSON is published there', { skip }, g.wrap(async () => {
        assert.ok(await until(() => broker.stats().subscribers['e2e.ev'] === 1, 5000), 'gateway subscribed to e2e.ev');
        const col = await subscribeEvents(addr, 'e2e.ev.resp');
        try {
            await publishEvent(addr, 'e2e.ev', put('ev-1', 'from an event'));
            const [m] = await col.waitFor(1, 8000);
            const r = parseResponse(m.text);
            assertOk(r, 'event');
            assert.deepEqual(Object.keys(dataOf(r)), ['EncryptionType', 'SequenceNumber', 'ShardId']);
            await publishEvent(addr, 'e2e.ev', request({ method: 'put_record', stream_name: S }, Buffer.from('x')));
            const msgs = await col.waitFor(2, 8000);
            const e = parseResponse(msgs[1].text);
            assert.equal(e.is_error, true);
            assert.equal(e.error, 'All attempts fail:\n#1: partition_key is required when using put_record,'
                + 'error parsing partition_key, value of key partition_key cannot be empty');
        } finally {
            col.close();
        }
    }));

    test('events-store with response_channel: the Response JSON is stored there', { skip }, g.wrap(async () => {
        assert.ok(await until(() => broker.stats().subscribers['e2e.es'] === 1, 5000), 'gateway subscribed to e2e.es');
        await publishEventStore(addr, 'e2e.es', put('es-1', 'from events-store'));
        await publishEventStore(addr, 'e2e.es', 'not json at all');
        const col = await subscribeEvents(addr, 'e2e.es.resp', '', { store: true, startType: 2 });
        try {
            const msgs = await col.waitFor(2, 8000);
            // Handled concurrently: the invalid one may be answered first.
            const rs = msgs.map((m) => parseResponse(m.text));
            const good = rs.find((r) => !r.is_error);
            const bad = rs.find((r) => r.is_error);
            assert.ok(good && bad, `one success and one failure: ${msgs.map((m) => m.text)}`);
            assertOk(good, 'events-store');
            assert.match(dataOf(good).SequenceNumber, /^\d+$/);
            assert.match(bad.error, /^invalid request format, /);
        } finally {
            col.close();
        }
        const recs = await readStream(kl.endpoint, S);
        assert.ok(recs.some((x) => x.PartitionKey === 'es-1'));
    }));

    test('queue: N messages -> N records, queue empty and nothing unacked', { skip }, g.wrap(async () => {
        const N = 25;
        const before0 = (await readStream(kl.endpoint, S)).length;
        await sendQueueBatch(addr, 'e2e.qu', Array.from({ length: N }, (_, i) => put(`qu-${i}`, `queue message ${i}`)));
        const done = await until(() => {
            const q = broker.stats().queues['e2e.qu'];
            return q && q.acked === N && q.depth === 0 && q.inflight === 0;
        }, 10000, 50);
        const q = broker.stats().queues['e2e.qu'];
        assert.ok(done, `all ${N} acked: ${JSON.stringify(q)}`);
        assert.equal(q.nacked, 0);
        const recs = (await readStream(kl.endpoint, S)).slice(before0);
        assert.equal(recs.length, N);
        assert.deepEqual(new Set(recs.map((x) => Buffer.from(x.Data, 'base64').toString())),
            new Set(Array.from({ length: N }, (_, i) => `queue message ${i}`)));
    }));

    test('sources 2: two subscriptions share the queries', { skip }, g.wrap(async () => {
        assert.ok(await until(() => broker.stats().subscribers['e2e.multi'] === 2, 5000), 'two subscriptions');
        const N = 40;
        const c0 = broker.stats().clients;
        const res = await burst('e2e.multi', Array.from({ length: N }, () => request({ method: 'list_streams' })));
        for (const x of res) {
            assert.ok(!x.err, `query failed: ${x.err?.message}`);
            assertOk(parseResponse(bytesToString(x.res.Body)), 'list_streams');
        }
        assert.equal(broker.stats().requests['e2e.multi'].answered, N);
        const per = Object.entries(broker.stats().clients).filter(([id]) => id.includes('e2e-e2e.multi'))
            .map(([id, c]) => c.requests - (c0[id]?.requests ?? 0));
        assert.equal(per.length, 2, `two subscriber client ids: ${JSON.stringify(broker.stats().clients)}`);
        assert.ok(per.every((n) => n > 0), `both served: ${per}`);
    }));

    test('do_not_parse_payload + binding metadata: the raw body becomes the record', { skip }, g.wrap(async () => {
        const raw = 'raw payload, {not a request} ✓';
        const { response } = await sendQuery(addr, 'e2e.raw', raw, 8000);
        const r = parseResponse(bytesToString(response.body));
        assertOk(r, 'raw put');
        const seq = dataOf(r).SequenceNumber;
        const rec = (await readStream(kl.endpoint, S)).find((x) => x.SequenceNumber === seq);
        assert.ok(rec, 'the record is in the stream');
        assert.equal(Buffer.from(rec.Data, 'base64').toString(), raw);
    }));

    test('queue: 500 messages in batches of 50 -> 500 records', { skip }, g.wrap(async (t) => {
        const N = 500;
        const SB = 'e2e-qbig';
        await createStream(kl.endpoint, SB, 2);
        const t0 = Date.now();
        for (let i = 0; i < N; i += 100) {
            await sendQueueBatch(addr, 'e2e.qbig', Array.from({ length: 100 }, (_, j) => put(`qb-${i + j}`, `big queue ${i + j}`, SB)));
        }
        const done = await until(() => {
            const q = broker.stats().queues['e2e.qbig'];
            return q && q.acked === N && q.depth === 0 && q.inflight === 0;
        }, 30000, 50);
        const q = broker.stats().queues['e2e.qbig'];
        t.diagnostic(`${N} queue messages in ${Date.now() - t0} ms: ${JSON.stringify(q)}`);
        assert.ok(done, `all ${N} acked: ${JSON.stringify(q)}`);
        assert.equal(q.nacked, 0);
        const recs = await readStream(kl.endpoint, SB);
        assert.equal(recs.length, N);
        assert.equal(new Set(recs.map((x) => x.PartitionKey)).size, N);
    }));

    test('queue with response_channel: the Response JSON is sent there as a queue message', { skip }, g.wrap(async () => {
        await sendQueueBatch(addr, 'e2e.qr', [put('qr-1', 'queue with responses'), put('qr-2', 'second')]);
        const ok = await until(() => broker.stats().queues['e2e.qr.resp']?.depth === 2, 8000, 50);
        assert.ok(ok, `2 responses queued: ${JSON.stringify(broker.stats().queues)}`);
        const { messages } = await pullQueue(addr, 'e2e.qr.resp', { max: 10, waitSeconds: 1 });
        assert.equal(messages.length, 2);
        for (const m of messages) {
            const r = parseResponse(bytesToString(m.body));
            assertOk(r, 'queue response');
            assert.deepEqual(Object.keys(dataOf(r)), ['EncryptionType', 'SequenceNumber', 'ShardId']);
        }
        const q = broker.stats().queues['e2e.qr'];
        assert.equal(q.acked, 2);
        assert.equal(q.inflight, 0);
    }));

    test('queue: a missing stream nacks and redelivers; nothing is lost once it exists', { skip }, g.wrap(async (t) => {
        const N = 5;
        const q0 = { ...broker.stats().queues['e2e.qu'] };
        await sendQueueBatch(addr, 'e2e.qu', Array.from({ length: N }, (_, i) => put(`late-${i}`, `late ${i}`, SN)));
        const nacked = await until(() => broker.stats().queues['e2e.qu'].nacked >= q0.nacked + 2, 8000, 50);
        assert.ok(nacked, `nacked while the stream is missing: ${JSON.stringify(broker.stats().queues['e2e.qu'])}`);
        await createStream(kl.endpoint, SN);
        const done = await until(() => {
            const q = broker.stats().queues['e2e.qu'];
            return q.acked === q0.acked + N && q.depth === 0 && q.inflight === 0;
        }, 15000, 50);
        const q = broker.stats().queues['e2e.qu'];
        t.diagnostic(`queue after redelivery: ${JSON.stringify(q)}`);
        assert.ok(done, `all ${N} acked after the stream appeared: ${JSON.stringify(q)}`);
        const recs = await readStream(kl.endpoint, SN);
        assert.equal(recs.length, N, 'each message written exactly once');
        assert.deepEqual(new Set(recs.map((x) => x.PartitionKey)), new Set(Array.from({ length: N }, (_, i) => `late-${i}`)));
    }));
});

// ---- 2b/3/4. the fault server: queue redelivery, retry, rate limit, concurrency cap ----

describe('fault server: queue redelivery, retry, rate, concurrency', () => {
    const F = {}; // one fault server per binding: its script is per server
    const g = gatewayFor(async () => {
        for (const k of ['queue', 'retry', 'rate', 'conc']) F[k] = await startFaultServer({ secret: SECRET });
        return [
            binding('e2e.fq', 'kubemq.queue', { channel: 'e2e.fq', batch_size: 5, wait_timeout: 1 }, kinesisTarget(F.queue.endpoint)),
            binding('e2e.retry', 'kubemq.query', { channel: 'e2e.retry' }, kinesisTarget(F.retry.endpoint),
                { retry_attempts: 3, retry_delay_milliseconds: 50 }),
            binding('e2e.rate', 'kubemq.query', { channel: 'e2e.rate' }, kinesisTarget(F.rate.endpoint), { rate_per_second: 50 }),
            binding('e2e.md', 'kubemq.query', { channel: 'e2e.md' }, kinesisTarget(kl.endpoint), { metadata: '{"stream_name":"e2e-md"}' }),
            binding('e2e.conc', 'kubemq.query', { channel: 'e2e.conc', concurrency: 4, flow_control: 'exact' },
                kinesisTarget(F.conc.endpoint)),
        ];
    });
    after(async () => {
        await Promise.all(Object.values(F).map((f) => f.close()));
    });
    const put = (key, stream = 'fault') =>
        request({ method: 'put_record', stream_name: stream, partition_key: key }, Buffer.from(`v-${key}`));

    test('queue: failed attempts are nacked and redelivered; no message lost', { skip }, g.wrap(async (t) => {
        const N = 5;
        F.queue.script([{ status: 500, code: 'InternalFailure', message: 'boom' }, BUSY]);
        await sendQueueBatch(addr, 'e2e.fq', Array.from({ length: N }, (_, i) => put(`fq-${i}`)));
        const done = await until(() => {
            const q = broker.stats().queues['e2e.fq'];
            return q && q.acked === N && q.depth === 0 && q.inflight === 0;
        }, 15000, 50);
        const q = broker.stats().queues['e2e.fq'];
        t.diagnostic(`queue: ${JSON.stringify(q)}; fault server saw ${F.queue.requests.length} requests`);
        assert.ok(done, `all ${N} acked: ${JSON.stringify(q)}`);
        assert.ok(q.nacked >= 1, 'the failed ones were nacked');
        const reqs = F.queue.requests;
        assert.ok(reqs.length >= N + 2);
        const okKeys = reqs.slice(2).map((x) => x.body.PartitionKey);
        assert.deepEqual(new Set(okKeys), new Set(Array.from({ length: N }, (_, i) => `fq-${i}`)), 'every message written');
        assert.equal(okKeys.length, N, 'no message written twice');
        for (const x of reqs) assert.equal(x.sigOk, true);
    }));

    test('retry_attempts 3: 503 twice then 200 -> one success after 3 attempts; a 400 is not retried', { skip }, g.wrap(async () => {
        F.retry.script([BUSY, BUSY, 'ok']);
        const t0 = Date.now();
        let r = await query('e2e.retry', JSON.parse(put('r1')).metadata, Buffer.from('v'));
        const took = Date.now() - t0;
        assertOk(r, 'retried put_record');
        // back-off 100 ms << n, capped by retry_delay_milliseconds 50: two sleeps of 50 ms.
        assert.ok(took >= 95, `two retry delays of 50 ms, took ${took} ms`);
        assert.equal(F.retry.requests.length, 3, 'three attempts reached the server');
        assert.ok(F.retry.requests.every((x) => x.op === 'PutRecord' && x.sigOk));

        F.retry.requests.length = 0;
        F.retry.script([{ status: 400, code: 'ValidationException', message: 'bad thing' }, 'ok', 'ok']);
        r = await query('e2e.retry', JSON.parse(put('r2')).metadata, Buffer.from('v'));
        assert.equal(r.is_error, true);
        assert.match(r.error, /^All attempts fail:\n#1: ValidationException: bad thing$/);
        assert.equal(F.retry.requests.length, 1, 'a permanent error is tried once');
    }));

    test('rate_per_second 50: 100 queries take about 2 s', { skip }, g.wrap(async (t) => {
        const N = 100;
        // Time each call's arrival at the target (the fault server records requests as they come).
        const arrivals = [];
        const reqs = F.rate.requests;
        reqs.push = (...xs) => {
            for (let i = 0; i < xs.length; i++) arrivals.push(Date.now());
            return Array.prototype.push.apply(reqs, xs);
        };
        const res = await burst('e2e.rate', Array.from({ length: N }, (_, i) => put(`rate-${i}`)), 15000);
        for (const x of res) {
            assert.ok(!x.err, `query failed: ${x.err?.message}`);
            assertOk(parseResponse(bytesToString(x.res.Body)));
        }
        const last = Math.max(...res.map((x) => x.at));
        assert.equal(arrivals.length, N);
        const rate = (N - 1) / ((arrivals[N - 1] - arrivals[0]) / 1000);
        t.diagnostic(`100 queries: last reply after ${last} ms; calls reached the target at ${rate.toFixed(1)}/s`);
        assert.ok(last >= 1800 && last <= 3000, `took ${last} ms`);
        assert.ok(rate >= 50 * RATE_TOLERANCE.lo && rate <= 50 * RATE_TOLERANCE.hi, `achieved ${rate.toFixed(1)}/s`);
    }));

    test('binding metadata fills a missing stream_name', { skip }, g.wrap(async () => {
        await createStream(kl.endpoint, 'e2e-md');
        const r = await query('e2e.md', { method: 'put_record', partition_key: 'md-1' }, Buffer.from('via binding metadata'));
        assertOk(r, 'put_record with the binding metadata');
        const recs = await readStream(kl.endpoint, 'e2e-md');
        assert.equal(recs.length, 1);
        assert.equal(Buffer.from(recs[0].Data, 'base64').toString(), 'via binding metadata');
    }));

    // flow_control exact: the broker's own count of requests written to the gateway and not answered
    // (max_flushed_inflight) stays within the cap too, not only the gateway's.
    test('concurrency 4: 40 parallel queries, 200 ms each, never more than 4 at the target or at the broker', { skip }, g.wrap(async (t) => {
        const N = 40;
        F.conc.script(Array.from({ length: N }, () => ({ slow: 200 })));
        // The gateway's own gauge, sampled while the burst runs.
        let maxGauge = -1;
        let sampling = true;
        const sampler = (async () => {
            while (sampling) {
                try {
                    const m = (await g.gw.get('/metrics')).text;
                    const v = /^kubemq_kinesis_inflight\{binding="e2e\.conc"\} (\d+)/m.exec(m);
                    if (v) maxGauge = Math.max(maxGauge, Number(v[1]));
                } catch { /* next sample */ }
                await sleep(25);
            }
        })();
        const res = await burst('e2e.conc', Array.from({ length: N }, (_, i) => put(`c-${i}`)), 20000);
        sampling = false;
        await sampler;
        for (const x of res) {
            assert.ok(!x.err, `query failed: ${x.err?.message}`);
            assertOk(parseResponse(bytesToString(x.res.Body)));
        }
        const last = Math.max(...res.map((x) => x.at));
        const st = broker.stats().requests['e2e.conc'];
        t.diagnostic(`broker ${JSON.stringify(st)}; fault server peak sockets ${F.conc.maxSockets}; `
            + `gateway inflight gauge peak ${maxGauge}; last reply ${last} ms`);
        assert.equal(st.answered, N);
        assert.equal(F.conc.requests.length, N);
        assert.ok(st.max_inflight > 4, `the broker had more to send than the cap (${st.max_inflight})`);
        assert.ok(st.max_flushed_inflight <= 4, `broker-side in flight ${st.max_flushed_inflight} <= 4`);
        // Each target call holds its connection for 200 ms: more than 4 at once would need more sockets
        // and would finish sooner than 10 rounds of 200 ms.
        assert.ok(F.conc.maxSockets <= 4, `peak connections at the target ${F.conc.maxSockets}`);
        assert.ok(last >= (N / 4) * 200 - 100, `40 x 200 ms at 4 in parallel takes >= 2 s, took ${last} ms`);
        if (maxGauge >= 0) assert.ok(maxGauge <= 4, `gateway in-flight gauge peaked at ${maxGauge}`);
    }));
});

// ---- 5. SIGTERM with ~500 requests in flight ----

describe('SIGTERM with 500 requests in flight', () => {
    let F;
    const shutdown = 2;
    const g = { gw: null };
    before(async () => {
        if (skip) return;
        F = await startFaultServer({ secret: SECRET });
        const b = binding('e2e.term', 'kubemq.query', { channel: 'e2e.term', concurrency: 1000 },
            kinesisTarget(F.endpoint, { max_connections: 64 }));
        g.gw = await startGateway({ config: config(await freePort(), [b], shutdown) });
        assert.ok(await ready(g.gw, 10000), 'gateway ready');
    });
    after(async () => {
        await g.gw?.stop('SIGKILL');
        await F?.close();
    });

    test('every request gets a reply; exit 0 within shutdown_timeout_seconds', { skip }, async (t) => {
        const N = 500;
        F.script(Array.from({ length: N }, () => ({ slow: 300 })));
        try {
            const pending = burst('e2e.term', Array.from({ length: N }, (_, i) =>
                request({ method: 'put_record', stream_name: 'fault', partition_key: `t-${i}` }, Buffer.from('x'))), 20000);
            const seen = await until(() => (broker.stats().requests['e2e.term']?.sent ?? 0) >= N, 8000, 20);
            assert.ok(seen, `the broker delivered all ${N}: ${JSON.stringify(broker.stats().requests['e2e.term'])}`);
            await sleep(300); // let the first wave reach the target
            const t0 = Date.now();
            const st = await g.gw.stop('SIGTERM');
            const took = Date.now() - t0;
            const res = await pending;
            const logs = g.gw.logs();
            const bodies = res.map((x) => (x.err ? { grpcError: x.err.message } : JSON.parse(bytesToString(x.res.Body))));
            const ok = bodies.filter((x) => x.is_error === false).length;
            const down = bodies.filter((x) => x.is_error === true && /shutting down/.test(x.error)).length;
            const other = bodies.filter((x) => !(x.is_error === false || (x.is_error === true && /shutting down/.test(x.error))));
            t.diagnostic(`exit ${JSON.stringify(st)} after ${took} ms; ${ok} ok, ${down} shutting-down errors, `
                + `${other.length} other; fault server saw ${F.requests.length}`);
            assert.deepEqual(st, { code: 0, signal: null }, 'graceful exit code 0');
            assert.ok(took <= shutdown * 1000 + 2000, `exited in ${took} ms`);
            assert.deepEqual(other.slice(0, 5), [], `every reply is a success or a shutting-down error (${other.length} others)`);
            assert.equal(ok + down, N);
            assert.ok(ok >= 1, 'the requests already at the target finished');
            assert.equal(broker.stats().requests['e2e.term'].answered, N, 'the broker saw an answer to each');
            assert.ok(!logs.includes(SECRET));
        } catch (e) {
            e.message += `\n--- gateway log (tail) ---\n${g.gw.logs().slice(-3000)}`;
            throw e;
        }
    });
});

// ---- 5b. SIGTERM with queue messages in flight: none is lost across a restart ----

describe('SIGTERM with queue messages in flight', () => {
    let F;
    const N = 20;
    const ch = 'e2e.qterm';
    const cfg = async () => config(await freePort(), [binding(ch, 'kubemq.queue', { channel: ch, batch_size: 10, wait_timeout: 1 },
        kinesisTarget(F.endpoint))], 1);
    const gws = [];
    before(async () => {
        if (!skip) F = await startFaultServer({ secret: SECRET });
    });
    after(async () => {
        for (const gw of gws) await gw.stop('SIGKILL');
        await F?.close();
    });

    test('unfinished messages go back to the queue and a new gateway writes them all', { skip }, async (t) => {
        // The first batch hangs at the target for longer than shutdown_timeout_seconds (1 s).
        F.script([...Array.from({ length: 10 }, () => ({ slow: 3000 }))]);
        const a = await startGateway({ config: await cfg() });
        gws.push(a);
        let b = null;
        try {
            assert.ok(await ready(a, 10000), 'first gateway ready');
            await sendQueueBatch(addr, ch, Array.from({ length: N }, (_, i) =>
                request({ method: 'put_record', stream_name: 'fault', partition_key: `qt-${i}` }, Buffer.from(`m${i}`))));
            assert.ok(await until(() => F.requests.length >= 10, 8000, 20), `first batch at the target: ${F.requests.length}`);
            const t0 = Date.now();
            const st = await a.stop('SIGTERM');
            const took = Date.now() - t0;
            const q1 = { ...broker.stats().queues[ch] };
            t.diagnostic(`first gateway: exit ${JSON.stringify(st)} after ${took} ms; queue ${JSON.stringify(q1)}; `
                + `target saw ${F.requests.length}`);
            assert.deepEqual(st, { code: 0, signal: null });
            assert.ok(took <= 2500, `exited in ${took} ms`);
            assert.equal(q1.inflight, 0, 'no transaction left open');
            assert.equal(q1.acked + q1.depth, N, 'every message is either acked or back in the queue');

            b = await startGateway({ config: await cfg() });
            gws.push(b);
            assert.ok(await ready(b, 10000), 'second gateway ready');
            const done = await until(() => {
                const q = broker.stats().queues[ch];
                return q.acked === N && q.depth === 0 && q.inflight === 0;
            }, 10000, 50);
            const q2 = broker.stats().queues[ch];
            t.diagnostic(`second gateway: queue ${JSON.stringify(q2)}; target saw ${F.requests.length}`);
            assert.ok(done, `all ${N} acked in the end: ${JSON.stringify(q2)}`);
            const keys = new Set(F.requests.map((x) => x.body.PartitionKey));
            assert.equal(keys.size, N, 'every message reached Kinesis');
            const st2 = await b.stop('SIGTERM');
            assert.deepEqual(st2, { code: 0, signal: null });
        } catch (e) {
            e.message += `\n--- first gateway log (tail) ---\n${a.logs().slice(-2500)}`;
            if (b) e.message += `\n--- second gateway log (tail) ---\n${b.logs().slice(-2500)}`;
            throw e;
        }
    });
});

// ---- 6. the broker restarts while messages are in flight ----

describe('broker restart with messages in flight', () => {
    let F;
    const g = gatewayFor(async () => {
        F = await startFaultServer({ secret: SECRET });
        return [
            binding('e2e.rq', 'kubemq.queue', { channel: 'e2e.rq', batch_size: 10, wait_timeout: 1 }, kinesisTarget(F.endpoint)),
            binding('e2e.rqq', 'kubemq.query', { channel: 'e2e.rqq' }, kinesisTarget(F.endpoint)),
        ];
    });
    after(async () => {
        await F?.close();
    });

    test('queue: no message lost; queries answered again after the restart', { skip }, g.wrap(async (t) => {
        const N = 20;
        F.script(Array.from({ length: 40 }, () => ({ slow: 400 })));
        await sendQueueBatch(addr, 'e2e.rq', Array.from({ length: N }, (_, i) =>
            request({ method: 'put_record', stream_name: 'fault', partition_key: `rq-${i}` }, Buffer.from(`m${i}`))));
        const q0 = sendQuery(addr, 'e2e.rqq', request({ method: 'list_streams' }), 5000).catch((e) => e);
        assert.ok(await until(() => F.requests.length >= 5, 8000, 20), `target busy: ${F.requests.length}`);
        await broker.stop();
        await q0; // the broker answered it with an error, or the gateway in time: either is fine
        await sleep(300);
        await broker.start();
        const done = await until(() => {
            const q = broker.stats().queues['e2e.rq'];
            return q.acked === N && q.depth === 0 && q.inflight === 0;
        }, 15000, 50);
        const q = broker.stats().queues['e2e.rq'];
        t.diagnostic(`after the restart: queue ${JSON.stringify(q)}; target saw ${F.requests.length} requests`);
        assert.ok(done, `all ${N} acked after the restart: ${JSON.stringify(q)}`);
        const keys = new Set(F.requests.filter((x) => x.op === 'PutRecord').map((x) => x.body.PartitionKey));
        assert.equal(keys.size, N, 'every message reached Kinesis (duplicates allowed)');
        const ok = await until(async () => {
            try {
                const { json } = await sendQuery(addr, 'e2e.rqq', request({ method: 'list_streams' }), 2000);
                return json && json.is_error === false;
            } catch {
                return false;
            }
        }, 10000, 100);
        assert.ok(ok, 'queries answered again within 10 s');
    }));
});

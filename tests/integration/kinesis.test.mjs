// The aws.kinesis target alone (tests/tools/kinesis_call) against kinesalite over HTTP and TLS, and
// against the fault-injecting server tests/fault/kinesis-fault.mjs.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { startKinesalite } from './lib/kinesalite.mjs';
import { makeCerts } from './lib/certs.mjs';
import { startFaultServer } from '../fault/kinesis-fault.mjs';

const BUILD = process.env.KK_BUILD_DIR || path.resolve('build');
const DRIVER = path.join(BUILD, 'tests', 'tools', 'kinesis_call');
const KEY = 'AKIDF2TEST';
const SECRET = 'f2-secret-never-logged';

// Runs the driver; resolves {code, out: [Response...], stderr}.
function drive(props, requests, { attempts = 1, concurrency = 1, timeoutMs = 30000, backoffMs = 20, metrics = false, deadlineMs = 0 } = {}) {
    const args = ['--attempts', String(attempts), '--concurrency', String(concurrency), '--backoff-ms', String(backoffMs),
        '--timeout-ms', String(timeoutMs)];
    if (metrics) args.push('--metrics');
    if (deadlineMs) args.push('--deadline-ms', String(deadlineMs));
    for (const [k, v] of Object.entries(props)) args.push(`${k}=${v}`);
    for (const r of requests) args.push(typeof r === 'string' ? r : JSON.stringify(r));
    // KK_VALGRIND=1 runs the driver under valgrind (leaks and errors fail the run: exit 99).
    const vg = process.env.KK_VALGRIND === '1';
    const cmd = vg ? 'valgrind' : DRIVER;
    if (vg) args.unshift('-q', '--leak-check=full', '--errors-for-leak-kinds=definite,indirect', '--error-exitcode=99', DRIVER);
    return new Promise((resolve, reject) => {
        execFile(cmd, args, { timeout: timeoutMs * (vg ? 4 : 1) + 10000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
            // Exit 0 means every handle closed (uv_loop_close == 0) and, under valgrind, no leak.
            if (err) return reject(new Error(`kinesis_call exited ${err.code}: ${stderr}`));
            const out = stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l));
            if (out.length !== requests.length) return reject(new Error(`expected ${requests.length} lines: ${stdout}`));
            return resolve({ code: 0, out, stderr });
        });
    });
}

const dataOf = (r) => (r.data === null ? null : JSON.parse(Buffer.from(r.data, 'base64').toString('utf8')));
const b64 = (s) => Buffer.from(s).toString('base64');
const keysOf = (o) => Object.keys(o);

function assertOk(r) {
    assert.equal(r.is_error, false, `unexpected error: ${r.error}`);
    assert.equal(r.metadata.result, 'ok');
}

for (const tls of [false, true]) {
    describe(`kinesalite over ${tls ? 'TLS' : 'HTTP'}`, () => {
        let kl;
        let props;
        before(async () => {
            const certs = tls ? makeCerts() : null;
            kl = await startKinesalite({ tls, certs });
            props = { endpoint: kl.endpoint, region: 'us-east-1', aws_key: KEY, aws_secret_key: SECRET };
            if (tls) props.tls_ca_file = certs.ca;
        });
        after(async () => { await kl?.stop(); });

        test('every method, records read back with the same bytes and keys', async () => {
            let r = await drive(props, [
                { metadata: { method: 'create_stream', stream_name: 'f2s', shard_count: '1' } },
                { metadata: { method: 'create', stream: 'f2legacy' } },
            ]);
            assert.equal(r.code, 0, r.stderr);
            for (const x of r.out) { assertOk(x); assert.equal(x.data, null); }

            const payload = Buffer.from([0, 1, 2, 0xff, 0x7b, 0x22]);
            const recs = { 'pk-a': b64('first<&>'), 'pk-b': b64('second') };
            r = await drive(props, [
                { metadata: { method: 'list_streams' } },
                { metadata: { method: 'put_record', stream_name: 'f2s', partition_key: 'pk-1' }, data: payload.toString('base64') },
                { metadata: { stream: 'f2s' }, data: b64('no key given') },
                { metadata: { method: 'put_records', stream_name: 'f2s' }, data: b64(JSON.stringify(recs)) },
                { metadata: { method: 'list_shards', stream_name: 'f2s' } },
                { metadata: { method: 'get_shard_iterator', stream_name: 'f2s', shard_id: 'shardId-000000000000', shard_iterator_type: 'TRIM_HORIZON' } },
            ]);
            assert.equal(r.code, 0, r.stderr);
            for (const x of r.out) assertOk(x);
            const [ls, pr, put, prs, shards, gsi] = r.out.map(dataOf);
            assert.deepEqual(keysOf(ls), ['HasMoreStreams', 'StreamNames']);
            assert.ok(ls.StreamNames.includes('f2s') && ls.StreamNames.includes('f2legacy'));
            assert.deepEqual(keysOf(pr), ['EncryptionType', 'SequenceNumber', 'ShardId']);
            assert.equal(pr.ShardId, 'shardId-000000000000');
            assert.match(put.SequenceNumber, /^\d+$/);
            assert.deepEqual(keysOf(prs), ['EncryptionType', 'FailedRecordCount', 'Records']);
            assert.equal(prs.FailedRecordCount, 0);
            assert.equal(prs.Records.length, 2);
            assert.deepEqual(keysOf(prs.Records[0]), ['ErrorCode', 'ErrorMessage', 'SequenceNumber', 'ShardId']);
            assert.deepEqual(keysOf(shards), ['NextToken', 'Shards']);
            assert.deepEqual(keysOf(shards.Shards[0]), ['AdjacentParentShardId', 'HashKeyRange', 'ParentShardId', 'SequenceNumberRange', 'ShardId']);
            assert.deepEqual(keysOf(shards.Shards[0].HashKeyRange), ['EndingHashKey', 'StartingHashKey']);
            assert.deepEqual(keysOf(gsi), ['ShardIterator']);
            assert.equal(r.out[5].metadata.shard_iterator, gsi.ShardIterator);

            r = await drive(props, [{ metadata: { method: 'get_records', stream_name: 'f2s', shard_iterator_id: gsi.ShardIterator, limit: '10' } }]);
            assertOk(r.out[0]);
            const gr = dataOf(r.out[0]);
            assert.deepEqual(keysOf(gr), ['ChildShards', 'MillisBehindLatest', 'NextShardIterator', 'Records']);
            assert.equal(gr.Records.length, 4);
            assert.deepEqual(keysOf(gr.Records[0]), ['ApproximateArrivalTimestamp', 'Data', 'EncryptionType', 'PartitionKey', 'SequenceNumber']);
            assert.match(gr.Records[0].ApproximateArrivalTimestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,3})?Z$/);
            assert.equal(gr.Records[0].PartitionKey, 'pk-1');
            assert.deepEqual(Buffer.from(gr.Records[0].Data, 'base64'), payload);
            assert.equal(gr.Records[0].SequenceNumber, pr.SequenceNumber);
            assert.match(gr.Records[1].PartitionKey, /^[0-9a-f]{16}$/);
            assert.equal(Buffer.from(gr.Records[1].Data, 'base64').toString(), 'no key given');
            const got = Object.fromEntries(gr.Records.slice(2).map((x) => [x.PartitionKey, x.Data]));
            assert.deepEqual(got, recs);

            r = await drive(props, [
                { metadata: { method: 'list_stream_consumers', stream_arn: 'arn:aws:kinesis:us-east-1:000000000000:stream/f2s' } },
                { metadata: { method: 'create_stream_consumer', stream_arn: 'arn:aws:kinesis:us-east-1:000000000000:stream/f2s', consumer_name: 'c' } },
                { metadata: { method: 'put_record', stream_name: 'nope', partition_key: 'k' }, data: b64('x') },
                { metadata: { method: 'delete_stream', stream_name: 'f2legacy' } },
                { metadata: { method: 'put_record', stream_name: 'f2s' }, data: b64('x') },
            ], { attempts: 3 });
            assert.equal(r.out[0].is_error, true);
            assert.match(r.out[0].error, /^UnknownOperationException: /);
            assert.match(r.out[1].error, /^UnknownOperationException: /);
            assert.match(r.out[2].error, /^ResourceNotFoundException: Stream nope under account \d+ not found\.$/);
            assertOk(r.out[3]);
            assert.equal(r.out[3].data, null);
            assert.equal(r.out[4].error, 'partition_key is required when using put_record,error parsing partition_key, value of key partition_key cannot be empty');
            // permanent errors are never retried
            assert.equal((r.stderr.match(/^attempt 2 /gm) || []).length, 1);
            assert.ok(!r.stderr.includes(SECRET));
        });

        if (tls) {
            test('verification is on by default: an unknown CA fails, once', async () => {
                const { tls_ca_file: _ca, ...noCa } = props;
                const r = await drive(noCa, [{ metadata: { method: 'list_streams' } }], { attempts: 3 });
                assert.equal(r.out[0].is_error, true);
                assert.match(r.out[0].error, /certificate verification failed/);
                assert.equal((r.stderr.match(/^attempt /gm) || []).length, 1);
            });
        }
    });
}

describe('fault server', () => {
    let srv;
    let props;
    before(async () => {
        srv = await startFaultServer({ secret: SECRET });
        props = { endpoint: srv.endpoint, region: 'us-east-1', aws_key: KEY, aws_secret_key: SECRET, max_connections: '4' };
    });
    after(async () => { await srv?.close(); });
    const all = [];
    const reset = (script) => {
        all.push(...srv.requests);
        srv.requests.length = 0;
        srv.maxSockets = srv.sockets;
        srv.script(script);
    };
    const put = { metadata: { method: 'put_record', stream_name: 'fault', partition_key: 'k' }, data: b64('v') };

    test('throttling is retried, then succeeds', async () => {
        reset(['throttle', 'throttle', 'ok']);
        const r = await drive(props, [put], { attempts: 3, metrics: true });
        assertOk(r.out[0]);
        assert.equal(srv.requests.length, 3);
        assert.match(r.stderr, /kinesis_throttles_total\{binding="test"\} 2/);
        assert.match(r.stderr, /kinesis_attempts_total\{binding="test",op="put_record"\} 3/);
        assert.match(r.stderr, /kinesis_errors_total\{binding="test",code="ProvisionedThroughputExceededException"\} 2/);
    });

    test('throttling on every attempt fails with the AWS text', async () => {
        reset(['throttle', 'throttle', 'throttle']);
        const r = await drive(props, [put], { attempts: 2 });
        assert.equal(srv.requests.length, 2);
        assert.match(r.out[0].error, /^ProvisionedThroughputExceededException: Rate exceeded for shard/);
    });

    test('5xx is retried; a permanent error is not', async () => {
        reset([{ status: 500 }, { status: 503, code: 'ServiceUnavailable', message: 'busy' }, 'ok']);
        let r = await drive(props, [put], { attempts: 3 });
        assertOk(r.out[0]);
        assert.equal(srv.requests.length, 3);
        reset([{ status: 400, code: 'ValidationException', message: 'bad' }]);
        r = await drive(props, [put], { attempts: 3 });
        assert.equal(r.out[0].error, 'ValidationException: bad');
        assert.equal(srv.requests.length, 1);
    });

    test('an auth error refreshes credentials and is sent once more', async () => {
        reset([{ status: 400, code: 'InvalidSignatureException', message: 'Signature expired' }, 'ok']);
        let r = await drive(props, [put], { attempts: 1 });
        assertOk(r.out[0]);
        assert.equal(srv.requests.length, 2);
        reset([{ status: 400, code: 'ExpiredTokenException', message: 'x' }, { status: 400, code: 'ExpiredTokenException', message: 'y' }]);
        r = await drive(props, [put], { attempts: 1 });
        assert.equal(r.out[0].error, 'ExpiredTokenException: y');
        assert.equal(srv.requests.length, 2);
    });

    test('PutRecords partial failure resends only the failed entries', async () => {
        const data = { a: b64('A'), b: b64('B'), c: b64('C'), d: b64('D') };
        const req = { metadata: { method: 'put_records', stream_name: 'fault' }, data: b64(JSON.stringify(data)) };
        reset([{ partial: [0, 2] }, { partial: [1], code: 'InternalFailure' }, 'ok']);
        let r = await drive(props, [req], { attempts: 3 });
        assertOk(r.out[0]);
        assert.equal(srv.requests.length, 3);
        assert.deepEqual(srv.requests.map((q) => q.body.Records.map((x) => x.PartitionKey)), [['a', 'b', 'c', 'd'], ['a', 'c'], ['c']]);
        const out = dataOf(r.out[0]);
        assert.equal(out.FailedRecordCount, 0);
        assert.equal(out.Records.length, 4);
        for (const e of out.Records) { assert.equal(e.ErrorCode, null); assert.match(e.SequenceNumber, /^\d+$/); }
        assert.match(r.stderr, /ProvisionedThroughputExceededException: .* \(2 of 4 records failed\)/);

        // On the last attempt the combined output reports what still failed (and the result is partial).
        reset([{ partial: [1, 3] }, { partial: [1] }]);
        r = await drive(props, [req], { attempts: 2 });
        assertOk(r.out[0]);
        assert.equal(srv.requests.length, 2);
        assert.deepEqual(srv.requests[1].body.Records.map((x) => x.PartitionKey), ['b', 'd']);
        const last = dataOf(r.out[0]);
        assert.equal(last.FailedRecordCount, 1);
        // subset [b, d]: its entry 1 (d) failed again, b succeeded
        assert.equal(last.Records[3].ErrorCode, 'ProvisionedThroughputExceededException');
        assert.equal(last.Records[3].SequenceNumber, null);
        assert.equal(last.Records[1].ErrorCode, null);
        assert.match(last.Records[1].SequenceNumber, /^\d+$/);
        assert.match(r.stderr, /^partial 0$/m);
    });

    test('PutRecords partial failure with no time left for a retry answers the partial output', async () => {
        // The deadline (50 ms) is below the smallest retry delay (100 ms): the first answer is final,
        // so the records written are reported, not turned into an error the caller cannot retry.
        const data = { a: b64('A'), b: b64('B'), c: b64('C') };
        const req = { metadata: { method: 'put_records', stream_name: 'fault' }, data: b64(JSON.stringify(data)) };
        reset([{ partial: [1] }, 'ok']);
        const r = await drive(props, [req], { attempts: 3, deadlineMs: 50 });
        assertOk(r.out[0]);
        assert.equal(srv.requests.length, 1);
        const out = dataOf(r.out[0]);
        assert.equal(out.FailedRecordCount, 1);
        assert.equal(out.Records[1].ErrorCode, 'ProvisionedThroughputExceededException');
        assert.match(out.Records[0].SequenceNumber, /^\d+$/);
        assert.match(out.Records[2].SequenceNumber, /^\d+$/);
        assert.match(r.stderr, /^partial 0$/m);
        // With time left the partial failure is still retried.
        reset([{ partial: [1] }, 'ok']);
        const r2 = await drive(props, [req], { attempts: 3, deadlineMs: 5000 });
        assertOk(r2.out[0]);
        assert.equal(srv.requests.length, 2);
        assert.equal(dataOf(r2.out[0]).FailedRecordCount, 0);
    });

    test('a signature error never echoes the session token or the canonical request', async () => {
        const token = 'FQoGZXIvYXdzEXAMPLEsessionTOKENvalue0123456789';
        const msg = 'The request signature we calculated does not match the signature you provided. Check your AWS '
            + 'Secret Access Key and signing method. Consult the service documentation for details.\n\nThe Canonical '
            + "String for this request should have been\n'POST\n/\n\ncontent-type:application/x-amz-json-1.1\n"
            + `host:kinesis.us-east-1.amazonaws.com\nx-amz-date:20260101T000000Z\nx-amz-security-token:${token}\n`
            + "x-amz-target:Kinesis_20131202.PutRecord\n\ncontent-type;host;x-amz-date;x-amz-security-token;x-amz-target\n"
            + "abc'\n\nThe String-to-Sign should have been\n'AWS4-HMAC-SHA256\n20260101T000000Z\n"
            + "20260101/us-east-1/kinesis/aws4_request\nabc'";
        const sig = { status: 400, code: 'InvalidSignatureException', message: msg };
        reset([sig, sig]);
        let r = await drive(props, [put], { attempts: 1 });
        assert.equal(srv.requests.length, 2);
        assert.equal(r.out[0].error, 'InvalidSignatureException: The request signature we calculated does not match '
            + 'the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service '
            + 'documentation for details.');
        assert.doesNotMatch(r.stderr + JSON.stringify(r.out), new RegExp(token));
        // Any error: a quoted token header is masked to the line end.
        reset([{ status: 400, code: 'ValidationException', message: `bad header x-amz-security-token:${token}\nnext line` }]);
        r = await drive(props, [put], { attempts: 1 });
        assert.equal(r.out[0].error, 'ValidationException: bad header x-amz-security-token:***\nnext line');
        assert.doesNotMatch(r.stderr + JSON.stringify(r.out), new RegExp(token));
    });

    test('reset mid-response is retried', async () => {
        reset(['reset', 'ok']);
        const r = await drive(props, [put], { attempts: 2 });
        assertOk(r.out[0]);
        assert.equal(srv.requests.length, 2);
    });

    test('a slow answer times out; an oversized answer fails at once', async () => {
        reset([{ slow: 1500 }]);
        let r = await drive({ ...props, request_timeout_ms: '300' }, [put], { attempts: 1 });
        assert.equal(r.out[0].is_error, true);
        assert.match(r.out[0].error, /timed out/);
        reset([{ big: 200000 }, 'ok']);
        r = await drive({ ...props, max_response_bytes: '65536' }, [put], { attempts: 3 });
        assert.equal(r.out[0].is_error, true);
        assert.equal(srv.requests.length, 1);
    });

    test('Connection: close answers are followed by new connections', async () => {
        reset(['close', 'close', 'close']);
        const r = await drive(props, [put, put, put, put], { attempts: 1 });
        for (const x of r.out) assertOk(x);
        assert.equal(srv.requests.length, 4);
        assert.ok(new Set(srv.requests.map((q) => q.socket)).size >= 3);
    });

    test('the pool never exceeds max_connections; requests are signed when sent', async () => {
        reset(Array.from({ length: 12 }, () => ({ slow: 250 })));
        const reqs = Array.from({ length: 12 }, () => put);
        const r = await drive({ ...props, max_connections: '2' }, reqs, { attempts: 1, concurrency: 12 });
        assert.equal(r.out.length, 12);
        for (const x of r.out) assertOk(x);
        assert.ok(srv.maxSockets <= 2, `peak sockets ${srv.maxSockets}`);
        // 6 rounds of 250 ms: the last requests waited ~1.25 s in the queue, yet their date is fresh.
        for (const q of srv.requests) assert.ok(q.skewMs < 1200, `signed ${q.skewMs} ms before arrival`);
    });

    test('every request carried a valid signature and a current date', () => {
        all.push(...srv.requests);
        assert.ok(all.length > 30);
        for (const q of all) {
            assert.equal(q.sigOk, true);
            assert.ok(Math.abs(q.skewMs) < 5 * 60 * 1000);
        }
    });
});

// A scripted, fault-injecting Kinesis endpoint for tests (node http on 127.0.0.1, ephemeral port).
//
//   const srv = await startFaultServer({ secret: 'SECRET' });
//   srv.script(['throttle', 'throttle', 'ok']);   // one action per request, in arrival order
//   srv.endpoint                                   // http://127.0.0.1:<port>
//   srv.requests                                   // [{op, body, amzDate, skewMs, sigOk, socket}]
//   srv.maxSockets / srv.sockets                   // peak / current open TCP connections
//   await srv.close();
//
// Actions (string or object; when the script runs out, 'ok'):
//   'ok'                      a plausible success for the operation
//   'throttle'                400 ProvisionedThroughputExceededException (x-amzn-ErrorType set)
//   {partial: [i, ...], code} 200 PutRecords with those entry indices failed (default code
//                             ProvisionedThroughputExceededException)
//   {status: 500|503, code, message}  an error answer
//   'reset'                   sends half a response head, then destroys the socket
//   {slow: ms}                answers 'ok' after ms
//   {big: bytes}              200 with a body of that many bytes
//   'close'                   'ok' with Connection: close, then ends the socket
// Every request's SigV4 signature is verified (with `secret`) and its X-Amz-Date compared with the
// arrival time (skewMs = arrival - date): a request signed at enqueue time shows a large skew.
import crypto from 'node:crypto';
import http from 'node:http';

const sha256 = (s) => crypto.createHash('sha256').update(s).digest('hex');
const hmac = (k, s) => crypto.createHmac('sha256', k).update(s).digest();

function amzDateMs(d) {
    const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(d || '');
    return m ? Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]) : NaN;
}

// Recomputes the signature over the headers the client says it signed.
export function verifySigV4(req, body, secret) {
    const auth = req.headers.authorization || '';
    const m = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$/.exec(auth);
    if (!m) return false;
    const [, , date, region, service, signed, sig] = m;
    const names = signed.split(';');
    const canonHeaders = names.map((n) => `${n}:${String(req.headers[n] ?? '').trim().replace(/\s+/g, ' ')}\n`).join('');
    const canon = ['POST', '/', '', canonHeaders, signed, sha256(body)].join('\n');
    const amzDate = req.headers['x-amz-date'];
    const scope = `${date}/${region}/${service}/aws4_request`;
    const sts = ['AWS4-HMAC-SHA256', amzDate, scope, sha256(canon)].join('\n');
    let k = hmac('AWS4' + secret, date);
    k = hmac(k, region);
    k = hmac(k, service);
    k = hmac(k, 'aws4_request');
    return crypto.createHmac('sha256', k).update(sts).digest('hex') === sig;
}

function okBody(op, parsed) {
    switch (op) {
    case 'PutRecord':
        return { ShardId: 'shardId-000000000000', SequenceNumber: String(1000 + Math.floor(Math.random() * 1e6)) };
    case 'PutRecords':
        return {
            FailedRecordCount: 0,
            Records: (parsed.Records || []).map((r, i) => ({ ShardId: 'shardId-000000000000', SequenceNumber: `${Date.now()}${i}` })),
        };
    case 'ListStreams':
        return { StreamNames: ['fault'], HasMoreStreams: false };
    case 'GetShardIterator':
        return { ShardIterator: 'ITER' };
    default:
        return {};
    }
}

export async function startFaultServer({ secret = 'SECRET' } = {}) {
    let queue = [];
    const state = {
        requests: [],
        sockets: 0,
        maxSockets: 0,
        connections: 0,
        script(actions) { queue = [...actions]; },
    };
    const open = new Set();
    const timers = new Set();
    const server = http.createServer((req, res) => {
        const chunks = [];
        req.on('data', (c) => chunks.push(c));
        req.on('end', () => {
            const arrival = Date.now();
            const body = Buffer.concat(chunks).toString('utf8');
            const op = String(req.headers['x-amz-target'] || '').replace(/^Kinesis_20131202\./, '');
            let parsed = {};
            try { parsed = JSON.parse(body); } catch { /* kept as {} */ }
            const amzDate = req.headers['x-amz-date'];
            state.requests.push({
                op, body: parsed, amzDate, skewMs: arrival - amzDateMs(amzDate),
                sigOk: verifySigV4(req, body, secret), socket: req.socket.kkId,
            });
            const action = queue.length ? queue.shift() : 'ok';
            const send = (status, obj, headers = {}) => {
                const text = obj === null ? '' : JSON.stringify(obj);
                res.writeHead(status, { 'Content-Type': 'application/x-amz-json-1.1', 'x-amzn-RequestId': 'r', ...headers });
                res.end(text);
            };
            const err = (status, code, message) => send(status, { __type: code, message }, { 'x-amzn-ErrorType': `${code}:http://internal.amazon.com/coral/` });
            if (action === 'ok') return send(200, okBody(op, parsed));
            if (action === 'throttle') return err(400, 'ProvisionedThroughputExceededException', 'Rate exceeded for shard shardId-000000000000 in stream fault under account 000000000000.');
            if (action === 'close') {
                res.shouldKeepAlive = false;
                return send(200, okBody(op, parsed), { Connection: 'close' });
            }
            if (action === 'reset') {
                req.socket.write('HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Le');
                return req.socket.destroy();
            }
            if (action.partial) {
                const code = action.code || 'ProvisionedThroughputExceededException';
                const recs = (parsed.Records || []).map((r, i) => (action.partial.includes(i)
                    ? { ErrorCode: code, ErrorMessage: `Rate exceeded for shard shardId-000000000000 (entry ${i})` }
                    : { ShardId: 'shardId-000000000000', SequenceNumber: `${Date.now()}${i}` }));
                return send(200, { FailedRecordCount: action.partial.length, Records: recs });
            }
            if (action.status) return err(action.status, action.code || 'InternalFailure', action.message || 'internal failure');
            if (action.slow) {
                const t = setTimeout(() => { timers.delete(t); if (!res.destroyed) send(200, okBody(op, parsed)); }, action.slow);
                timers.add(t);
                return undefined;
            }
            if (action.big) {
                res.writeHead(200, { 'Content-Type': 'application/x-amz-json-1.1', 'Content-Length': action.big });
                return res.end(Buffer.alloc(action.big, 0x20));
            }
            return send(500, { __type: 'InternalFailure', message: `bad script action ${JSON.stringify(action)}` });
        });
    });
    server.keepAliveTimeout = 5000;
    server.on('connection', (sock) => {
        sock.kkId = ++state.connections;
        open.add(sock);
        state.sockets++;
        state.maxSockets = Math.max(state.maxSockets, state.sockets);
        sock.on('close', () => { open.delete(sock); state.sockets--; });
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    state.port = server.address().port;
    state.endpoint = `http://127.0.0.1:${state.port}`;
    state.close = () => new Promise((resolve) => {
        for (const t of timers) clearTimeout(t);
        for (const s of open) s.destroy();
        server.close(() => resolve());
    });
    return state;
}

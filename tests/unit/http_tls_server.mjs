// HTTPS keep-alive server for test_http_client's TLS cases.
// Usage: node http_tls_server.mjs <cert.pem> <key.pem>
// Listens on 127.0.0.1 (ephemeral port), prints "PORT <n>" on stdout, and
// answers every request with "<requests on this socket>:<body bytes>".
// It exits when stdin closes or after 30 s, so it never outlives its test.
import https from 'node:https';
import fs from 'node:fs';

const [cert, key] = process.argv.slice(2);
const perSocket = new WeakMap();
const server = https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, (req, res) => {
  let len = 0;
  req.on('data', (d) => { len += d.length; });
  req.on('end', () => {
    const n = (perSocket.get(req.socket) || 0) + 1;
    perSocket.set(req.socket, n);
    const body = `${n}:${len}`;
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  });
});
server.keepAliveTimeout = 5000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`PORT ${server.address().port}\n`);
});
const stop = () => process.exit(0);
process.stdin.on('end', stop);
process.stdin.on('close', stop);
process.stdin.resume();
setTimeout(stop, 30000).unref();

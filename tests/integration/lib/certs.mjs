// makeCerts(dir?) -> {dir, ca, cert, key}: PEM file paths of a fresh CA and a server certificate
// signed by it with SAN DNS:localhost, DNS:127.0.0.1, IP:127.0.0.1 (openssl CLI).  Without dir a
// temp dir is made (removed at exit).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { tmpDir } from './procs.mjs';

export function makeCerts(dir) {
    dir = dir || tmpDir('kk-certs-');
    fs.mkdirSync(dir, { recursive: true });
    const p = (f) => path.join(dir, f);
    const ssl = (...args) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 20000 });
    ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=kk-test-ca',
        '-keyout', p('ca.key'), '-out', p('ca.pem'),
        '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-keyout', p('server.key'), '-out', p('server.csr'));
    fs.writeFileSync(p('ext.cnf'), [
        'subjectAltName=DNS:localhost,DNS:127.0.0.1,IP:127.0.0.1',
        'basicConstraints=CA:FALSE',
        'keyUsage=digitalSignature,keyEncipherment',
        'extendedKeyUsage=serverAuth',
        '',
    ].join('\n'));
    ssl('x509', '-req', '-in', p('server.csr'), '-CA', p('ca.pem'), '-CAkey', p('ca.key'), '-CAcreateserial',
        '-days', '2', '-out', p('server.pem'), '-extfile', p('ext.cnf'));
    return { dir, ca: p('ca.pem'), cert: p('server.pem'), key: p('server.key') };
}

// The deployment example (config/kubernetes/*.yaml): parsed as YAML, checked for
// what a production sidecar needs, and its embedded gateway config validated
// with the real binary (--check-config).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';

const srcDir = process.env.KK_SOURCE_DIR || process.cwd();
const gw = path.join(process.env.KK_BUILD_DIR || 'build', 'kubemq-kinesis');
const dir = path.join(srcDir, 'config/kubernetes');
const files = fs.readdirSync(dir).filter((f) => f.endsWith('.yaml'));

function load(file) {
    const docs = parseAllDocuments(fs.readFileSync(path.join(dir, file), 'utf8'));
    for (const d of docs) assert.equal(d.errors.length, 0, `${file}: ${d.errors.join('; ')}`);
    return docs.map((d) => d.toJS());
}

test('every manifest parses and holds a ConfigMap and a Deployment with the gateway as a sidecar', () => {
    assert.ok(files.length > 0, 'no manifests');
    for (const file of files) {
        const objs = load(file);
        const cm = objs.find((o) => o.kind === 'ConfigMap');
        const dep = objs.find((o) => o.kind === 'Deployment');
        assert.ok(cm && dep, `${file}: ConfigMap and Deployment expected`);
        const pod = dep.spec.template.spec;
        const side = pod.containers.find((c) => (c.args || []).some((a) => String(a).includes('kubemq-kinesis')));
        assert.ok(side, `${file}: no kubemq-kinesis container`);
        assert.ok(pod.containers.length >= 2, `${file}: the gateway runs beside an application container`);

        // Probes on the API port: readiness /ready, liveness /health.
        const apiPort = side.ports.find((p) => p.name === side.readinessProbe.httpGet.port)?.containerPort;
        assert.equal(side.readinessProbe.httpGet.path, '/ready');
        assert.equal(side.livenessProbe.httpGet.path, '/health');
        assert.equal(side.livenessProbe.httpGet.port, side.readinessProbe.httpGet.port);

        // The embedded config: apiPort matches the probes, it validates, and
        // the grace period outlasts the drain.
        const mount = side.volumeMounts.find((m) => pod.volumes.find((v) => v.name === m.name)?.configMap);
        const cfgArg = side.args[side.args.indexOf('-c') + 1];
        assert.ok(cfgArg.startsWith(mount.mountPath), `${file}: -c points into the ConfigMap mount`);
        const text = cm.data[path.basename(cfgArg)];
        assert.ok(text, `${file}: ConfigMap key ${path.basename(cfgArg)}`);
        const cfg = parseAllDocuments(text)[0].toJS();
        assert.equal(cfg.apiPort ?? 8081, apiPort);
        const drain = cfg.shutdown_timeout_seconds ?? 30;
        assert.ok(pod.terminationGracePeriodSeconds > drain,
            `${file}: terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds} <= ${drain}`);

        const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kk-k8s-'));
        const f = path.join(tmp, 'config.yaml');
        fs.writeFileSync(f, text);
        const env = { PATH: process.env.PATH };
        for (const e of side.env || []) if (e.value !== undefined) env[e.name] = e.value;
        const r = spawnSync(gw, ['--check-config', '-c', f], { env, encoding: 'utf8' });
        fs.rmSync(tmp, { recursive: true, force: true });
        assert.equal(r.status, 0, r.stderr);

        // Secrets only by reference; resources requested.
        for (const e of side.env || []) {
            if (/SECRET|TOKEN|KEY/.test(e.name)) assert.ok(e.valueFrom?.secretKeyRef, `${e.name} must come from a Secret`);
        }
        assert.ok(!/aws_secret_key:\s*["']?[A-Za-z0-9/+]{8,}/.test(text), 'no literal secret in the ConfigMap');
        assert.ok(side.resources?.requests?.cpu && side.resources?.requests?.memory, 'resource requests');
        assert.ok(side.resources?.limits?.memory, 'memory limit');
    }
});

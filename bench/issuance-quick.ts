/**
 * Quick issuance throughput check: parseCsr (incl. signature verification) + issueDevice for
 * 20,000 certificates from 50 distinct P-256 CSRs made with the openssl CLI, on one thread.
 *
 *   npx tsx bench/issuance-quick.ts [count]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CertificateAuthority } from '../src/ca/index.js';
import { systemClock } from '../src/clock.js';

const COUNT = Number(process.argv[2] ?? 20_000);
const DISTINCT_CSRS = 50;

const tmp = mkdtempSync(path.join(os.tmpdir(), 'provisiond-bench-'));
try {
  const csrs: string[] = [];
  for (let i = 0; i < DISTINCT_CSRS; i++) {
    const csr = path.join(tmp, `csr${i}.pem`);
    execFileSync('openssl', [
      'req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-subj', `/CN=bench-${i}`, '-keyout', path.join(tmp, `k${i}.pem`), '-out', csr,
    ], { stdio: 'ignore' });
    csrs.push(readFileSync(csr, 'utf8'));
  }

  const ca = new CertificateAuthority({ dir: path.join(tmp, 'ca'), organization: 'Bench', deviceValidityDays: 365, clock: systemClock });
  await ca.start();

  // Warm-up (JIT, OpenSSL method caches).
  for (let i = 0; i < 500; i++) ca.issueDevice({ deviceId: `warm-${i}`, spkiDer: ca.parseCsr(csrs[i % DISTINCT_CSRS]!).spkiDer });

  let parseNs = 0n;
  let issueNs = 0n;
  let bytes = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < COUNT; i++) {
    const t0 = process.hrtime.bigint();
    const parsed = ca.parseCsr(csrs[i % DISTINCT_CSRS]!);
    const t1 = process.hrtime.bigint();
    const cert = ca.issueDevice({ deviceId: `device-${i}`, spkiDer: parsed.spkiDer });
    issueNs += process.hrtime.bigint() - t1;
    parseNs += t1 - t0;
    bytes += cert.der.length;
  }
  const totalNs = Number(process.hrtime.bigint() - start);
  const perSec = COUNT / (totalNs / 1e9);
  console.log(`issued ${COUNT} device certificates in ${(totalNs / 1e6).toFixed(0)} ms: ${perSec.toFixed(0)} certs/s`);
  console.log(`  parseCsr ${(Number(parseNs) / COUNT / 1000).toFixed(1)} us/op, issueDevice ${(Number(issueNs) / COUNT / 1000).toFixed(1)} us/op, avg DER ${(bytes / COUNT).toFixed(0)} bytes`);
  console.log(`  node ${process.versions.node}, OpenSSL ${process.versions.openssl}`);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}

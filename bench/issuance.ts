/**
 * Issuance throughput on one core: CSRs verified + certificates issued per second by src/ca,
 * against baselines measured in the same run:
 *   - the node:crypto limit: one ECDSA P-256 verify (a fresh device key each time) + one sign;
 *   - @peculiar/x509 used plainly (verify the CSR, build and sign the certificate).
 *
 *   npx tsx bench/issuance.ts [seconds-per-measure]
 */
import 'reflect-metadata';
import { createPublicKey, generateKeyPairSync, randomBytes, sign, verify, webcrypto } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { CertificateAuthority } from '../src/ca/index.js';
import { systemClock } from '../src/clock.js';

const DISTINCT = 2000;
const crypto = webcrypto as unknown as Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[1];
x509.cryptoProvider.set(crypto!);

export interface IssuanceResult {
  ours: number;
  cryptoLimit: number;
  peculiar: number;
  ratioToLimit: number;
  ratioToPeculiar: number;
}

async function makeCsrs(n: number): Promise<string[]> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=bench-${i}`, keys, signingAlgorithm: alg }, crypto);
    out.push(csr.toString('pem'));
  }
  return out;
}

/** Runs `fn` repeatedly for about `seconds` and returns operations per second. */
async function rate(seconds: number, fn: (i: number) => unknown): Promise<number> {
  for (let i = 0; i < 200; i++) await fn(i); // warm-up
  const start = performance.now();
  let n = 0;
  while (performance.now() - start < seconds * 1000) {
    for (let k = 0; k < 100; k++) await fn(n++);
  }
  return n / ((performance.now() - start) / 1000);
}

export async function benchIssuance(seconds = 3): Promise<IssuanceResult> {
  const dir = mkdtempSync(join(tmpdir(), 'provisiond-bench-'));
  try {
    const csrs = await makeCsrs(DISTINCT);
    const ca = new CertificateAuthority({ dir: join(dir, 'ca'), organization: 'Bench', deviceValidityDays: 365, clock: systemClock });
    await ca.start();

    const ours = await rate(seconds, (i) => ca.issueDevice({ deviceId: `device-${i}`, spkiDer: ca.parseCsr(csrs[i % DISTINCT]!).spkiDer }));

    // The floor: verify one signature with a device key never seen before + sign one TBS.
    const issuing = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const devices = Array.from({ length: DISTINCT }, () => generateKeyPairSync('ec', { namedCurve: 'P-256' }));
    const tbs = randomBytes(300);
    const sigs = devices.map((d) => sign('sha256', tbs, d.privateKey));
    const spkis = devices.map((d) => d.publicKey.export({ type: 'spki', format: 'der' }));
    const cryptoLimit = await rate(seconds, (i) => {
      const k = i % DISTINCT;
      verify('sha256', tbs, createPublicKey({ key: spkis[k]!, format: 'der', type: 'spki' }), sigs[k]!);
      return sign('sha256', tbs, issuing);
    });

    // @peculiar/x509 used plainly.
    const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
    const caKeys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const parsed = csrs.map((p) => new x509.Pkcs10CertificateRequest(p));
    const now = new Date();
    const peculiar = await rate(seconds, async (i) => {
      const csr = parsed[i % DISTINCT]!;
      if (!(await csr.verify(crypto))) throw new Error('csr');
      return x509.X509CertificateGenerator.create(
        {
          serialNumber: randomBytes(16).toString('hex').replace(/^[89a-f]/, '1'),
          subject: `CN=device-${i}`,
          issuer: 'CN=Bench Issuing CA',
          notBefore: now,
          notAfter: new Date(now.getTime() + 365 * 86400_000),
          publicKey: await csr.publicKey.export(crypto),
          signingKey: caKeys.privateKey,
          signingAlgorithm: alg,
          extensions: [
            new x509.BasicConstraintsExtension(false, undefined, true),
            new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
            new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
          ],
        },
        crypto,
      );
    });
    return { ours, cryptoLimit, peculiar, ratioToLimit: ours / cryptoLimit, ratioToPeculiar: ours / peculiar };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function printIssuance(r: IssuanceResult): void {
  const f = (n: number) => Math.round(n).toLocaleString('en-US').padStart(8);
  console.log('issuance (one core, ECDSA P-256 CSRs, each from a distinct key)');
  console.log(`  provisiond CA (verify CSR + issue)   ${f(r.ours)} certs/s`);
  console.log(`  node:crypto verify+sign limit        ${f(r.cryptoLimit)} ops/s   ratio ${r.ratioToLimit.toFixed(2)}`);
  console.log(`  @peculiar/x509 used plainly          ${f(r.peculiar)} certs/s   ratio ${r.ratioToPeculiar.toFixed(1)}x`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  printIssuance(await benchIssuance(Number(process.argv[2] ?? 3)));
  console.log(`  node ${process.versions.node}, OpenSSL ${process.versions.openssl}`);
}

/**
 * Issuance throughput on one core: CSRs verified + certificates issued per second by src/ca,
 * against baselines measured in the same run:
 *   - the OpenSSL limit: `openssl speed ecdsap256` signs/s and verifies/s on this machine, combined
 *     as one verify + one sign per certificate (1 / (1/sign + 1/verify));
 *   - the node:crypto floor: import a fresh device key (SPKI DER), one verify, one sign;
 *   - @peculiar/x509 used plainly (verify the CSR, build and sign the certificate);
 *   - node-forge with RSA-2048 (verify an RSA CSR, build and sign with an RSA CA key).
 *
 *   npx tsx bench/issuance.ts [seconds-per-measure]
 */
import 'reflect-metadata';
import { createPublicKey, generateKeyPairSync, randomBytes, sign, verify, webcrypto } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import * as x509 from '@peculiar/x509';
import forge from 'node-forge';
import { CertificateAuthority } from '../src/ca/index.js';
import { native } from '../src/ca/native.js';
import { systemClock } from '../src/clock.js';

const DISTINCT = 2000;
const crypto = webcrypto as unknown as Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[1];
x509.cryptoProvider.set(crypto!);

export interface IssuanceResult {
  ours: number;
  /** openssl speed: ECDSA P-256 signs and verifies per second, one core. */
  opensslSign: number;
  opensslVerify: number;
  /** One verify + one sign per certificate at those rates. */
  opensslLimit: number;
  cryptoLimit: number;
  peculiar: number;
  forgeRsa: number;
  ratioToOpenssl: number;
  ratioToLimit: number;
  ratioToPeculiar: number;
  ratioToForge: number;
  native: boolean;
}

/** `openssl speed -seconds N ecdsap256`: [sign/s, verify/s]. */
function opensslSpeed(seconds: number): [number, number] {
  const out = execFileSync('openssl', ['speed', '-seconds', String(seconds), 'ecdsap256'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const m = /256 bits ecdsa \(nistp256\)\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)/.exec(out);
  if (!m) throw new Error(`cannot read openssl speed output:\n${out}`);
  return [Number(m[1]), Number(m[2])];
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
async function rate(seconds: number, fn: (i: number) => unknown, batch = 100): Promise<number> {
  for (let i = 0; i < Math.min(200, batch * 2); i++) await fn(i); // warm-up
  const start = performance.now();
  let n = 0;
  while (performance.now() - start < seconds * 1000) {
    for (let k = 0; k < batch; k++) await fn(n++);
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

    // node-forge, RSA-2048 (pure JavaScript RSA): a short run, it is slow
    const forgeCa = forge.pki.rsa.generateKeyPair({ bits: 2048, e: 0x10001 });
    const forgeDevice = forge.pki.rsa.generateKeyPair({ bits: 2048, e: 0x10001 });
    const forgeCsr = forge.pki.createCertificationRequest();
    forgeCsr.publicKey = forgeDevice.publicKey;
    forgeCsr.setSubject([{ name: 'commonName', value: 'bench' }]);
    forgeCsr.sign(forgeDevice.privateKey, forge.md.sha256.create());
    const forgeCsrPem = forge.pki.certificationRequestToPem(forgeCsr);
    const forgeRsa = await rate(Math.min(seconds, 1), (i) => {
      const csr = forge.pki.certificationRequestFromPem(forgeCsrPem);
      if (!csr.verify()) throw new Error('csr');
      const cert = forge.pki.createCertificate();
      cert.serialNumber = '01' + randomBytes(15).toString('hex');
      cert.publicKey = csr.publicKey!;
      cert.setSubject([{ name: 'commonName', value: `device-${i}` }]);
      cert.setIssuer([{ name: 'commonName', value: 'Bench Issuing CA' }]);
      cert.validity.notBefore = now;
      cert.validity.notAfter = new Date(now.getTime() + 365 * 86400_000);
      cert.setExtensions([{ name: 'basicConstraints', cA: false }, { name: 'keyUsage', digitalSignature: true }, { name: 'extKeyUsage', clientAuth: true }]);
      cert.sign(forgeCa.privateKey, forge.md.sha256.create());
      return forge.pki.certificateToPem(cert);
    }, 2);

    const [opensslSign, opensslVerify] = opensslSpeed(seconds);
    const opensslLimit = 1 / (1 / opensslSign + 1 / opensslVerify);
    return {
      ours,
      opensslSign,
      opensslVerify,
      opensslLimit,
      cryptoLimit,
      peculiar,
      forgeRsa,
      ratioToOpenssl: ours / opensslLimit,
      ratioToLimit: ours / cryptoLimit,
      ratioToPeculiar: ours / peculiar,
      ratioToForge: ours / forgeRsa,
      native: native !== undefined,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function printIssuance(r: IssuanceResult): void {
  const f = (n: number) => Math.round(n).toLocaleString('en-US').padStart(8);
  console.log(`issuance (one core, ECDSA P-256 CSRs, each from a distinct key; native P-256 module ${r.native ? 'loaded' : 'NOT loaded'})`);
  console.log(`  provisiond CA (verify CSR + issue)   ${f(r.ours)} certs/s`);
  console.log(`  OpenSSL limit (1 verify + 1 sign)    ${f(r.opensslLimit)} /s        ratio ${r.ratioToOpenssl.toFixed(2)}   (openssl speed: ${f(r.opensslSign).trim()} signs/s, ${f(r.opensslVerify).trim()} verifies/s)`);
  console.log(`  node:crypto floor (import+verify+sign) ${f(r.cryptoLimit)} /s      ratio ${r.ratioToLimit.toFixed(2)}`);
  console.log(`  @peculiar/x509 used plainly          ${f(r.peculiar)} certs/s   ratio ${r.ratioToPeculiar.toFixed(1)}x`);
  console.log(`  node-forge, RSA-2048                 ${f(r.forgeRsa)} certs/s   ratio ${r.ratioToForge.toFixed(0)}x`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  printIssuance(await benchIssuance(Number(process.argv[2] ?? 3)));
  console.log(`  node ${process.versions.node}, OpenSSL ${process.versions.openssl}`);
}

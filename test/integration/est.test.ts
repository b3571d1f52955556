/**
 * EST (RFC 7030) enrollment done with curl and openssl only: the device side of every request is
 * a bash pipeline of curl, base64 and openssl, against a real service (real CA, real store) with
 * the EST server wired around it as main.ts would. Covers cacerts, simpleenroll with the
 * bootstrap token, simplereenroll with the issued certificate, and the refusals (each one leaves
 * the device record unchanged).
 *
 * Needs curl and openssl (CI has both); skipped with a reason when either is missing.
 */
import { execFile, execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClaimResponse } from '../../schemas/types.js';
import { startEstServer, type EstServer } from '../../src/est/index.js';
import { registerAndClaim } from '../helpers/device.js';
import { missingTools } from '../helpers/tools.js';
import { snapshotDevice, startTestService, type TestService } from '../helpers/service.js';

const missing = missingTools(['curl', 'openssl', 'base64']);
if (missing.length > 0) console.warn(`EST tests skipped: ${missing.join(', ')} not installed (apt-get install curl openssl coreutils)`);

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

let ts: TestService;
let est: EstServer;
let dir: string;
let base: string;

/**
 * Runs a bash script in the work dir without blocking the event loop (the service lives in this
 * process): pipefail, a clean environment (no proxy, no ~/.curlrc), killed after 20 s.
 */
function sh(script: string, env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      'bash',
      ['-c', `set -euo pipefail\n${script}`],
      { cwd: dir, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, ...env }, timeout: 20_000, killSignal: 'SIGKILL', maxBuffer: 1 << 20 },
      (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    );
  });
}

async function ok(script: string, env: Record<string, string> = {}): Promise<string> {
  const run = await sh(script, env);
  if (run.code !== 0) throw new Error(`script failed (${run.code}):\n${script}\n--- stderr:\n${run.stderr}\n--- stdout:\n${run.stdout}`);
  return run.stdout;
}

/** curl as an EST client: trusts only the service root, never a proxy, bounded in time. */
const CURL = `curl -q -sS --noproxy '*' --connect-timeout 5 --max-time 10 --cacert root.pem`;

/** An HTTP exchange whose status, headers and body are kept (for refusals). */
async function exchange(curlArgs: string, stdin = ': ', env: Record<string, string> = {}) {
  const out = await ok(`${stdin} | ${CURL} -o resp.body -D resp.headers -w '%{http_code}' ${curlArgs}`, env);
  return {
    status: Number(out.trim()),
    headers: readFileSync(join(dir, 'resp.headers'), 'utf8').toLowerCase(),
    body: readFileSync(join(dir, 'resp.body'), 'utf8'),
  };
}

function pemCerts(text: string): Buffer[] {
  return [...text.matchAll(/-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g)].map((m) => Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64'));
}

/** The subject CN as openssl prints it (RFC 2253 order: most specific first). */
async function cnOf(file: string): Promise<string | undefined> {
  const subject = await ok(`openssl x509 -in ${file} -noout -subject -nameopt RFC2253`);
  return /^subject=CN=([^,\n]*)/.exec(subject)?.[1];
}

const derOf = (pem: string) => new X509Certificate(pem).raw;

beforeAll(async () => {
  if (missing.length > 0) return;
  ts = await startTestService();
  const { ca } = ts.running;
  // its own TLS identity (a different host list under the broker's name would make the CA re-issue the broker's)
  const identity = await ca.serviceIdentity('est-server', { kind: 'server', hostnames: ['localhost'], ipAddresses: ['127.0.0.1'] });
  est = await startEstServer({
    service: ts.running.service,
    ca,
    tls: {
      keyPem: identity.keyPem,
      certChainPem: [identity.certPem, ...identity.chainPems.slice(0, -1)].join(''),
      clientCaPems: ca.chainPems,
    },
    host: '127.0.0.1',
    port: 0,
    log: pino({ level: 'silent' }),
  });
  dir = mkdtempSync(join(tmpdir(), 'est-'));
  writeFileSync(join(dir, 'root.pem'), ca.rootPem);
  writeFileSync(join(dir, 'issuing.pem'), ca.chainPems[0]!);
  base = `https://localhost:${est.port}/.well-known/est`;
});

afterAll(async () => {
  await est?.stop();
  await ts?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const title = `EST (RFC 7030) with curl and openssl only${missing.length > 0 ? ` (skipped: ${missing.join(', ')} not installed)` : ''}`;

describe.skipIf(missing.length > 0)(title, () => {
  let id: string;
  let bootstrap: NonNullable<ClaimResponse['bootstrap']>;
  let firstSerial: string;
  const env = () => ({ ID: id, TOKEN: bootstrap.token, EST: base });

  it('serves the CA chain from /cacerts as a certs-only PKCS#7', async () => {
    const printed = await ok(`${CURL} "$EST/cacerts" | base64 -d | openssl pkcs7 -inform DER -print_certs`, { EST: base });
    expect(pemCerts(printed)).toEqual(ts.running.ca.chainPems.map(derOf)); // issuing, root
    const head = await exchange(`"$EST/cacerts"`, ': ', { EST: base });
    expect(head.status).toBe(200);
    expect(head.headers).toContain('content-type: application/pkcs7-mime');
    expect(head.headers).toContain('content-transfer-encoding: base64');
    // and the structure is the degenerate one: no signers
    const parsed = await ok(`${CURL} "$EST/cacerts" | base64 -d | openssl asn1parse -inform DER`, { EST: base });
    expect(parsed).toContain(':pkcs7-signedData');
    expect(parsed).toContain(':pkcs7-data');
  });

  it('refuses a wrong password, missing credentials and a garbage body, changing nothing', async () => {
    ({ id, bootstrap } = await registerAndClaim(ts));
    const before = await snapshotDevice(ts.running, id);
    await ok(`openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout k.pem -outform DER -out csr.der -subj /CN=x 2>/dev/null`);
    const post = `-H 'Content-Type: application/pkcs10' --data-binary @- "$EST/simpleenroll"`;

    const wrong = await exchange(`-u "$ID:not-the-token" ${post}`, 'base64 -w0 csr.der', env());
    expect(wrong.status).toBe(401);
    expect(wrong.headers).toContain('www-authenticate: basic realm="provisiond est"');
    expect(wrong.body).toMatch(/^TOKEN_INVALID: /);

    const otherDevice = await exchange(`-u "someone-else:$TOKEN" ${post}`, 'base64 -w0 csr.der', env());
    expect(otherDevice.status).toBe(401);
    expect(otherDevice.body).toMatch(/^TOKEN_INVALID: /);

    const anonymous = await exchange(post, 'base64 -w0 csr.der', env());
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers).toContain('www-authenticate: basic');

    const notBase64 = await exchange(`-u "$ID:$TOKEN" ${post}`, `printf 'this is not base64!'`, env());
    expect(notBase64.status).toBe(400);
    expect(notBase64.body).toMatch(/^CSR_MALFORMED: /);

    const notDer = await exchange(`-u "$ID:$TOKEN" ${post}`, `printf 'hello world' | base64`, env());
    expect(notDer.status).toBe(400);
    expect(notDer.body).toMatch(/^CSR_MALFORMED: /);

    // DER, but not a CSR: the CA's parser says so
    const notCsr = await exchange(`-u "$ID:$TOKEN" ${post}`, `openssl x509 -in root.pem -outform DER | base64 -w0`, env());
    expect(notCsr.status).toBe(400);
    expect(notCsr.body).toMatch(/^CSR_MALFORMED: /);

    // PEM instead of base64 DER is not EST
    const pem = await exchange(`-u "$ID:$TOKEN" ${post}`, `openssl req -inform DER -in csr.der`, env());
    expect(pem.status).toBe(400);

    const wrongType = await exchange(`-u "$ID:$TOKEN" -H 'Content-Type: application/x-pem-file' --data-binary @- "$EST/simpleenroll"`, 'base64 -w0 csr.der', env());
    expect(wrongType.status).toBe(415);

    const tooLarge = await exchange(`-u "$ID:$TOKEN" ${post}`, 'head -c 70000 /dev/zero | base64 -w0', env());
    expect(tooLarge.status).toBe(413);
    // without a Content-Length (chunked), counted while read
    const tooLargeChunked = await exchange(`-u "$ID:$TOKEN" -H 'Transfer-Encoding: chunked' ${post}`, 'head -c 70000 /dev/zero | base64 -w0', env());
    expect(tooLargeChunked.status).toBe(413);
    expect(tooLargeChunked.body).toMatch(/^PAYLOAD_TOO_LARGE: /);

    expect(await snapshotDevice(ts.running, id)).toEqual(before);
  });

  it('enrolls with simpleenroll: the certificate verifies, names the device and is recorded', async () => {
    await ok(
      `base64 -w0 csr.der | ${CURL} --fail-with-body -u "$ID:$TOKEN" -H 'Content-Type: application/pkcs10' --data-binary @- "$EST/simpleenroll" | base64 -d | openssl pkcs7 -inform DER -print_certs -out cert.pem`,
      env(),
    );
    expect((await ok('openssl verify -CAfile root.pem -untrusted issuing.pem cert.pem')).trim()).toBe('cert.pem: OK');
    expect(await cnOf('cert.pem')).toBe(id);
    firstSerial = (await ok('openssl x509 -in cert.pem -noout -serial')).trim().replace(/^serial=/, '').toLowerCase();
    // the certificate is for the key of the CSR
    expect(await ok('openssl x509 -in cert.pem -noout -pubkey')).toBe(await ok('openssl pkey -in k.pem -pubout'));

    const device = await ts.running.store.getDevice(id);
    expect(device?.state).toBe('identity_issued');
    expect(device?.certificateSerial).toBe(firstSerial);
    const events = await ts.running.store.listEvents(id);
    expect(events.at(-1)).toMatchObject({ type: 'identity_issued', reason: `certificate ${firstSerial}` });

    // the response is certs-only with exactly the issued certificate, under the RFC 7030 media type
    const res = await exchange(`-u "$ID:$TOKEN" -H 'Content-Type: application/pkcs10' --data-binary @- "$EST/simpleenroll"`, 'base64 -w0 csr.der', env());
    expect(res.status).toBe(200); // the same key again: the lost answer, re-sent
    expect(res.headers).toContain('content-type: application/pkcs7-mime; smime-type=certs-only');
    const again = pemCerts(await ok('base64 -d resp.body | openssl pkcs7 -inform DER -print_certs'));
    expect(again).toEqual([derOf(readFileSync(join(dir, 'cert.pem'), 'utf8'))]);
  });

  it('refuses the used token with another key (TOKEN_USED), changing nothing', async () => {
    const before = await snapshotDevice(ts.running, id);
    await ok(`openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout other.pem -outform DER -out other.der -subj /CN=x 2>/dev/null`);
    const res = await exchange(`-u "$ID:$TOKEN" -H 'Content-Type: application/pkcs10' --data-binary @- "$EST/simpleenroll"`, 'base64 -w0 other.der', env());
    expect([401, 409]).toContain(res.status);
    expect(res.body).toMatch(/^TOKEN_USED: /);
    expect(await snapshotDevice(ts.running, id)).toEqual(before);
  });

  it('refuses simplereenroll without a client certificate or with a garbage body, changing nothing', async () => {
    const before = await snapshotDevice(ts.running, id);
    await ok(`openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout k2.pem -outform DER -out csr2.der -subj /CN=${id} 2>/dev/null`);
    const post = `-H 'Content-Type: application/pkcs10' --data-binary @- "$EST/simplereenroll"`;

    const noCert = await exchange(post, 'base64 -w0 csr2.der', env());
    expect(noCert.status).toBe(401);
    expect(noCert.body).toMatch(/^AUTH_REQUIRED: /);

    // the bootstrap token is no substitute for the certificate
    const basic = await exchange(`-u "$ID:$TOKEN" ${post}`, 'base64 -w0 csr2.der', env());
    expect(basic.status).toBe(401);

    // a self-signed certificate that names the device
    const foreign = await ok(`openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout self.pem -subj /CN=${id} -x509 -days 1 -out self.crt 2>/dev/null && echo made`);
    expect(foreign.trim()).toBe('made');
    const selfSigned = await exchange(`--cert self.crt --key self.pem ${post}`, 'base64 -w0 csr2.der', env());
    expect(selfSigned.status).toBe(401);
    expect(selfSigned.body).toMatch(/^CERTIFICATE_UNTRUSTED: /);

    // a body refused before the service sees the certificate: not even the "first use" is recorded
    const garbage = await exchange(`--cert cert.pem --key k.pem ${post}`, `printf '%%%%'`, env());
    expect(garbage.status).toBe(400);
    expect(garbage.body).toMatch(/^CSR_MALFORMED: /);

    expect(await snapshotDevice(ts.running, id)).toEqual(before);
  });

  it('renews with simplereenroll over mutual TLS: a new certificate, the old one superseded', async () => {
    await ok(
      `base64 -w0 csr2.der | ${CURL} --fail-with-body --cert cert.pem --key k.pem -H 'Content-Type: application/pkcs10' --data-binary @- "$EST/simplereenroll" | base64 -d | openssl pkcs7 -inform DER -print_certs -out cert2.pem`,
      env(),
    );
    expect((await ok('openssl verify -CAfile root.pem -untrusted issuing.pem cert2.pem')).trim()).toBe('cert2.pem: OK');
    expect(await cnOf('cert2.pem')).toBe(id);
    expect(await ok('openssl x509 -in cert2.pem -noout -pubkey')).toBe(await ok('openssl pkey -in k2.pem -pubout'));
    const serial = (await ok('openssl x509 -in cert2.pem -noout -serial')).trim().replace(/^serial=/, '').toLowerCase();
    expect(serial).not.toBe(firstSerial);

    const device = await ts.running.store.getDevice(id);
    expect(device?.certificateSerial).toBe(serial);
    expect(device?.previousCertificateSerial).toBe(firstSerial);
    expect((await ts.running.store.getCertificate(firstSerial))?.status).toBe('superseded');
    expect((await ts.running.store.getCertificate(serial))?.status).toBe('active');
    expect((await ts.running.store.listEvents(id)).at(-1)).toMatchObject({ type: 'certificate_renewed' });

    // the new certificate renews in turn (its first use retires the old one for good)
    await ok(`openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout k3.pem -outform DER -out csr3.der -subj /CN=${id} 2>/dev/null`);
    await ok(
      `base64 -w0 csr3.der | ${CURL} --fail-with-body --cert cert2.pem --key k2.pem -H 'Content-Type: application/pkcs10' --data-binary @- "$EST/simplereenroll" | base64 -d | openssl pkcs7 -inform DER -print_certs -out cert3.pem`,
      env(),
    );
    expect((await ok('openssl verify -CAfile root.pem -untrusted issuing.pem cert3.pem')).trim()).toBe('cert3.pem: OK');
    expect((await ts.running.store.getCertificate(firstSerial))?.status).toBe('revoked');

    // and the first certificate, now revoked, no longer renews
    const before = await snapshotDevice(ts.running, id);
    const stale = await exchange(`--cert cert.pem --key k.pem -H 'Content-Type: application/pkcs10' --data-binary @- "$EST/simplereenroll"`, 'base64 -w0 csr3.der', env());
    expect(stale.status).toBe(401);
    expect(stale.body).toMatch(/^CERTIFICATE_UNKNOWN: /);
    expect(await snapshotDevice(ts.running, id)).toEqual(before);
  });

  it('answers 404 for other EST operations and 405 for a wrong method', async () => {
    for (const op of ['csrattrs', 'serverkeygen', 'fullcmc', 'label/cacerts', '']) {
      const res = await exchange(`"$EST/${op}"`, ': ', { EST: base });
      expect(res.status, op).toBe(404);
    }
    expect((await exchange(`-X DELETE "$EST/cacerts"`, ': ', { EST: base })).status).toBe(405);
    expect((await exchange(`"$EST/simpleenroll"`, ': ', { EST: base })).status).toBe(405);
    expect((await exchange(`"https://localhost:${est.port}/v1/devices"`)).status).toBe(404);
  });
});

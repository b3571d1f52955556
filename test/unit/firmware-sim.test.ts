/** The simulated device's checks on what it receives (firmware-sim/protocol.ts). */
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer } from 'node:tls';
import { CompactSign } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { SimDevice } from '../../firmware-sim/device.js';
import { openConfigDocument, parseCertificate, verifyChain, verifyIssuedChain } from '../../firmware-sim/protocol.js';
import { CertificateAuthority } from '../../src/ca/index.js';
import { systemClock } from '../../src/clock.js';
import { CONFIG_JWS_TYPE, ConfigSigner, pemToDerBase64 } from '../../src/provisioning/config-document.js';
import { registerAndClaim } from '../helpers/device.js';
import { startTestService } from '../helpers/service.js';

let dir: string;
let ca: CertificateAuthority;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sim-'));
  ca = new CertificateAuthority({ dir, organization: 'Test', deviceValidityDays: 30, clock: systemClock });
  await ca.start();
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const doc = { deviceId: 'd1', version: 1, issuedAt: new Date().toISOString(), items: [] as never[] };

describe('config document checks', () => {
  it('accepts a document from the service signer, addressed to this device', async () => {
    const signer = await ca.serviceIdentity('config-signer', { kind: 'signer', commonName: 'Test Config Signer' });
    const jws = await new ConfigSigner(signer.keyPem, [signer.certPem, ...signer.chainPems]).sign(doc);
    const root = new X509Certificate(ca.rootPem);
    await expect(openConfigDocument(jws, root, 'd1')).resolves.toMatchObject({ version: 1 });
    await expect(openConfigDocument(jws, root, 'd2')).rejects.toMatchObject({ code: 'CONFIG_WRONG_DEVICE' });
  });

  it("refuses a document signed with a device's own certificate (no config-signing EKU)", async () => {
    const keys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const cert = ca.issueDevice({ deviceId: 'evil', spkiDer: keys.publicKey.export({ type: 'spki', format: 'der' }) });
    const x5c = [cert.pem, ...ca.chainPems].map(pemToDerBase64);
    const jws = await new CompactSign(Buffer.from(JSON.stringify(doc))).setProtectedHeader({ alg: 'ES256', typ: CONFIG_JWS_TYPE, x5c }).sign(keys.privateKey);
    await expect(openConfigDocument(jws, new X509Certificate(ca.rootPem), 'd1')).rejects.toMatchObject({ code: 'CONFIG_SIGNATURE_INVALID' });
  });

  it('refuses a signer that does not chain to the trusted root', async () => {
    const signer = await ca.serviceIdentity('config-signer', { kind: 'signer', commonName: 'Test Config Signer' });
    const jws = await new ConfigSigner(signer.keyPem, [signer.certPem, ...signer.chainPems]).sign(doc);
    const otherDir = await mkdtemp(join(tmpdir(), 'sim-'));
    try {
      const other = new CertificateAuthority({ dir: otherDir, organization: 'Other', deviceValidityDays: 30, clock: systemClock });
      await other.start();
      await expect(openConfigDocument(jws, new X509Certificate(other.rootPem), 'd1')).rejects.toMatchObject({ code: 'CHAIN_INVALID' });
      // the same signer, once trusted under the right root, is still refused under the other one
      await expect(openConfigDocument(jws, new X509Certificate(ca.rootPem), 'd1')).resolves.toMatchObject({ version: 1 });
      await expect(openConfigDocument(jws, new X509Certificate(other.rootPem), 'd1')).rejects.toMatchObject({ code: 'CHAIN_INVALID' });
    } finally {
      await rm(otherDir, { recursive: true, force: true });
    }
  });
});

describe('config document checks after the signer chain was trusted once', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  const signed = async (body: object = doc) => {
    const signer = await ca.serviceIdentity('config-signer', { kind: 'signer', commonName: 'Test Config Signer' });
    return new ConfigSigner(signer.keyPem, [signer.certPem, ...signer.chainPems]).sign(body as typeof doc);
  };

  it('still checks every signature: another payload under the same header is refused', async () => {
    const root = new X509Certificate(ca.rootPem);
    const jws = await signed();
    await expect(openConfigDocument(jws, root, 'd1')).resolves.toMatchObject({ version: 1 });
    const [h, , s] = jws.split('.') as [string, string, string];
    const forged = `${h}.${Buffer.from(JSON.stringify({ ...doc, version: 2 })).toString('base64url')}.${s}`;
    await expect(openConfigDocument(forged, root, 'd1')).rejects.toMatchObject({ code: 'CONFIG_SIGNATURE_INVALID' });
    const flipped = Buffer.from(s, 'base64url');
    flipped[40] = flipped[40]! ^ 1;
    await expect(openConfigDocument(`${h}.${jws.split('.')[1]}.${flipped.toString('base64url')}`, root, 'd1')).rejects.toMatchObject({
      code: 'CONFIG_SIGNATURE_INVALID',
    });
    // a document signed for another device by the same signer: good signature, wrong device
    await expect(openConfigDocument(await signed({ ...doc, deviceId: 'd2' }), root, 'd1')).rejects.toMatchObject({ code: 'CONFIG_WRONG_DEVICE' });
  });

  it('still checks the validity dates against the current time', async () => {
    const root = new X509Certificate(ca.rootPem);
    const jws = await signed();
    await expect(openConfigDocument(jws, root, 'd1')).resolves.toMatchObject({ version: 1 });
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 40 * 365 * 86_400_000);
    await expect(openConfigDocument(jws, root, 'd1')).rejects.toMatchObject({ code: 'CHAIN_INVALID' });
    vi.setSystemTime(Date.now() - 80 * 365 * 86_400_000);
    await expect(openConfigDocument(jws, root, 'd1')).rejects.toMatchObject({ code: 'CHAIN_INVALID' });
    vi.useRealTimers();
    await expect(openConfigDocument(jws, root, 'd1')).resolves.toMatchObject({ version: 1 });
  });

  it('refuses a header without the documented typ, with another alg, or a JWS that is not one', async () => {
    const root = new X509Certificate(ca.rootPem);
    const jws = await signed();
    const [h, p, s] = jws.split('.') as [string, string, string];
    const header = JSON.parse(Buffer.from(h, 'base64url').toString()) as Record<string, unknown>;
    const withHeader = (changed: Record<string, unknown>) => `${Buffer.from(JSON.stringify(changed)).toString('base64url')}.${p}.${s}`;
    const { typ: _typ, ...noTyp } = header;
    await expect(openConfigDocument(withHeader(noTyp), root, 'd1')).rejects.toMatchObject({ code: 'CONFIG_SIGNATURE_INVALID' });
    await expect(openConfigDocument(withHeader({ ...header, alg: 'none' }), root, 'd1')).rejects.toMatchObject({ code: 'CONFIG_SIGNATURE_INVALID' });
    await expect(openConfigDocument(withHeader({ ...header, alg: 'HS256' }), root, 'd1')).rejects.toMatchObject({ code: 'CONFIG_SIGNATURE_INVALID' });
    await expect(openConfigDocument(withHeader({ ...header, x5c: [] }), root, 'd1')).rejects.toMatchObject({ code: 'CONFIG_SIGNATURE_INVALID' });
    await expect(openConfigDocument(withHeader({ ...header, crit: ['exp'], exp: 1 }), root, 'd1')).rejects.toMatchObject({ code: 'CONFIG_SIGNATURE_INVALID' });
    // a header with extra room is a different header: its signature does not verify
    await expect(openConfigDocument(withHeader({ ...header, kid: 'x' }), root, 'd1')).rejects.toMatchObject({ code: 'CONFIG_SIGNATURE_INVALID' });
    await expect(openConfigDocument(`${h}.${p}`, root, 'd1')).rejects.toMatchObject({ code: 'CONFIG_SIGNATURE_INVALID' });
    await expect(openConfigDocument(`${h}.${p}.${s}.x`, root, 'd1')).rejects.toMatchObject({ code: 'CONFIG_SIGNATURE_INVALID' });
    await expect(openConfigDocument(`${h}.${p}!.${s}`, root, 'd1')).rejects.toMatchObject({ code: 'CONFIG_SIGNATURE_INVALID' });
    await expect(openConfigDocument(`e30.${p}.${s}`, root, 'd1')).rejects.toMatchObject({ code: 'CONFIG_SIGNATURE_INVALID' });
  });
});

describe('certificate answer checks', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('accepts a device certificate with its chain, each time, and refuses one from another CA', async () => {
    const root = parseCertificate(ca.rootPem);
    expect(parseCertificate(ca.rootPem)).toBe(root);
    const keys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const spkiDer = keys.publicKey.export({ type: 'spki', format: 'der' });
    for (const id of ['a1', 'a2']) {
      const leaf = new X509Certificate(ca.issueDevice({ deviceId: id, spkiDer }).pem);
      expect(() => verifyIssuedChain(leaf, ca.chainPems, root)).not.toThrow();
      expect(() => verifyChain([leaf, ...ca.chainPems.map((p) => new X509Certificate(p))], root)).not.toThrow();
    }
    const otherDir = await mkdtemp(join(tmpdir(), 'sim-'));
    try {
      const other = new CertificateAuthority({ dir: otherDir, organization: 'Other', deviceValidityDays: 30, clock: systemClock });
      await other.start();
      const foreign = new X509Certificate(other.issueDevice({ deviceId: 'a3', spkiDer }).pem);
      // its own chain, or ours (a leaf not signed by the issuing CA given)
      expect(() => verifyIssuedChain(foreign, other.chainPems, root)).toThrow(expect.objectContaining({ code: 'CHAIN_INVALID' }));
      expect(() => verifyIssuedChain(foreign, ca.chainPems, root)).toThrow(expect.objectContaining({ code: 'CHAIN_INVALID' }));
      // ours under their root
      const leaf = new X509Certificate(ca.issueDevice({ deviceId: 'a4', spkiDer }).pem);
      expect(() => verifyIssuedChain(leaf, ca.chainPems, parseCertificate(other.rootPem))).toThrow(expect.objectContaining({ code: 'CHAIN_INVALID' }));
    } finally {
      await rm(otherDir, { recursive: true, force: true });
    }
  });

  it('checks validity dates every time, also for a chain verified before', () => {
    const root = parseCertificate(ca.rootPem);
    const keys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const leaf = new X509Certificate(ca.issueDevice({ deviceId: 'b1', spkiDer: keys.publicKey.export({ type: 'spki', format: 'der' }) }).pem);
    verifyIssuedChain(leaf, ca.chainPems, root);
    vi.useFakeTimers({ toFake: ['Date'] });
    // past the leaf (30 days) but within the CAs
    vi.setSystemTime(Date.now() + 60 * 86_400_000);
    expect(() => verifyIssuedChain(leaf, ca.chainPems, root)).toThrow(expect.objectContaining({ code: 'CHAIN_INVALID' }));
    // past the issuing CA
    vi.setSystemTime(Date.now() + 40 * 365 * 86_400_000);
    expect(() => verifyIssuedChain(leaf, ca.chainPems, root)).toThrow(expect.objectContaining({ code: 'CHAIN_INVALID' }));
  });
});

describe('the device still verifies the broker (shared bootstrap context, per-device operational context)', () => {
  it('refuses a broker certificate that does not name the host, or that does not chain to its root', async () => {
    const ts = await startTestService();
    const devices: SimDevice[] = [];
    try {
      const { id, bootstrap } = await registerAndClaim(ts);
      // "127.1" resolves to 127.0.0.1 but is a host name the broker certificate does not carry
      const otherHost = bootstrap.mqttUrl.replace('localhost', '127.1');
      const wrongHost = new SimDevice({ deviceId: id, model: 'thermostat', bootstrap: { ...bootstrap, mqttUrl: otherHost }, timeoutMs: 5000 });
      devices.push(wrongHost);
      await expect(wrongHost.run()).rejects.toMatchObject({ code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
      const wrongRoot = new SimDevice({ deviceId: id, model: 'thermostat', bootstrap: { ...bootstrap, caCertificate: ca.rootPem }, timeoutMs: 5000 });
      devices.push(wrongRoot);
      await expect(wrongRoot.run()).rejects.toThrow(/certificate|signature/i);

      const device = new SimDevice({ deviceId: id, model: 'thermostat', bootstrap, timeoutMs: 5000 });
      devices.push(device);
      await device.run();
      expect(device.client?.connected).toBe(true);
      // the operational context is kept for a reconnect
      await device.reconnect();
      expect(device.client?.connected).toBe(true);
      await device.stop();

      // the same identity, mutual TLS, to a host name the broker certificate does not carry
      const identity = { keyPem: device.keyPem, certPem: device.certificatePem, chainPems: ts.running.ca.chainPems };
      const elsewhere = new SimDevice({ deviceId: id, model: 'thermostat', identity, broker: { mqttUrl: otherHost, caCertificate: bootstrap.caCertificate }, timeoutMs: 5000 });
      devices.push(elsewhere);
      await expect(elsewhere.configure(false)).rejects.toMatchObject({ code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
      const same = new SimDevice({ deviceId: id, model: 'thermostat', identity, broker: { mqttUrl: bootstrap.mqttUrl, caCertificate: bootstrap.caCertificate }, timeoutMs: 5000 });
      devices.push(same);
      await same.configure(false);
      expect(same.client?.connected).toBe(true);
    } finally {
      await Promise.all(devices.map((d) => d.stop()));
      await ts.stop();
    }
  });
});

describe('a service that dies between the TLS handshake and the CONNACK', () => {
  it('fails the connection attempt instead of waiting forever (no automatic reconnection to wait for)', async () => {
    const server = await ca.serviceIdentity('mqtt-server', { kind: 'server', hostnames: ['localhost'], ipAddresses: ['127.0.0.1'] });
    // accepts TLS, then closes on the CONNECT as a killed or stopping service would
    const tls = createTlsServer({ key: server.keyPem, cert: [server.certPem, ...server.chainPems.slice(0, -1)].join('') }, (socket) => {
      socket.once('data', () => socket.destroy());
    });
    await new Promise<void>((resolve) => tls.listen(0, '127.0.0.1', resolve));
    const mqttUrl = `mqtts://localhost:${(tls.address() as { port: number }).port}`;
    try {
      const keys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const cert = ca.issueDevice({ deviceId: 'd1', spkiDer: keys.publicKey.export({ type: 'spki', format: 'der' }) });
      const identity = { keyPem: keys.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, certPem: cert.pem, chainPems: ca.chainPems };
      const operational = new SimDevice({ deviceId: 'd1', model: 'thermostat', identity, broker: { mqttUrl, caCertificate: ca.rootPem }, timeoutMs: 5000 });
      await expect(operational.configure()).rejects.toThrow(/connect/i);
      const bootstrap = { token: 'x', expiresAt: new Date().toISOString(), mqttUrl, clientId: 'd2', username: 'd2', caCertificate: ca.rootPem };
      const enrolling = new SimDevice({ deviceId: 'd2', model: 'thermostat', bootstrap, timeoutMs: 5000 });
      await expect(enrolling.enroll()).rejects.toThrow(/connect/i);
    } finally {
      await new Promise((resolve) => tls.close(resolve));
    }
  }, 15_000);
});

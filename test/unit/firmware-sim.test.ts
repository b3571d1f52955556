/** The simulated device's checks on what it receives (firmware-sim/protocol.ts). */
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CompactSign } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openConfigDocument } from '../../firmware-sim/protocol.js';
import { CertificateAuthority } from '../../src/ca/index.js';
import { systemClock } from '../../src/clock.js';
import { ConfigSigner, pemToDerBase64 } from '../../src/provisioning/config-document.js';

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
    const jws = await new CompactSign(Buffer.from(JSON.stringify(doc))).setProtectedHeader({ alg: 'ES256', x5c }).sign(keys.privateKey);
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
    } finally {
      await rm(otherDir, { recursive: true, force: true });
    }
  });
});

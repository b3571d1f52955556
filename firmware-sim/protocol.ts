/**
 * The device side of docs/protocol.md, written from the document (not from src/): topic names,
 * the checks a device makes on what it receives. Payload types come from schemas/.
 */
import { X509Certificate } from 'node:crypto';
import { compactDecrypt, compactVerify, decodeProtectedHeader, type KeyObject } from 'jose';
import type { ConfigDocument } from '../schemas/types.js';

export const topics = (id: string) => ({
  csr: `devices/${id}/csr`,
  csrAccepted: `devices/${id}/csr/accepted`,
  csrRejected: `devices/${id}/csr/rejected`,
  config: `devices/${id}/config`,
  configAck: `devices/${id}/config/ack`,
  state: `devices/${id}/state`,
  errors: `devices/${id}/errors`,
  telemetry: `devices/${id}/telemetry`,
  commands: `devices/${id}/commands`,
});

/** Extended key usage a config signer's certificate must carry (docs/protocol.md). */
export const CONFIG_SIGNING_EKU = '2.25.255650878675251502668112521049223055722';

export class DeviceProtocolError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}

/** Verifies a chain [leaf, ...intermediates] up to the trusted root, at time `now`. */
export function verifyChain(chain: readonly X509Certificate[], root: X509Certificate, now = new Date()): void {
  const all = [...chain];
  if (all.length === 0) throw new DeviceProtocolError('CHAIN_EMPTY', 'no certificate');
  for (let i = 0; i < all.length; i++) {
    const cert = all[i]!;
    if (Date.parse(cert.validFrom) > now.getTime() || Date.parse(cert.validTo) < now.getTime()) {
      throw new DeviceProtocolError('CHAIN_INVALID', `${cert.subject} is outside its validity`);
    }
    const issuer = all[i + 1] ?? root;
    if (cert.fingerprint256 === root.fingerprint256) return;
    if (!cert.checkIssued(issuer) || !cert.verify(issuer.publicKey)) {
      throw new DeviceProtocolError('CHAIN_INVALID', `${cert.subject} is not signed by ${issuer.subject}`);
    }
    if (issuer.fingerprint256 === root.fingerprint256) return;
  }
  throw new DeviceProtocolError('CHAIN_INVALID', 'chain does not reach the trusted root');
}

/** Checks the config JWS (signature, x5c chain to the root, addressed to this device) and returns its payload. */
export async function openConfigDocument(jws: string, root: X509Certificate, deviceId: string): Promise<ConfigDocument> {
  const header = decodeProtectedHeader(jws);
  if (header.alg !== 'ES256' || !Array.isArray(header.x5c) || header.x5c.length === 0) {
    throw new DeviceProtocolError('CONFIG_SIGNATURE_INVALID', 'expected ES256 with an x5c chain');
  }
  const chain = header.x5c.map((b64) => new X509Certificate(Buffer.from(b64, 'base64')));
  verifyChain(chain, root);
  const signer = chain[0]!;
  if (signer.ca) throw new DeviceProtocolError('CONFIG_SIGNATURE_INVALID', 'signer certificate is a CA');
  if (!(signer.keyUsage ?? []).includes(CONFIG_SIGNING_EKU)) {
    throw new DeviceProtocolError('CONFIG_SIGNATURE_INVALID', 'signer certificate lacks the config-signing extended key usage');
  }
  let payload: Uint8Array;
  try {
    ({ payload } = await compactVerify(jws, signer.publicKey, { algorithms: ['ES256'] }));
  } catch {
    throw new DeviceProtocolError('CONFIG_SIGNATURE_INVALID', 'signature does not verify');
  }
  const doc = JSON.parse(Buffer.from(payload).toString('utf8')) as ConfigDocument;
  if (doc.deviceId !== deviceId) throw new DeviceProtocolError('CONFIG_WRONG_DEVICE', `document is for ${doc.deviceId}`);
  return doc;
}

export async function decryptSecret(jwe: string, privateKey: KeyObject): Promise<string> {
  const { plaintext } = await compactDecrypt(jwe, privateKey, {
    keyManagementAlgorithms: ['ECDH-ES', 'RSA-OAEP-256'],
    contentEncryptionAlgorithms: ['A128CBC-HS256'],
  });
  return Buffer.from(plaintext).toString('utf8');
}

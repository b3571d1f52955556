/**
 * The device side of docs/protocol.md, written from the document (not from src/): topic names,
 * the checks a device makes on what it receives. Payload types come from schemas/.
 *
 * A fleet of simulated devices shares one process, so what is the same for every device is
 * worked out once: parsed certificates per PEM, and the verdict on a certificate chain (the
 * config signer's x5c, the issuing CAs of an enrollment answer) per trusted root. What differs
 * per device, or per moment, is still checked every time: the leaf certificate, the signature of
 * each document, and the validity dates of every certificate against the current time.
 */
import { X509Certificate, type KeyObject } from 'node:crypto';
import type { ConfigDocument } from '../schemas/types.js';
import { JoseError, decodeHeader, decryptCompactJwe, splitJws, verifyEs256 } from './jose.js';

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
/** The `typ` of the configuration JWS header (docs/protocol.md §11). */
export const CONFIG_JWS_TYPE = 'provisiond-config+jws';

export class DeviceProtocolError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}

/** A Map that forgets its oldest entries beyond `max` (the caches below stay small anyway). */
class BoundedMap<K, V> extends Map<K, V> {
  constructor(readonly max: number) {
    super();
  }
  override set(key: K, value: V): this {
    if (!this.has(key) && this.size >= this.max) this.delete(this.keys().next().value as K);
    return super.set(key, value);
  }
}

const certificates = new BoundedMap<string, X509Certificate>(1024);

/** The parsed certificate for a PEM, shared (an X509Certificate is immutable). */
export function parseCertificate(pem: string): X509Certificate {
  let cert = certificates.get(pem);
  if (!cert) {
    cert = new X509Certificate(pem);
    certificates.set(pem, cert);
  }
  return cert;
}

/** Verifies a chain [leaf, ...intermediates] up to the trusted root, at time `now`. */
export function verifyChain(chain: readonly X509Certificate[], root: X509Certificate, now = new Date()): void {
  verifyChainAt(chain, root, now.getTime());
}

/** verifyChain; returns how many certificates of `chain` it checked (the validity of each counts). */
function verifyChainAt(chain: readonly X509Certificate[], root: X509Certificate, now: number): number {
  const all = [...chain];
  if (all.length === 0) throw new DeviceProtocolError('CHAIN_EMPTY', 'no certificate');
  for (let i = 0; i < all.length; i++) {
    const cert = all[i]!;
    if (Date.parse(cert.validFrom) > now || Date.parse(cert.validTo) < now) {
      throw new DeviceProtocolError('CHAIN_INVALID', `${cert.subject} is outside its validity`);
    }
    const issuer = all[i + 1] ?? root;
    if (cert.fingerprint256 === root.fingerprint256) return i + 1;
    if (!cert.checkIssued(issuer) || !cert.verify(issuer.publicKey)) {
      throw new DeviceProtocolError('CHAIN_INVALID', `${cert.subject} is not signed by ${issuer.subject}`);
    }
    if (issuer.fingerprint256 === root.fingerprint256) return i + 1;
  }
  throw new DeviceProtocolError('CHAIN_INVALID', 'chain does not reach the trusted root');
}

/** Validity of the certificates a verified chain depends on, in chain order. */
type Validity = ReadonlyArray<{ from: number; to: number; subject: string }>;

function validityOf(certs: readonly X509Certificate[]): Validity {
  return certs.map((c) => ({ from: Date.parse(c.validFrom), to: Date.parse(c.validTo), subject: c.subject }));
}

function checkValidity(validity: Validity, now: number): void {
  for (const v of validity) {
    if (v.from > now || v.to < now) throw new DeviceProtocolError('CHAIN_INVALID', `${v.subject} is outside its validity`);
  }
}

/** Chains of issuing CAs already verified up to a root: root fingerprint + PEMs -> validity. */
const issuingChains = new BoundedMap<string, Validity>(256);

/**
 * verifyChain([leaf, ...chain], root) for a certificate answer (docs/protocol.md §7): the leaf is
 * checked in full each time; the issuing CAs' signatures once per root and chain (their validity
 * dates each time).
 */
export function verifyIssuedChain(leaf: X509Certificate, chainPems: readonly string[], root: X509Certificate): void {
  const now = Date.now();
  checkValidity(validityOf([leaf]), now);
  if (leaf.fingerprint256 === root.fingerprint256) return;
  const chain = chainPems.map(parseCertificate);
  const issuer = chain[0] ?? root;
  if (!leaf.checkIssued(issuer) || !leaf.verify(issuer.publicKey)) {
    throw new DeviceProtocolError('CHAIN_INVALID', `${leaf.subject} is not signed by ${issuer.subject}`);
  }
  if (issuer.fingerprint256 === root.fingerprint256) return;
  const key = `${root.fingerprint256}\n${chainPems.join('\n')}`;
  let validity = issuingChains.get(key);
  if (!validity) {
    validity = validityOf(chain.slice(0, verifyChainAt(chain, root, now)));
    issuingChains.set(key, validity);
  } else {
    checkValidity(validity, now);
  }
}

/** A config signer that passed every check of its x5c chain, per root and header segment. */
interface TrustedSigner {
  key: KeyObject;
  validity: Validity;
}
const signers = new BoundedMap<string, TrustedSigner>(64);

/** docs/protocol.md §11 steps 1-3: header, x5c chain to MY root, end-entity with the config-signing EKU. */
function trustSigner(headerSegment: string, root: X509Certificate, now: number): TrustedSigner {
  let header: Record<string, unknown>;
  try {
    header = decodeHeader(headerSegment);
  } catch {
    throw new DeviceProtocolError('CONFIG_SIGNATURE_INVALID', 'the protected header is not a JSON object');
  }
  const x5c = header.x5c;
  if (header.alg !== 'ES256' || !Array.isArray(x5c) || x5c.length === 0 || !x5c.every((c) => typeof c === 'string')) {
    throw new DeviceProtocolError('CONFIG_SIGNATURE_INVALID', 'expected ES256 with an x5c chain');
  }
  if (header.typ !== CONFIG_JWS_TYPE) throw new DeviceProtocolError('CONFIG_SIGNATURE_INVALID', `expected typ ${CONFIG_JWS_TYPE}`);
  if (header.crit !== undefined) throw new DeviceProtocolError('CONFIG_SIGNATURE_INVALID', 'no critical header parameter is understood');
  let chain: X509Certificate[];
  try {
    chain = (x5c as string[]).map((b64) => new X509Certificate(Buffer.from(b64, 'base64')));
  } catch {
    throw new DeviceProtocolError('CHAIN_INVALID', 'x5c holds something that is not a certificate');
  }
  const checked = verifyChainAt(chain, root, now);
  const signer = chain[0]!;
  if (signer.ca) throw new DeviceProtocolError('CONFIG_SIGNATURE_INVALID', 'signer certificate is a CA');
  if (!(signer.keyUsage ?? []).includes(CONFIG_SIGNING_EKU)) {
    throw new DeviceProtocolError('CONFIG_SIGNATURE_INVALID', 'signer certificate lacks the config-signing extended key usage');
  }
  return { key: signer.publicKey, validity: validityOf(chain.slice(0, checked)) };
}

/** Checks the config JWS (signature, x5c chain to the root, addressed to this device) and returns its payload. */
export async function openConfigDocument(jws: string, root: X509Certificate, deviceId: string): Promise<ConfigDocument> {
  let parts: ReturnType<typeof splitJws>;
  try {
    parts = splitJws(jws);
  } catch {
    throw new DeviceProtocolError('CONFIG_SIGNATURE_INVALID', 'not a compact JWS');
  }
  const now = Date.now();
  const cacheKey = `${root.fingerprint256}\n${parts.header}`;
  let signer = signers.get(cacheKey);
  if (!signer) {
    signer = trustSigner(parts.header, root, now);
    signers.set(cacheKey, signer);
  } else {
    checkValidity(signer.validity, now);
  }
  if (!verifyEs256(parts, signer.key)) throw new DeviceProtocolError('CONFIG_SIGNATURE_INVALID', 'signature does not verify');
  const doc = JSON.parse(Buffer.from(parts.payload, 'base64url').toString('utf8')) as ConfigDocument;
  if (doc.deviceId !== deviceId) throw new DeviceProtocolError('CONFIG_WRONG_DEVICE', `document is for ${doc.deviceId}`);
  return doc;
}

/**
 * The Wi-Fi secret (docs/protocol.md §12): ECDH-ES for an EC key, RSA-OAEP-256 for an RSA key,
 * A128CBC-HS256 content encryption; anything else is refused.
 */
export async function decryptSecret(jwe: string, privateKey: KeyObject): Promise<string> {
  try {
    return decryptCompactJwe(jwe, privateKey).toString('utf8');
  } catch (err) {
    if (err instanceof JoseError) throw new DeviceProtocolError(err.code, err.detail);
    throw err;
  }
}

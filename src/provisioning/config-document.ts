/**
 * The configuration document a device receives: built from the network settings and security
 * policy, the Wi-Fi secret encrypted to the device's own certified key (JWE), the whole signed by
 * the service's config signer (JWS, ES256, certificate chain in "x5c" so the device checks it
 * against the root CA it already trusts).
 */
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { CompactEncrypt } from 'jose';
import type { ConfigDocument, NetworkSettings, Profile, SecurityPolicy } from '../../schemas/types.js';
import { ecdhRecipient, encryptEcdhEsA128CbcHs256, signCompactEs256, type EcdhRecipient } from './compact-jose.js';

export const CONFIG_JWS_TYPE = 'provisiond-config+jws';
/** JWE content encryption chosen so that `openssl enc` (no AEAD) can decrypt it too. */
export const SECRET_JWE_ENC = 'A128CBC-HS256';

export function pemToDerBase64(pem: string): string {
  return pem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, '').replace(/\s+/g, '');
}

export class ConfigSigner {
  readonly #key: KeyObject;
  readonly #x5c: string[];

  /** `chainPems`: the signer certificate first, then its issuers up to the root. */
  constructor(keyPem: string, chainPems: readonly string[]) {
    this.#key = createPrivateKey(keyPem);
    this.#x5c = chainPems.map(pemToDerBase64);
  }

  sign(doc: ConfigDocument): Promise<string> {
    return Promise.resolve(signCompactEs256(JSON.stringify(doc), { alg: 'ES256', typ: CONFIG_JWS_TYPE, x5c: this.#x5c }, this.#key));
  }
}

export interface DocumentInput {
  deviceId: string;
  version: number;
  issuedAt: Date;
  /** The profile version the device follows: its items, in priority order, make the document. */
  profile: Pick<Profile, 'id' | 'version' | 'items'>;
  /** The site's network (secret in clear, from the claim or the service default). */
  network: NetworkSettings | undefined;
  /** The public key certified for the device: the Wi-Fi secret is encrypted to it. */
  devicePublicKey: DevicePublicKey;
}

/**
 * A device's public key as the Wi-Fi secret is encrypted to it: the key object (a parsed CSR
 * makes it only when asked) and, for an EC key, its curve and uncompressed point, with which
 * ECDH-ES needs no key object at all. A parsed CSR (src/ca/csr.ts) is one.
 */
export interface DevicePublicKey {
  readonly publicKey: KeyObject;
  readonly curve?: string;
  readonly point?: Buffer;
}

type Item = ConfigDocument['items'][number];

/** Items in the order a device should apply them: priority, then id. */
export function orderedItems<T extends { id: string; priority: number }>(items: readonly T[]): T[] {
  return [...items].sort((a, b) => a.priority - b.priority || a.id.localeCompare(b.id));
}

/**
 * The document for one device. A network item takes the site's network when there is one, else
 * the profile's template (which has no secret); without either it is left out (the device keeps
 * the network it has). Security policies get {deviceId} substituted in allowedTopics.
 */
export async function buildConfigDocument(input: DocumentInput): Promise<ConfigDocument> {
  const items: Item[] = [];
  for (const item of orderedItems(input.profile.items)) {
    const base = { id: item.id, required: item.required, priority: item.priority, await: item.await };
    if (item.type === 'network') {
      const template = item.data as Partial<NetworkSettings>;
      const net = input.network ?? (template.wifi ? (template as NetworkSettings) : undefined);
      if (!net) continue;
      const { wifi } = net;
      items.push({
        ...base,
        type: 'network',
        data: {
          wifi: {
            ssid: wifi.ssid,
            security: wifi.security,
            hidden: wifi.hidden ?? false,
            ...(wifi.security !== 'open' && wifi.secret ? { secretJwe: await encryptToDevice(wifi.secret, input.devicePublicKey) } : {}),
          },
          ipv4: net.ipv4 ?? { mode: 'dhcp' },
          dns: net.dns ?? [],
          ntp: net.ntp ?? ['pool.ntp.org'],
        },
      });
    } else if (item.type === 'security-policy') {
      const policy = item.data as unknown as SecurityPolicy;
      items.push({
        ...base,
        type: 'security-policy',
        data: { ...policy, allowedTopics: policy.allowedTopics.map((t) => t.replaceAll('{deviceId}', input.deviceId)) },
      });
    } else {
      items.push({ ...base, type: item.type, data: item.data });
    }
  }
  return {
    deviceId: input.deviceId,
    version: input.version,
    issuedAt: input.issuedAt.toISOString(),
    profileId: input.profile.id,
    profileVersion: input.profile.version,
    items,
  };
}

export function encryptToDevice(secret: string, key: DevicePublicKey): Promise<string> {
  // EC keys (every key the service issues for by default): node:crypto directly; RSA keys: jose
  const recipient = key.point && isJwaCurve(key.curve) ? { crv: key.curve, point: key.point } : ecdhRecipient(key.publicKey);
  if (recipient) return Promise.resolve(encryptEcdhEsA128CbcHs256(secret, recipient));
  const { publicKey } = key;
  const alg = publicKey.asymmetricKeyType === 'rsa' ? 'RSA-OAEP-256' : 'ECDH-ES';
  return new CompactEncrypt(Buffer.from(secret, 'utf8')).setProtectedHeader({ alg, enc: SECRET_JWE_ENC }).encrypt(publicKey);
}

const isJwaCurve = (curve: string | undefined): curve is EcdhRecipient['crv'] => curve === 'P-256' || curve === 'P-384' || curve === 'P-521';

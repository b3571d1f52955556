/**
 * The configuration document a device receives: built from the network settings and security
 * policy, the Wi-Fi secret encrypted to the device's own certified key (JWE), the whole signed by
 * the service's config signer (JWS, ES256, certificate chain in "x5c" so the device checks it
 * against the root CA it already trusts).
 */
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { CompactEncrypt, CompactSign } from 'jose';
import type { ConfigDocument, NetworkSettings, SecurityPolicy } from '../../schemas/types.js';

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
    return new CompactSign(Buffer.from(JSON.stringify(doc)))
      .setProtectedHeader({ alg: 'ES256', typ: CONFIG_JWS_TYPE, x5c: this.#x5c })
      .sign(this.#key);
  }
}

export interface DocumentInput {
  deviceId: string;
  version: number;
  issuedAt: Date;
  network: NetworkSettings | undefined;
  policy: SecurityPolicy;
  /** The public key certified for the device. */
  devicePublicKey: KeyObject;
}

export async function buildConfigDocument(input: DocumentInput): Promise<ConfigDocument> {
  const items: ConfigDocument['items'] = [];
  if (input.network) {
    const { wifi } = input.network;
    items.push({
      id: 'network',
      type: 'network',
      required: true,
      data: {
        wifi: {
          ssid: wifi.ssid,
          security: wifi.security,
          hidden: wifi.hidden ?? false,
          ...(wifi.security !== 'open' && wifi.secret
            ? { secretJwe: await encryptToDevice(wifi.secret, input.devicePublicKey) }
            : {}),
        },
        ipv4: input.network.ipv4 ?? { mode: 'dhcp' },
        dns: input.network.dns ?? [],
        ntp: input.network.ntp ?? ['pool.ntp.org'],
      },
    });
  }
  items.push({
    id: 'security',
    type: 'security-policy',
    required: true,
    data: {
      ...input.policy,
      allowedTopics: input.policy.allowedTopics.map((t) => t.replaceAll('{deviceId}', input.deviceId)),
    },
  });
  return { deviceId: input.deviceId, version: input.version, issuedAt: input.issuedAt.toISOString(), items };
}

export function encryptToDevice(secret: string, publicKey: KeyObject): Promise<string> {
  const alg = publicKey.asymmetricKeyType === 'rsa' ? 'RSA-OAEP-256' : 'ECDH-ES';
  return new CompactEncrypt(Buffer.from(secret, 'utf8')).setProtectedHeader({ alg, enc: SECRET_JWE_ENC }).encrypt(publicKey);
}

/**
 * Seals secrets the service must keep to re-send later (the site's Wi-Fi passphrase): AES-256-GCM
 * under a key from the data directory, so the database alone does not reveal them.
 * Format: "v1.<iv b64url>.<ciphertext b64url>.<tag b64url>".
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { ProvisioningError } from './errors.js';

export class SecretBox {
  constructor(private readonly key: Buffer) {
    if (key.length < 32) throw new Error('SecretBox needs a 32-byte key');
  }

  seal(plaintext: string, context: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.key.subarray(0, 32), iv);
    cipher.setAAD(Buffer.from(context, 'utf8'));
    const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return ['v1', iv.toString('base64url'), ct.toString('base64url'), cipher.getAuthTag().toString('base64url')].join('.');
  }

  /** `context` must be the one given to seal (binds the secret to its device). */
  open(sealed: string, context: string): string {
    const [v, iv, ct, tag] = sealed.split('.');
    try {
      if (v !== 'v1' || !iv || ct === undefined || !tag) throw new Error('format');
      const decipher = createDecipheriv('aes-256-gcm', this.key.subarray(0, 32), Buffer.from(iv, 'base64url'));
      decipher.setAAD(Buffer.from(context, 'utf8'));
      decipher.setAuthTag(Buffer.from(tag, 'base64url'));
      return Buffer.concat([decipher.update(Buffer.from(ct, 'base64url')), decipher.final()]).toString('utf8');
    } catch (cause) {
      throw new ProvisioningError('SECRET_UNREADABLE', 'a sealed secret cannot be opened (was the data directory key replaced?)', { cause });
    }
  }
}

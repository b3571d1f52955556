/**
 * Claim codes are stored only as HMAC-SHA256 under a service pepper (a stolen database alone does
 * not let anyone test codes offline). Deterministic, so a code can be looked up by its hash.
 */
import { createHmac } from 'node:crypto';
import { ProvisioningError } from './errors.js';

/** Case-insensitive; spaces and dashes (label grouping) are ignored. */
export function normalizeClaimCode(code: string): string {
  return code.replace(/[\s-]+/g, '').toUpperCase();
}

export class ClaimCodeHasher {
  constructor(private readonly pepper: Buffer) {}

  /** Hash for registration: refuses codes too short to be a secret. */
  hashForRegistration(code: string): string {
    const normalized = normalizeClaimCode(code);
    if (normalized.length < 8) throw new ProvisioningError('CLAIM_CODE_TOO_SHORT');
    return this.hash(normalized);
  }

  /** Hash for lookup: any input hashes (the same work for every guess). */
  hash(code: string): string {
    return createHmac('sha256', this.pepper).update(normalizeClaimCode(code)).digest('hex');
  }
}

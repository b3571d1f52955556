/**
 * Claim codes are stored only as HMAC-SHA256 under a service pepper (a stolen database alone does
 * not let anyone test codes offline). Deterministic, so a code can be looked up by its hash.
 */
import { createHmac } from 'node:crypto';
import { canonicalClaimCode } from '../factory/claim-codes.js';
import { ProvisioningError } from './errors.js';

/** Case-insensitive; spaces and dashes (label grouping) are ignored. */
export function normalizeClaimCode(code: string): string {
  return code.replace(/[\s-]+/g, '').toUpperCase();
}

export class ClaimCodeHasher {
  constructor(private readonly pepper: Buffer) {}

  /**
   * Hash for registration: refuses codes too short to be a secret. A code in the service's own
   * format (Crockford base32 with a check character) is hashed in its canonical form, so the
   * O/0 and I/L/1 confusions of a typed code do not matter.
   */
  hashForRegistration(code: string): string {
    const normalized = normalizeClaimCode(canonicalClaimCode(code) ?? code);
    if (normalized.length < 8) throw new ProvisioningError('CLAIM_CODE_TOO_SHORT');
    return this.hash(normalized);
  }

  /** Hashes to look a typed code up by: the canonical form first (when it is one of ours), then as typed. */
  lookupHashes(code: string): string[] {
    const canonical = canonicalClaimCode(code);
    const plain = this.hash(code);
    if (canonical === undefined) return [plain];
    const h = this.hash(canonical);
    return h === plain ? [h] : [h, plain];
  }

  /** Hash of the normalised code (the same work for every guess). */
  hash(code: string): string {
    return createHmac('sha256', this.pepper).update(normalizeClaimCode(code)).digest('hex');
  }
}

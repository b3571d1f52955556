/**
 * Bootstrap credentials: short-lived JWTs (HS256, service key) naming one device. The signature
 * and expiry are checked here; single use is enforced by the store (the token record is consumed
 * in the same transaction that stores the certificate).
 */
import { randomBytes } from 'node:crypto';
import type { Clock } from '../clock.js';
import type { BootstrapTokenRecord, Store } from '../store/index.js';
import { JwtError, signHs256Jwt, verifyHs256Jwt } from './compact-jose.js';
import { ProvisioningError } from './errors.js';

const nonEmpty = (v: unknown): v is string => typeof v === 'string' && v !== '';

export const BOOTSTRAP_AUDIENCE = 'provisiond:bootstrap';

export interface IssuedToken {
  token: string;
  jti: string;
  issuedAt: Date;
  expiresAt: Date;
}

export class BootstrapTokens {
  constructor(
    private readonly key: Uint8Array,
    private readonly issuer: string,
    private readonly clock: Clock,
  ) {}

  async issue(deviceId: string, ttlSeconds: number): Promise<IssuedToken> {
    const now = this.clock.now();
    const iat = Math.floor(now.getTime() / 1000);
    const jti = randomBytes(16).toString('base64url');
    const token = signHs256Jwt({ sub: deviceId, iss: this.issuer, aud: BOOTSTRAP_AUDIENCE, jti, iat, exp: iat + ttlSeconds }, this.key);
    return { token, jti, issuedAt: new Date(iat * 1000), expiresAt: new Date((iat + ttlSeconds) * 1000) };
  }

  /** Returns the token's device id and jti; throws TOKEN_EXPIRED or TOKEN_INVALID. */
  async verify(token: string): Promise<{ deviceId: string; jti: string }> {
    let claims: Record<string, unknown>;
    try {
      claims = verifyHs256Jwt(token, this.key, Math.floor(this.clock.now().getTime() / 1000));
    } catch (cause) {
      if (cause instanceof JwtError && cause.reason === 'expired') throw new ProvisioningError('TOKEN_EXPIRED', undefined, { cause });
      throw new ProvisioningError('TOKEN_INVALID', undefined, { cause });
    }
    const aud = claims.aud;
    const audOk = aud === BOOTSTRAP_AUDIENCE || (Array.isArray(aud) && aud.includes(BOOTSTRAP_AUDIENCE));
    if (claims.iss !== this.issuer || !audOk || typeof claims.iat !== 'number' || !nonEmpty(claims.sub) || !nonEmpty(claims.jti)) {
      throw new ProvisioningError('TOKEN_INVALID', 'the token is not a bootstrap credential of this service');
    }
    return { deviceId: claims.sub, jti: claims.jti };
  }
}

/**
 * Deleted only this long after their expiry: the JWT check answers TOKEN_EXPIRED by itself from
 * `exp`, and instances whose clocks differ a little must not lose a record another still accepts.
 */
export const EXPIRED_TOKEN_GRACE_SECONDS = 300;

/**
 * The periodic sweep of pending bootstrap credentials: deletes the records of tokens that expired
 * unused (EXPIRED_TOKEN_GRACE_SECONDS ago or more), a batch at a time, so claims that were never
 * enrolled leave nothing behind. Used tokens stay (the re-send window and TOKEN_USED need them).
 * The device is not touched: it stays claimed, the stall scan marks it stalled at its deadline,
 * and POST /v1/devices/<id>/bootstrap gives it a new credential; a connection with the old one
 * keeps getting TOKEN_EXPIRED (CONNACK 4). Several instances may sweep at once: each record is
 * deleted (and returned) by one of them only.
 */
export async function sweepExpiredTokens(
  store: Pick<Store, 'deleteExpiredBootstrapTokens'>,
  clock: Clock,
  opts: { batch?: number; maxBatches?: number } = {},
): Promise<BootstrapTokenRecord[]> {
  const batch = opts.batch ?? 500;
  const maxBatches = opts.maxBatches ?? 100;
  const before = new Date(clock.now().getTime() - EXPIRED_TOKEN_GRACE_SECONDS * 1000).toISOString();
  const removed: BootstrapTokenRecord[] = [];
  for (let i = 0; i < maxBatches; i++) {
    const page = await store.deleteExpiredBootstrapTokens(before, batch);
    removed.push(...page);
    if (page.length < batch) break;
  }
  return removed;
}

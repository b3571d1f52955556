/**
 * Bootstrap credentials: short-lived JWTs (HS256, service key) naming one device. The signature
 * and expiry are checked here; single use is enforced by the store (the token record is consumed
 * in the same transaction that stores the certificate).
 */
import { randomBytes } from 'node:crypto';
import type { Clock } from '../clock.js';
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

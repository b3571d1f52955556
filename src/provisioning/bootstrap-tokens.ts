/**
 * Bootstrap credentials: short-lived JWTs (HS256, service key) naming one device. The signature
 * and expiry are checked here; single use is enforced by the store (the token record is consumed
 * in the same transaction that stores the certificate).
 */
import { randomBytes } from 'node:crypto';
import { SignJWT, jwtVerify, errors as joseErrors } from 'jose';
import type { Clock } from '../clock.js';
import { ProvisioningError } from './errors.js';

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
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setSubject(deviceId)
      .setIssuer(this.issuer)
      .setAudience(BOOTSTRAP_AUDIENCE)
      .setJti(jti)
      .setIssuedAt(iat)
      .setExpirationTime(iat + ttlSeconds)
      .sign(this.key);
    return { token, jti, issuedAt: new Date(iat * 1000), expiresAt: new Date((iat + ttlSeconds) * 1000) };
  }

  /** Returns the token's device id and jti; throws TOKEN_EXPIRED or TOKEN_INVALID. */
  async verify(token: string): Promise<{ deviceId: string; jti: string }> {
    try {
      const { payload } = await jwtVerify(token, this.key, {
        algorithms: ['HS256'],
        issuer: this.issuer,
        audience: BOOTSTRAP_AUDIENCE,
        currentDate: this.clock.now(),
        requiredClaims: ['sub', 'jti', 'exp', 'iat'],
      });
      return { deviceId: payload.sub!, jti: payload.jti! };
    } catch (cause) {
      if (cause instanceof joseErrors.JWTExpired) throw new ProvisioningError('TOKEN_EXPIRED', undefined, { cause });
      throw new ProvisioningError('TOKEN_INVALID', undefined, { cause });
    }
  }
}

import { generateKeyPairSync } from 'node:crypto';
import { compactDecrypt, decodeProtectedHeader } from 'jose';
import { describe, expect, it } from 'vitest';
import { BootstrapTokens, ClaimCodeHasher, ProvisioningError, buildConfigDocument, normalizeClaimCode } from '../../src/provisioning/index.js';
import { ManualClock } from '../helpers/clock.js';

describe('claim codes', () => {
  it('normalise case, spaces and dashes, and hash under the pepper', () => {
    expect(normalizeClaimCode(' ab12-cd34 ef56 ')).toBe('AB12CD34EF56');
    const a = new ClaimCodeHasher(Buffer.alloc(32, 1));
    const b = new ClaimCodeHasher(Buffer.alloc(32, 2));
    expect(a.hash('ab12-cd34')).toBe(a.hash('AB12CD34'));
    expect(a.hash('ab12-cd34')).not.toBe(b.hash('ab12-cd34'));
    expect(a.hash('ab12-cd34')).toMatch(/^[0-9a-f]{64}$/);
    expect(() => a.hashForRegistration('ab-cd-ef-g')).toThrow(ProvisioningError);
  });
});

describe('bootstrap tokens', () => {
  it('verify until they expire, by the injected clock', async () => {
    const clock = new ManualClock(new Date('2026-05-01T00:00:00Z'));
    const tokens = new BootstrapTokens(Buffer.alloc(32, 9), 'provisiond:test', clock);
    const t = await tokens.issue('dev-1', 600);
    expect(t.expiresAt.toISOString()).toBe('2026-05-01T00:10:00.000Z');
    expect(await tokens.verify(t.token)).toEqual({ deviceId: 'dev-1', jti: t.jti });
    clock.advance(601_000);
    await expect(tokens.verify(t.token)).rejects.toMatchObject({ code: 'TOKEN_EXPIRED' });
  });

  it('refuse a token signed with another key, another issuer, or tampered', async () => {
    const clock = new ManualClock();
    const mine = new BootstrapTokens(Buffer.alloc(32, 9), 'provisiond:a', clock);
    const other = new BootstrapTokens(Buffer.alloc(32, 8), 'provisiond:a', clock);
    const otherIssuer = new BootstrapTokens(Buffer.alloc(32, 9), 'provisiond:b', clock);
    await expect(mine.verify((await other.issue('d', 60)).token)).rejects.toMatchObject({ code: 'TOKEN_INVALID' });
    await expect(mine.verify((await otherIssuer.issue('d', 60)).token)).rejects.toMatchObject({ code: 'TOKEN_INVALID' });
    const t = (await mine.issue('d', 60)).token;
    const [h, p, s] = t.split('.');
    const forged = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p!, 'base64url').toString()), sub: 'other' })).toString('base64url');
    await expect(mine.verify(`${h}.${forged}.${s}`)).rejects.toMatchObject({ code: 'TOKEN_INVALID' });
    await expect(mine.verify('garbage')).rejects.toMatchObject({ code: 'TOKEN_INVALID' });
  });
});

describe('config document', () => {
  const policy = { minTlsVersion: '1.2' as const, telemetryIntervalSeconds: 60, allowedTopics: ['devices/{deviceId}/telemetry'], firmwareFloor: '1.0.0' };
  const profile = {
    id: 'p',
    version: 2,
    items: [
      { id: 'tz', type: 'time' as const, required: false, priority: 50, await: false, data: { timezone: 'Europe/Berlin' } },
      { id: 'security', type: 'security-policy' as const, required: true, priority: 10, await: false, data: policy },
      { id: 'network', type: 'network' as const, required: true, priority: 0, await: true, data: {} },
    ],
  };

  it('orders items by priority, encrypts the Wi-Fi secret to the device key only (EC and RSA)', async () => {
    for (const kind of ['ec', 'ec-point', 'rsa'] as const) {
      const keys = kind === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ec', { namedCurve: 'P-256' });
      // 'ec-point': as a parsed CSR hands it over, the curve and raw point beside the key object
      const spki = keys.publicKey.export({ type: 'spki', format: 'der' });
      const devicePublicKey = kind === 'ec-point' ? { publicKey: keys.publicKey, curve: 'P-256', point: spki.subarray(spki.length - 65) } : { publicKey: keys.publicKey };
      const doc = await buildConfigDocument({
        deviceId: 'd1',
        version: 3,
        issuedAt: new Date('2026-01-01T00:00:00Z'),
        profile,
        network: { wifi: { ssid: 'home', security: 'wpa2-psk', secret: 'sekrit-pass' } },
        devicePublicKey,
      });
      expect(doc.items.map((i) => [i.id, i.priority, i.await])).toEqual([['network', 0, true], ['security', 10, false], ['tz', 50, false]]);
      expect(doc).toMatchObject({ profileId: 'p', profileVersion: 2, version: 3 });
      const net = doc.items[0]!;
      const jwe = net.type === 'network' ? net.data.wifi.secretJwe! : '';
      expect(JSON.stringify(doc)).not.toContain('sekrit-pass');
      expect(decodeProtectedHeader(jwe)).toMatchObject({ alg: kind === 'rsa' ? 'RSA-OAEP-256' : 'ECDH-ES', enc: 'A128CBC-HS256' });
      const { plaintext } = await compactDecrypt(jwe, keys.privateKey);
      expect(Buffer.from(plaintext).toString()).toBe('sekrit-pass');
      const sec = doc.items[1]!;
      expect(sec.type === 'security-policy' && sec.data.allowedTopics).toEqual(['devices/d1/telemetry']);
    }
  });

  it('leaves the network item out without network settings, and sends no secret for an open network', async () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const base = { deviceId: 'd', version: 1, issuedAt: new Date(), profile, devicePublicKey: { publicKey } };
    expect((await buildConfigDocument({ ...base, network: undefined })).items.map((i) => i.id)).toEqual(['security', 'tz']);
    const open = await buildConfigDocument({ ...base, network: { wifi: { ssid: 'cafe', security: 'open' } } });
    const net = open.items[0]!;
    expect(net.type === 'network' && net.data.wifi).toEqual({ ssid: 'cafe', security: 'open', hidden: false });
  });
});

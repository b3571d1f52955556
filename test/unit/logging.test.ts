/**
 * The logger's own guards (src/logging.ts): redacted fields, errors without driver data and with
 * secret-looking text masked, requests without headers and with secret query values masked.
 */
import crypto from 'node:crypto';
import { Writable } from 'node:stream';
import Fastify, { type FastifyBaseLogger } from 'fastify';
import { describe, expect, it } from 'vitest';
import { PRIVATE_KEY_PEM_HEADER } from '../helpers/pem.js';
import { REDACTED, createLogger, scrubText, scrubUrl } from '../../src/logging.js';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString('utf8').split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { lines, log: createLogger('trace', stream), text: () => JSON.stringify(lines) };
}

const pem = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
const jwt = `eyJhbGciOiJIUzI1NiJ9.${Buffer.from(JSON.stringify({ sub: 'dev-1', jti: 'abc' })).toString('base64url')}.${crypto.randomBytes(32).toString('base64url')}`;
const apiKey = `pdk_0123456789abcdef_${crypto.randomBytes(32).toString('base64url')}`;

describe('the service logger', () => {
  it('censors secret-named fields at the top level and two levels down', () => {
    const { log, lines, text } = capture();
    log.info({ password: 'p4ssw0rd-value', token: jwt, nested: { secret: 'nested-secret-value', deeper: { claimCode: 'claim-code-value' } }, keyPassphrase: 'passphrase-value' }, 'x');
    log.info({ req: { headers: { authorization: `Bearer ${apiKey}`, cookie: 'session=cookie-value' } } }, 'y');
    for (const s of ['p4ssw0rd-value', jwt, 'nested-secret-value', 'claim-code-value', 'passphrase-value', apiKey, 'cookie-value']) expect(text()).not.toContain(s);
    expect(lines[0]).toMatchObject({ password: REDACTED, token: REDACTED, nested: { secret: REDACTED, deeper: { claimCode: REDACTED } } });
  });

  it('serializes errors without driver data, masking keys, tokens and API keys in messages, stacks and causes', () => {
    const { log, text } = capture();
    const cause = Object.assign(new Error(`driver said no to ${apiKey}`), { command: { name: 'evalsha', args: ['wifi-secret-in-args'] } });
    const err = Object.assign(new Error(`could not use ${pem} with ${jwt}`, { cause }), { code: 'SOMETHING', config: { adminApiKey: 'configured-admin-key' } });
    log.error({ err }, 'failed');
    log.error(cause, 'direct');
    const out = text();
    for (const s of [apiKey, jwt, 'wifi-secret-in-args', 'configured-admin-key', ...pem.split('\n').filter((l) => l.length > 20 && !l.startsWith('-----'))]) expect(out).not.toContain(s);
    expect(out).toContain('SOMETHING');
    expect(out).toContain(`${PRIVATE_KEY_PEM_HEADER} [redacted]`);
    expect(out).toContain('pdk_0123456789abcdef_[redacted]');
  });

  it('logs requests as method, URL (secret query values masked) and peer: no headers, no body', async () => {
    const { log, lines, text } = capture();
    const app = Fastify({ loggerInstance: log as FastifyBaseLogger });
    app.post('/echo', async () => ({ ok: true }));
    await app.inject({ method: 'POST', url: '/echo?token=query-token-value&limit=5&apiKey=query-key-value', headers: { authorization: `Bearer ${apiKey}` }, payload: { claimCode: 'body-claim-code' } });
    await app.close();
    const out = text();
    for (const s of [apiKey, 'query-token-value', 'query-key-value', 'body-claim-code']) expect(out).not.toContain(s);
    const incoming = lines.find((l) => l.msg === 'incoming request') as { req: Record<string, unknown> };
    expect(incoming.req).toStrictEqual({ method: 'POST', url: `/echo?token=${REDACTED}&limit=5&apiKey=${REDACTED}`, host: 'localhost:80', remoteAddress: '127.0.0.1' });
  });

  it('scrubText and scrubUrl leave ordinary text alone', () => {
    expect(scrubText('device dev-1 refused: CLAIM_CODE_INVALID')).toBe('device dev-1 refused: CLAIM_CODE_INVALID');
    expect(scrubUrl('/v1/audit?tenant=acme&limit=10')).toBe('/v1/audit?tenant=acme&limit=10');
    expect(scrubUrl('/v1/devices/x?claimCode=abc')).toBe(`/v1/devices/x?claimCode=${REDACTED}`);
  });
});

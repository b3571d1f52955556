/**
 * While the service stops (SIGTERM -> Fastify close), a request that reaches it on a connection
 * accepted before gets a coded 503 SERVICE_STOPPING (retry elsewhere), not Fastify's bare 503,
 * and the request already running still completes.
 */
import { connect } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestService, type TestService } from '../helpers/service.js';

let ts: TestService;
beforeAll(async () => {
  ts = await startTestService({ http: { rateLimitPerClientPerSecond: 0, rateLimitPerTenantPerSecond: 0 } } as never);
});
afterAll(async () => {
  await ts.stop();
});

it('answers a request pipelined behind one in flight at close with 503 SERVICE_STOPPING and Connection: close', async () => {
  const address = ts.running.api.server.address() as { port: number };
  const socket = connect(address.port, '127.0.0.1');
  await new Promise<void>((resolve) => socket.once('connect', resolve));
  let received = '';
  socket.on('data', (chunk) => (received += chunk.toString('latin1')));
  const ended = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  const body = JSON.stringify({ claimCode: 'NOT-A-REAL-CODE-123', owner: 'o', site: 's' });
  // request 1: headers and half its body, so it is in flight when close() begins
  socket.write(`POST /v1/claims HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${ts.keys.installer}\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body.slice(0, 10)}`);
  await new Promise((r) => setTimeout(r, 100));
  const closing = ts.running.api.close();
  await new Promise((r) => setTimeout(r, 100));
  // the rest of request 1, and request 2 right behind it on the same connection
  socket.write(`${body.slice(10)}GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n`);
  await Promise.race([ended, new Promise((r) => setTimeout(r, 3000))]);
  socket.destroy();
  await closing;
  const responses = received.split(/(?=HTTP\/1\.1 )/);
  // request 1 ran to its own answer (an unknown claim code), not a refusal
  expect(responses[0]).toMatch(/^HTTP\/1\.1 403/);
  expect(responses[0]).toContain('CLAIM_CODE_INVALID');
  expect(responses[1]).toMatch(/^HTTP\/1\.1 503/);
  expect(responses[1]).toMatch(/connection: close/i);
  expect(responses[1]).toMatch(/retry-after: 5/i);
  expect(responses[1]).toContain('"code":"SERVICE_STOPPING"');
});

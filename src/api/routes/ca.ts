/** Public CA material: the trust anchor, the issuing chain and the CRL. */
import type { FastifyInstance } from 'fastify';
import { crlToPem } from '../../ca/index.js';
import type { Lifecycle } from '../../provisioning/index.js';

/** Public (no key): an empty security requirement in the OpenAPI document. */
const doc = (summary: string) => ({ schema: { summary, tags: ['ca'], security: [] } });

export function caRoutes(app: FastifyInstance, deps: { ca: { rootPem: string; chainPems: readonly string[] }; lifecycle: Lifecycle }): void {
  app.get('/v1/ca/root.pem', doc('The root CA certificate (PEM)'), async (_req, reply) => reply.type('application/x-pem-file').send(deps.ca.rootPem));
  app.get('/v1/ca/chain.pem', doc('The issuing CA chain (PEM)'), async (_req, reply) => reply.type('application/x-pem-file').send(deps.ca.chainPems.join('')));
  app.get('/v1/ca/crl', doc('The certificate revocation list (DER)'), async (_req, reply) => reply.type('application/pkix-crl').header('cache-control', 'max-age=60').send(await deps.lifecycle.crl()));
  app.get('/v1/ca/crl.pem', doc('The certificate revocation list (PEM)'), async (_req, reply) => reply.type('application/x-pem-file').header('cache-control', 'max-age=60').send(crlToPem(await deps.lifecycle.crl())));
}

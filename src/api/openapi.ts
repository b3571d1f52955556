/**
 * The OpenAPI 3 document of the HTTP API, generated from the route schemas (the same JSON Schemas
 * of schemas/ that validate the requests): GET /openapi.json, and an interactive page at /docs
 * whose assets come from the @fastify/swagger-ui package (no CDN).
 *
 * Register before the routes: @fastify/swagger collects them as they are added (an onRoute hook).
 * The schemas/*.json documents become components named by their titles (Device, ErrorBody, ...).
 */
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';
import pkg from '../../package.json' with { type: 'json' };

export const OPENAPI_PATH = '/openapi.json';
export const DOCS_PREFIX = '/docs';

/** A route the app serves, and whether the OpenAPI document leaves it out (schema.hide). */
export interface ServedRoute {
  method: string;
  url: string;
  hidden: boolean;
}

const served = new WeakMap<FastifyInstance, ServedRoute[]>();

/** Every route added after registerOpenApi(app) (the check that the document leaves none out). */
export function servedRoutes(app: FastifyInstance): readonly ServedRoute[] {
  return served.get(app) ?? [];
}

export function registerOpenApi(app: FastifyInstance): void {
  const routes: ServedRoute[] = [];
  served.set(app, routes);
  app.addHook('onRoute', (route) => {
    const hidden = (route.schema as { hide?: boolean } | undefined)?.hide === true;
    for (const method of [route.method].flat()) routes.push({ method: String(method), url: route.url, hidden });
  });
  app.register(swagger, {
    openapi: {
      // 3.1: its Schema Object is JSON Schema, so schemas/*.json (propertyNames, const, ...) go in as they are
      openapi: '3.1.0',
      info: {
        title: 'provisiond API',
        description: pkg.description,
        version: pkg.version,
        license: { name: pkg.license },
      },
      // relative to where the document is served: the instance that answered
      servers: [{ url: '/', description: 'this instance' }],
      components: {
        securitySchemes: {
          apiKey: { type: 'http', scheme: 'bearer', description: 'An API key (`Authorization: Bearer <key>`); its role and tenant decide what it may do.' },
        },
      },
      security: [{ apiKey: [] }],
      tags: [
        { name: 'health', description: 'Probes for orchestrators (no key)' },
        { name: 'ca', description: 'The CA chain and revocation list (no key)' },
        { name: 'devices', description: 'Registration, claims and the device lifecycle' },
        { name: 'profiles', description: 'Provisioning profiles' },
        { name: 'tenants', description: 'Tenants and their settings' },
        { name: 'api-keys', description: 'API keys' },
        { name: 'factory', description: 'Factory line: identities and labels' },
        { name: 'reports', description: 'Fleet reports' },
        { name: 'audit', description: 'The audit log' },
        { name: 'events', description: 'Live event streams (server-sent events)' },
        { name: 'metrics', description: 'Prometheus metrics' },
      ],
    },
    // a path or query parameter whose schema $refs a definition of a shared schema comes out as
    // #/components/schemas/<Schema>/components/schemas/<Definition>; the definition lives at <Schema>-<Definition>
    transformObject: (documents) => {
      if (!('openapiObject' in documents)) return documents.swaggerObject;
      const doc = documents.openapiObject;
      fixNestedRefs(doc, new Set(Object.keys(doc.components?.schemas ?? {})));
      return doc;
    },
    refResolver: {
      // components named by the schemas' titles (every schemas/*.json has a unique one)
      buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.title === 'string' ? json.title : `def-${i}`),
    },
  });
  app.register(swaggerUi, {
    routePrefix: DOCS_PREFIX,
    staticCSP: true,
    // the page reads the same document from /docs/json; no online validator (validatorUrl null)
    uiConfig: { deepLinking: true },
  });
  app.get(OPENAPI_PATH, { schema: { hide: true } }, async (_request, reply) => reply.header('cache-control', 'no-cache').send(app.swagger()));
}

const NESTED_REF = /^#\/components\/schemas\/([^/]+)\/components\/schemas\/([^/]+)$/;

function fixNestedRefs(node: unknown, components: ReadonlySet<string>): void {
  if (Array.isArray(node)) for (const n of node) fixNestedRefs(n, components);
  else if (node !== null && typeof node === 'object') {
    const record = node as Record<string, unknown>;
    for (const [key, value] of Object.entries(record)) {
      if (key === '$ref' && typeof value === 'string') {
        const m = NESTED_REF.exec(value);
        if (m && components.has(`${m[1]}-${m[2]}`)) record[key] = `#/components/schemas/${m[1]}-${m[2]}`;
      } else fixNestedRefs(value, components);
    }
  }
}

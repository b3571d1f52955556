/**
 * The OpenAPI document (GET /openapi.json) describes every route of the running app, is OpenAPI 3
 * in shape, and every $ref in it resolves within it; /docs answers a page whose assets answer
 * from the package (no CDN).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pkg from '../../package.json' with { type: 'json' };
import { servedRoutes } from '../../src/api/openapi.js';
import { startTestService, type TestService } from '../helpers/service.js';

let ts: TestService;
beforeAll(async () => {
  ts = await startTestService();
});
afterAll(async () => {
  await ts?.stop();
});

type Json = Record<string, unknown>;

function refsOf(node: unknown, out: string[] = []): string[] {
  if (Array.isArray(node)) for (const n of node) refsOf(n, out);
  else if (node !== null && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      if (k === '$ref' && typeof v === 'string') out.push(v);
      else refsOf(v, out);
    }
  }
  return out;
}

function resolvePointer(doc: unknown, ref: string): unknown {
  if (!ref.startsWith('#/')) return undefined;
  let node: unknown = doc;
  for (const raw of ref.slice(2).split('/')) {
    const key = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
    if (node === null || typeof node !== 'object' || !(key in node)) return undefined;
    node = (node as Json)[key];
  }
  return node;
}

describe('GET /openapi.json', () => {
  let doc: Json;
  beforeAll(async () => {
    const res = await ts.running.api.inject({ url: '/openapi.json' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/application\/json/);
    doc = res.json();
  });

  it('is an OpenAPI 3 document with info, servers and the bearer API key scheme', () => {
    expect(doc.openapi).toMatch(/^3\.\d+\.\d+$/);
    expect(doc.info).toMatchObject({ title: expect.any(String), version: pkg.version });
    expect((doc.servers as unknown[]).length).toBeGreaterThan(0);
    const components = doc.components as Json;
    expect((components.securitySchemes as Json).apiKey).toMatchObject({ type: 'http', scheme: 'bearer' });
    expect(doc.paths).toBeTypeOf('object');
  });

  it('lists every route of the running app, each operation with a summary, tags and responses', () => {
    const paths = doc.paths as Record<string, Record<string, Json>>;
    const documented = new Set<string>();
    for (const [path, ops] of Object.entries(paths)) for (const method of Object.keys(ops)) documented.add(`${method.toUpperCase()} ${path}`);
    expect(documented.size).toBeGreaterThan(30);
    // every route the running app serves (but the hidden pages: /docs itself, the UIs' assets), HEAD aside
    const served = servedRoutes(ts.running.api).filter((r) => !r.hidden && r.method !== 'HEAD');
    expect(served.length).toBeGreaterThan(30);
    for (const r of served) expect(documented, `${r.method} ${r.url}`).toContain(`${r.method} ${r.url.replace(/:(\w+)/g, '{$1}')}`);
    for (const [path, ops] of Object.entries(paths)) {
      for (const [method, op] of Object.entries(ops)) {
        expect(op.summary, `${method} ${path} summary`).toBeTypeOf('string');
        expect((op.tags as unknown[] | undefined)?.length, `${method} ${path} tags`).toBeGreaterThan(0);
        expect(Object.keys(op.responses as Json).length, `${method} ${path} responses`).toBeGreaterThan(0);
        // a keyed route can be refused: its error answers are schemas/error.json
        if (op.security === undefined) expect(JSON.stringify((op.responses as Json)['4XX']), `${method} ${path} 4XX`).toContain('#/components/schemas/ErrorBody');
      }
    }
  });

  it('resolves every $ref within the document, components named by the schema titles', () => {
    const refs = refsOf(doc);
    expect(refs.length).toBeGreaterThan(10);
    for (const ref of new Set(refs)) expect(resolvePointer(doc, ref), ref).toBeDefined();
    const schemas = (doc.components as Json).schemas as Json;
    expect(Object.keys(schemas)).toEqual(expect.arrayContaining(['ErrorBody', 'Device']));
  });
});

describe('/docs', () => {
  it('answers an HTML page whose scripts and styles come from this server', async () => {
    let res = await ts.running.api.inject({ url: '/docs' });
    if (res.statusCode >= 300 && res.statusCode < 400) res = await ts.running.api.inject({ url: new URL(String(res.headers.location), 'http://x/docs').pathname });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/text\/html/);
    const assets = [...res.body.matchAll(/(?:src|href)="([^"]+\.(?:js|css))"/g)].map((m) => m[1]!);
    expect(assets.length).toBeGreaterThan(1);
    for (const asset of assets) {
      expect(asset, 'no external CDN').not.toMatch(/^(https?:)?\/\//);
      const url = new URL(asset, 'http://x/docs/').pathname;
      const a = await ts.running.api.inject({ url });
      expect(a.statusCode, url).toBe(200);
    }
    // the page's document is this one, and nothing is fetched from elsewhere
    const init = await ts.running.api.inject({ url: '/docs/static/swagger-initializer.js' });
    expect(init.statusCode).toBe(200);
    expect(init.body).not.toMatch(/['"`]https?:\/\//); // no absolute URL in code (a comment cites one)
    const pageDoc = await ts.running.api.inject({ url: '/docs/json' });
    expect(pageDoc.json()).toEqual((await ts.running.api.inject({ url: '/openapi.json' })).json());
  });
});

/**
 * JSON Schema -> fast-check arbitraries, for the subset schemas/ uses: $ref (to another document's
 * definitions or the same document's), type, properties / required / additionalProperties /
 * minProperties, enum, const, minLength / maxLength, pattern (fc.stringMatching), the formats
 * ipv4, uri and date-time, minimum / maximum, items / minItems / maxItems / uniqueItems, oneOf and
 * anyOf (also anyOf beside an object's own properties, as device-register-request.json has it).
 *
 * valid(): values the schema accepts (checked with the service's own Ajv). invalid(): a valid
 * value with exactly one mutation at one place (wrong type, null, a required property missing, an
 * extra or prototype-polluting property, a string too long or too short or off its pattern or
 * format, a number out of range or not an integer, an enum or const miss, too many / too few /
 * duplicate items, deep nesting, a huge string), kept only if the schema really rejects it.
 * rawJsonVariants(): transport-level mutations of a JSON text (not JSON, empty, truncated, BOM,
 * duplicate keys, __proto__ / constructor keys, invalid UTF-8, non-object JSON).
 */
import fc from 'fast-check';
import type { Ajv, ValidateFunction } from 'ajv';
import { createAjv, schemaDocuments } from '../../src/schemas.js';

export type Schema = boolean | { readonly [k: string]: unknown };
type SchemaObject = { readonly [k: string]: unknown };
type Path = readonly (string | number)[];

/** Where a schema lives: the document's $id and the JSON pointer inside it. */
interface Located {
  schema: Schema;
  base: string;
  pointer: string;
}

export interface ArbitraryOptions {
  /**
   * Replacement generators for valid values, by path: '' is the root, 'a.b' a property, 'a[]' the
   * items of an array (e.g. 'devices[].id'). They must produce schema-valid values.
   */
  overrides?: Record<string, fc.Arbitrary<unknown>>;
  /** Items above minItems in a valid array (default 3). */
  arrayExtra?: number;
  /** Characters above minLength in a valid free-text string (default 40). */
  stringExtra?: number;
  /** Length of the "huge" strings of invalid values (default 70,000). */
  hugeLength?: number;
}

export interface Mutated {
  value: unknown;
  /** What was changed, e.g. "tooLong at devices.0.id". */
  mutation: string;
}

const isObj = (s: Schema): s is SchemaObject => typeof s === 'object' && s !== null;
const escapePointer = (k: string) => k.replace(/~/g, '~0').replace(/\//g, '~1');
const pathKey = (path: Path) => path.map((p) => (typeof p === 'number' ? '[]' : p)).join('.').replace(/\.\[\]/g, '[]');
const showPath = (path: Path) => (path.length === 0 ? '(root)' : path.join('.'));

/** A few JSON values of every JSON type: what "a wrong type" is picked from. */
const SAMPLES: readonly unknown[] = [0, 1, -1, 1.5, 2 ** 53 + 2, 'x', '', '0', 'true', true, false, null, [], [1], ['x'], {}, { a: 1 }];
const jsonType = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'array' : Number.isInteger(v) ? 'integer' : typeof v);

/** Strings that break the patterns and formats used in schemas/. */
const ODD_STRINGS: readonly string[] = [
  '',
  ' ',
  'a b',
  '-leading',
  '.leading',
  '_x',
  '../../etc/passwd',
  'a/b',
  'a\\b',
  'a\u0000b',
  '\n',
  'é',
  'Ünïcödé',
  '😀',
  '\ud800',
  '%2e%2e',
  '<script>',
  "' OR 1=1 --",
  'UPPER',
  'x'.repeat(65),
  '1.2.3',
  '999.1.1.1',
  'ftp://x',
  'http://',
  'javascript:alert(1)',
  'not a date',
];

/**
 * JSON nested `depth` levels deep. Kept as a marker: JSON.stringify (and Ajv) recurse, and a worker
 * thread's stack ends near 10,000 levels. toJsonText() writes it out; materialize() gives Ajv an
 * equivalent nested only a few levels (validity is decided at the top: the type, or nothing).
 */
export class DeepJson {
  constructor(
    readonly kind: 'array' | 'object',
    readonly depth: number,
  ) {}
  text(): string {
    return this.kind === 'array' ? `${'['.repeat(this.depth)}${']'.repeat(this.depth)}` : `${'{"a":'.repeat(this.depth)}{}${'}'.repeat(this.depth)}`;
  }
}
export const deepArray = (depth: number) => new DeepJson('array', depth);
export const deepObject = (depth: number) => new DeepJson('object', depth);

/** `value` with every DeepJson replaced by a real value nested at most 8 levels. */
export function materialize(value: unknown): unknown {
  if (value instanceof DeepJson) return JSON.parse(new DeepJson(value.kind, Math.min(value.depth, 8)).text()) as unknown;
  if (Array.isArray(value)) return value.some(hasDeep) ? value.map(materialize) : value;
  if (value && typeof value === 'object') {
    if (!hasDeep(value)) return value;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) Object.defineProperty(out, k, { value: materialize(v), enumerable: true, writable: true, configurable: true });
    return out;
  }
  return value;
}

function hasDeep(value: unknown): boolean {
  if (value instanceof DeepJson) return true;
  if (Array.isArray(value)) return value.some(hasDeep);
  if (value && typeof value === 'object') return Object.values(value).some(hasDeep);
  return false;
}

/** JSON text of a value that may hold DeepJson markers (JSON.stringify otherwise). */
export function toJsonText(value: unknown): string {
  if (!hasDeep(value)) return JSON.stringify(value) ?? 'null';
  if (value instanceof DeepJson) return value.text();
  if (Array.isArray(value)) return `[${value.map(toJsonText).join(',')}]`;
  return `{${Object.entries(value as object)
    .map(([k, v]) => `${JSON.stringify(k)}:${toJsonText(v)}`)
    .join(',')}}`;
}

/** Small JSON values, sometimes deeply nested (the generator for schemas that allow anything). */
export const anyJson: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 8, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 1, arbitrary: fc.constantFrom(10, 500, 5000).map(deepObject) },
  { weight: 1, arbitrary: fc.constantFrom(10, 500, 5000).map(deepArray) },
);
/** Small JSON objects, sometimes deeply nested (for `{type: object}` without properties). */
export const anyObject: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 8, arbitrary: fc.dictionary(fc.string({ maxLength: 12 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 5 }) },
  { weight: 1, arbitrary: fc.constantFrom(10, 500, 5000).map(deepObject) },
);

export class SchemaArbitraries {
  readonly ajv: Ajv;
  readonly #docs = new Map<string, SchemaObject>();
  #inline = 0;

  constructor(docs: readonly { $id: string }[] = schemaDocuments) {
    this.ajv = createAjv();
    for (const doc of docs) this.#docs.set(doc.$id, doc as unknown as SchemaObject);
  }

  /**
   * A schema by $id (e.g. schemaRef('claim-request')), or an inline schema (a route's params or
   * querystring schema), registered under a made-up $id so that its parts can be located.
   */
  locate(schemaOrId: string | SchemaObject): Located {
    if (typeof schemaOrId === 'string') {
      // an $id, or an $id with a JSON pointer (e.g. ...device-import-request.json#/definitions/ImportRow)
      const [base = '', pointer = ''] = schemaOrId.split('#');
      const doc = this.#docs.get(base);
      if (!doc) throw new Error(`unknown schema ${schemaOrId}`);
      return this.#deref({ schema: { $ref: `#${pointer}` }, base, pointer: '' });
    }
    const $id = `urn:fuzz:inline:${++this.#inline}`;
    const doc = { ...schemaOrId, $id };
    this.ajv.addSchema(doc);
    this.#docs.set($id, doc);
    return { schema: doc, base: $id, pointer: '' };
  }

  /** The validator of a located schema (the service's Ajv options: strict, all formats). */
  validator(at: Located): ValidateFunction {
    const fn = this.ajv.getSchema(at.pointer ? `${at.base}#${at.pointer}` : at.base);
    if (!fn) throw new Error(`cannot compile ${at.base}#${at.pointer}`);
    return fn;
  }

  #deref(at: Located): Located {
    let cur = at;
    for (let hops = 0; isObj(cur.schema) && typeof cur.schema.$ref === 'string'; hops++) {
      if (hops > 20) throw new Error(`$ref loop at ${cur.base}#${cur.pointer}`);
      const ref = cur.schema.$ref as string;
      const [file, fragment = ''] = ref.split('#');
      const base = file ? new URL(file, cur.base).href : cur.base;
      const doc = this.#docs.get(base);
      if (!doc) throw new Error(`unresolved $ref ${ref} from ${cur.base}`);
      let node: unknown = doc;
      for (const part of fragment.split('/').filter(Boolean)) node = (node as Record<string, unknown>)[part.replace(/~1/g, '/').replace(/~0/g, '~')];
      if (node === undefined) throw new Error(`unresolved $ref ${ref}`);
      cur = { schema: node as Schema, base, pointer: fragment };
    }
    return cur;
  }

  #child(at: Located, ...keys: (string | number)[]): Located {
    let node: unknown = at.schema;
    for (const k of keys) node = (node as Record<string, unknown>)[k];
    return { schema: node as Schema, base: at.base, pointer: `${at.pointer}/${keys.map((k) => escapePointer(String(k))).join('/')}` };
  }

  // ------------------------------------------------------------------ valid

  /** Values `schema` accepts. */
  valid(schemaOrId: string | SchemaObject, options: ArbitraryOptions = {}): fc.Arbitrary<unknown> {
    const root = this.locate(schemaOrId);
    const check = this.validator(root);
    return this.#valid(root, [], options).filter((v) => check(materialize(v)));
  }

  #valid(at0: Located, path: Path, o: ArbitraryOptions): fc.Arbitrary<unknown> {
    const override = o.overrides?.[pathKey(path)];
    if (override) return override;
    const at = this.#deref(at0);
    const s = at.schema;
    if (s === true || (isObj(s) && Object.keys(s).filter((k) => !['description', 'title', '$id', '$schema', 'definitions', 'default'].includes(k)).length === 0)) return anyJson;
    if (s === false) throw new Error(`false schema at ${showPath(path)}`);
    const obj = s as SchemaObject;
    if ('const' in obj) return fc.constant(obj.const);
    if (Array.isArray(obj.enum)) return fc.constantFrom(...(obj.enum as unknown[]));
    if (Array.isArray(obj.oneOf)) return fc.oneof(...(obj.oneOf as Schema[]).map((_, i) => this.#valid(this.#child(at, 'oneOf', i), path, o)));
    if (Array.isArray(obj.anyOf)) {
      if (obj.type === 'object') {
        // anyOf beside the object's own properties: one branch's `required` added to them
        return fc.oneof(
          ...(obj.anyOf as SchemaObject[]).map((branch) => this.#object(at, path, o, [...((obj.required as string[]) ?? []), ...((branch.required as string[]) ?? [])])),
        );
      }
      return fc.oneof(...(obj.anyOf as Schema[]).map((_, i) => this.#valid(this.#child(at, 'anyOf', i), path, o)));
    }
    const type = obj.type;
    if (Array.isArray(type)) return fc.oneof(...type.map((t) => this.#valid({ ...at, schema: { ...obj, type: t } }, path, o)));
    switch (type) {
      case 'object':
        return this.#object(at, path, o, (obj.required as string[]) ?? []);
      case 'array':
        return this.#array(at, path, o);
      case 'string':
        return this.#string(obj, o);
      case 'integer': {
        const min = typeof obj.minimum === 'number' ? obj.minimum : -(2 ** 31);
        const max = typeof obj.maximum === 'number' ? obj.maximum : 2 ** 31;
        return fc.oneof(fc.constantFrom(min, max), fc.integer({ min, max }));
      }
      case 'number':
        return fc.double({ noNaN: true, noDefaultInfinity: true, ...(typeof obj.minimum === 'number' ? { min: obj.minimum } : {}), ...(typeof obj.maximum === 'number' ? { max: obj.maximum } : {}) });
      case 'boolean':
        return fc.boolean();
      case 'null':
        return fc.constant(null);
      default:
        return anyJson;
    }
  }

  #object(at: Located, path: Path, o: ArbitraryOptions, required: readonly string[]): fc.Arbitrary<unknown> {
    const obj = at.schema as SchemaObject;
    const props = (obj.properties ?? {}) as Record<string, Schema>;
    const names = Object.keys(props);
    if (names.length === 0) return obj.additionalProperties === false ? fc.constant({}) : anyObject;
    const model: Record<string, fc.Arbitrary<unknown>> = {};
    for (const name of names) model[name] = this.#valid(this.#child(at, 'properties', name), [...path, name], o);
    const record = fc.record(model, { requiredKeys: names.filter((n) => required.includes(n)) });
    const minProps = typeof obj.minProperties === 'number' ? obj.minProperties : 0;
    return minProps > 0 ? record.filter((r) => Object.keys(r).length >= minProps) : record;
  }

  #array(at: Located, path: Path, o: ArbitraryOptions): fc.Arbitrary<unknown> {
    const obj = at.schema as SchemaObject;
    const minLength = typeof obj.minItems === 'number' ? obj.minItems : 0;
    const maxLength = Math.min(typeof obj.maxItems === 'number' ? obj.maxItems : Infinity, minLength + (o.arrayExtra ?? 3));
    const item = obj.items === undefined ? anyJson : this.#valid(this.#child(at, 'items'), [...path, 0], o);
    return obj.uniqueItems ? fc.uniqueArray(item, { minLength, maxLength, selector: (v) => toJsonText(v) }) : fc.array(item, { minLength, maxLength });
  }

  #string(obj: SchemaObject, o: ArbitraryOptions): fc.Arbitrary<unknown> {
    const minLength = typeof obj.minLength === 'number' ? obj.minLength : 0;
    const maxLength = typeof obj.maxLength === 'number' ? obj.maxLength : Infinity;
    const inRange = (s: string) => [...s].length >= minLength && [...s].length <= maxLength;
    const pattern = typeof obj.pattern === 'string' ? new RegExp(obj.pattern, 'u') : undefined;
    const fits = (s: string) => inRange(s) && (!pattern || pattern.test(s));
    switch (obj.format) {
      case 'ipv4':
        return fc.ipV4().filter(fits);
      case 'uri':
        return fc.webUrl({ validSchemes: ['http', 'https'], withQueryParameters: true }).filter(fits);
      case 'date-time':
        return fc.date({ min: new Date('2000-01-01T00:00:00Z'), max: new Date('2100-01-01T00:00:00Z'), noInvalidDate: true }).map((d) => d.toISOString());
      case undefined:
        break;
      default:
        throw new Error(`format ${String(obj.format)} has no generator`);
    }
    if (pattern) return fc.stringMatching(new RegExp(obj.pattern as string)).filter(fits);
    const max = Math.min(maxLength, minLength + (o.stringExtra ?? 40));
    return fc.oneof(
      { weight: 4, arbitrary: fc.string({ minLength, maxLength: max }) },
      { weight: 1, arbitrary: fc.string({ minLength, maxLength: max, unit: 'binary' }) },
      { weight: 1, arbitrary: fc.constantFrom(minLength, maxLength === Infinity ? minLength + 200 : maxLength).map((n) => 'é'.repeat(n)) },
    ).filter(inRange);
  }

  // ---------------------------------------------------------------- invalid

  /** Values `schema` rejects: a valid value with one mutation. */
  invalid(schemaOrId: string | SchemaObject, options: ArbitraryOptions = {}): fc.Arbitrary<Mutated> {
    const root = this.locate(schemaOrId);
    const check = this.validator(root);
    const valid = this.#valid(root, [], options).filter((v) => check(materialize(v)));
    return fc
      .record({ value: valid, site: fc.nat(), pick: fc.nat(), junk: fc.constantFrom(...SAMPLES), odd: fc.constantFrom(...ODD_STRINGS), n: fc.integer({ min: 1, max: 5 }) })
      .map((r) => this.#mutate(root, check, r, options));
  }

  #mutate(
    root: Located,
    check: ValidateFunction,
    r: { value: unknown; site: number; pick: number; junk: unknown; odd: string; n: number },
    o: ArbitraryOptions,
  ): Mutated {
    const sites: { path: Path; at: Located; value: unknown }[] = [];
    this.#sites(root, [], r.value, sites);
    // from the chosen site and mutation on, the first that the schema really rejects
    for (let i = 0; i < sites.length; i++) {
      const site = sites[(r.site + i) % sites.length]!;
      const muts = this.#mutations(site.at, site.value);
      for (let j = 0; j < muts.length; j++) {
        const name = muts[(r.pick + j) % muts.length]!;
        const replaced = this.#apply(name, site.at, site.value, r, o);
        if (replaced === NO_CHANGE) continue;
        const value = setAt(r.value, site.path, replaced);
        if (!check(materialize(value))) return { value, mutation: `${name} at ${showPath(site.path)}` };
      }
    }
    return { value: Array.isArray(r.value) ? { notAnArray: true } : [r.value], mutation: 'wrong type at (root)' };
  }

  /** Every place of `value` with the (dereferenced) schema that governs it. */
  #sites(at0: Located, path: Path, value: unknown, out: { path: Path; at: Located; value: unknown }[]): void {
    const at = this.#deref(at0);
    out.push({ path, at, value });
    const s = at.schema;
    if (!isObj(s)) return;
    for (const kw of ['oneOf', 'anyOf'] as const) {
      if (!Array.isArray(s[kw]) || s.type === 'object') continue;
      // descend into the branch the value matches
      for (let i = 0; i < (s[kw] as unknown[]).length; i++) {
        const branch = this.#child(at, kw, i);
        if (this.validator(branch)(materialize(value))) {
          const d = this.#deref(branch);
          this.#descend(d, path, value, out);
          break;
        }
      }
      return;
    }
    this.#descend(at, path, value, out);
  }

  #descend(at: Located, path: Path, value: unknown, out: { path: Path; at: Located; value: unknown }[]): void {
    const s = at.schema;
    if (!isObj(s) || value instanceof DeepJson) return;
    if (Array.isArray(value) && s.items !== undefined) {
      value.forEach((v, i) => this.#sites(this.#child(at, 'items'), [...path, i], v, out));
    } else if (value && typeof value === 'object' && !Array.isArray(value) && isObj(s.properties as Schema)) {
      for (const [k, v] of Object.entries(value)) {
        if (k in (s.properties as object)) this.#sites(this.#child(at, 'properties', k), [...path, k], v, out);
      }
    }
  }

  /** The mutations that apply at this place (some listed twice: they are the likelier bugs). */
  #mutations(at: Located, value: unknown): string[] {
    const s = at.schema;
    if (!isObj(s)) return ['type'];
    const m = ['type', 'null', 'deep'];
    if (Array.isArray(s.enum)) m.push('enum');
    if ('const' in s) m.push('const');
    if (typeof value === 'string') {
      if (typeof s.maxLength === 'number') m.push('tooLong', 'huge');
      if (typeof s.minLength === 'number' && s.minLength > 0) m.push('tooShort');
      if (typeof s.pattern === 'string') m.push('pattern', 'pattern');
      if (typeof s.format === 'string') m.push('format');
    }
    if (typeof value === 'number') {
      if (typeof s.minimum === 'number') m.push('belowMinimum');
      if (typeof s.maximum === 'number') m.push('aboveMaximum');
      if (s.type === 'integer') m.push('fraction');
      m.push('bigNumber');
    }
    if (Array.isArray(value)) {
      if (typeof s.maxItems === 'number') m.push('tooManyItems');
      if (typeof s.minItems === 'number' && s.minItems > 0) m.push('tooFewItems');
      if (s.uniqueItems && value.length > 0) m.push('duplicateItem');
    }
    if (value && typeof value === 'object' && !Array.isArray(value)) {
      if (Array.isArray(s.required) && s.required.length > 0) m.push('missingRequired', 'missingRequired');
      if (s.additionalProperties === false) m.push('extraProperty', 'protoKey');
      if (typeof s.minProperties === 'number') m.push('empty');
    }
    return m;
  }

  #apply(name: string, at: Located, value: unknown, r: { junk: unknown; odd: string; n: number; pick: number }, o: ArbitraryOptions): unknown {
    const s = at.schema as SchemaObject;
    const huge = o.hugeLength ?? 70_000;
    switch (name) {
      case 'type': {
        const allowed = new Set([s.type].flat().filter(Boolean) as string[]);
        if (allowed.has('number')) allowed.add('integer');
        const candidates = SAMPLES.filter((v) => !allowed.has(jsonType(v)));
        return candidates.length ? candidates[r.pick % candidates.length] : r.junk;
      }
      case 'null':
        return null;
      case 'deep':
        return r.n % 2 ? deepArray(10 ** Math.min(r.n, 4)) : deepObject(10 ** Math.min(r.n, 4));
      case 'enum':
        return [`${String((s.enum as unknown[])[0])}x`, String((s.enum as unknown[])[0]).toUpperCase(), '', r.odd][r.pick % 4];
      case 'const':
        return `${String(s.const)}-not`;
      case 'tooLong':
        return (value as string) + 'x'.repeat((s.maxLength as number) - [...(value as string)].length + r.n);
      case 'huge':
        return 'h'.repeat(huge);
      case 'tooShort':
        return [...(value as string)].slice(0, Math.max(0, (s.minLength as number) - 1)).join('');
      case 'pattern': {
        const re = new RegExp(s.pattern as string, 'u');
        const tries = [r.odd, ...ODD_STRINGS, `${value as string} `, ` ${value as string}`, `${value as string}\n`];
        return tries.find((t) => !re.test(t)) ?? NO_CHANGE;
      }
      case 'format':
        return ['not a uri', '1.2.3', '999.999.1.1', 'http//x', 'yesterday', r.odd][r.pick % 6];
      case 'belowMinimum':
        return (s.minimum as number) - r.n;
      case 'aboveMaximum':
        return (s.maximum as number) + r.n;
      case 'fraction':
        return (value as number) + 0.5;
      case 'bigNumber':
        return [1e308, -1e308, 2 ** 63, -(2 ** 53) - 2, 1e-300][r.pick % 5];
      case 'tooManyItems': {
        // copies of the smallest item (up to 50,001 of them: keep each small)
        const arr = (value as unknown[]).map(materialize);
        const filler = arr.length > 0 ? arr.reduce((a, b) => (toJsonText(b).length < toJsonText(a).length ? b : a)) : r.junk;
        return Array.from({ length: (s.maxItems as number) + r.n }, () => filler);
      }
      case 'tooFewItems':
        return (value as unknown[]).slice(0, (s.minItems as number) - 1);
      case 'duplicateItem': {
        const arr = value as unknown[];
        return [...arr, arr[r.pick % arr.length]];
      }
      case 'missingRequired': {
        const present = (s.required as string[]).filter((k) => k in (value as object));
        if (present.length === 0) return NO_CHANGE;
        const drop = present[r.pick % present.length]!;
        const { [drop]: _dropped, ...rest } = value as Record<string, unknown>;
        return rest;
      }
      case 'extraProperty': {
        const key = ['extra', 'admin', 'tenantId', 'role', 'state', '', 'x'.repeat(300), '$ref', 'toString', 'hasOwnProperty'][r.pick % 10]!;
        return { ...(value as object), [key]: r.junk };
      }
      case 'protoKey': {
        const key = ['__proto__', 'constructor', 'prototype'][r.pick % 3]!;
        const copy = { ...(value as object) };
        Object.defineProperty(copy, key, { value: key === 'constructor' ? { prototype: { polluted: true } } : { polluted: true }, enumerable: true, writable: true, configurable: true });
        return copy;
      }
      case 'empty':
        return {};
      default:
        throw new Error(`unknown mutation ${name}`);
    }
  }
}

const NO_CHANGE = Symbol('no change');

/** A copy of `root` with the value at `path` replaced (own __proto__ keys kept as data). */
function setAt(root: unknown, path: Path, replacement: unknown): unknown {
  if (path.length === 0) return replacement;
  const [head, ...rest] = path;
  if (Array.isArray(root)) {
    const copy = [...root];
    copy[head as number] = setAt(root[head as number], rest, replacement);
    return copy;
  }
  const copy: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(root as object)) Object.defineProperty(copy, k, { value: v, enumerable: true, writable: true, configurable: true });
  Object.defineProperty(copy, head as string, { value: setAt((root as Record<string, unknown>)[head as string], rest, replacement), enumerable: true, writable: true, configurable: true });
  return copy;
}

// ------------------------------------------------------------ raw variants

export interface RawVariant {
  /** The bytes to send. */
  body: string | Buffer;
  /** What was done, e.g. "truncated". */
  mutation: string;
  /** Whether the receiver must reject it (false: it may still be acceptable JSON). */
  mustReject: boolean;
}

/**
 * Transport-level mutations of a valid JSON value: bytes that are not JSON, an empty body, a
 * truncated text, a byte-order mark, a duplicated key, __proto__ / constructor.prototype keys,
 * invalid UTF-8, JSON that is not an object, non-JSON literals.
 */
export function rawJsonVariants(valid: fc.Arbitrary<unknown>): fc.Arbitrary<RawVariant> {
  const text = valid.map(toJsonText);
  return fc.oneof(
    fc.uint8Array({ minLength: 1, maxLength: 300 }).map((b) => ({ body: Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(b)]), mutation: 'random bytes', mustReject: true })),
    fc.constantFrom('', ' ', '\n').map((b) => ({ body: b, mutation: 'empty', mustReject: true })),
    fc.tuple(text, fc.nat()).map(([t, n]) => ({ body: t.slice(0, Math.max(1, t.length - 1 - (n % Math.max(1, t.length - 1)))), mutation: 'truncated', mustReject: true })),
    fc.constantFrom('{"a":1,}', "{'a':1}", 'NaN', 'undefined', '{"a":01}', '{"a":"\\x41"}', '{"a" 1}', '[1,2', '{"a":1}}', '\u0000{}', '{"a":Infinity}', '/* c */ {}').map((b) => ({
      body: b,
      mutation: 'not JSON',
      mustReject: true,
    })),
    text.map((t) => ({ body: `\ufeff${t}`, mutation: 'byte-order mark', mustReject: false })),
    text.map((t) => ({ body: t.startsWith('{"') ? `{${t.slice(1, t.indexOf(',') > 0 ? t.indexOf(',') : t.length - 1)},${t.slice(1)}` : t, mutation: 'duplicate key', mustReject: false })),
    fc.tuple(text, fc.constantFrom('{"__proto__":{"polluted":true}}', '{"constructor":{"prototype":{"polluted":true}}}')).map(([t, p]) => ({
      body: t.startsWith('{') && t !== '{}' ? `${p.slice(0, -1)},${t.slice(1)}` : p,
      mutation: 'prototype key',
      mustReject: true,
    })),
    text.map((t) => ({ body: Buffer.concat([Buffer.from(t.slice(0, -1)), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from(t.slice(-1))]), mutation: 'invalid UTF-8', mustReject: true })),
    fc.constantFrom('[]', '[{}]', '0', '"x"', 'null', 'true', '1e999').map((b) => ({ body: b, mutation: 'not an object', mustReject: true })),
  );
}

/**
 * Minimal DER (ITU-T X.690) encoder and strict TLV reader: just what X.509 certificates and
 * PKCS#10 requests need. Encoders return Buffers so callers can precompute constant parts and
 * assemble structures by concatenation; nothing here builds generic object trees.
 */

/** Universal tags used by the CA. */
export const Tag = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  T61_STRING: 0x14,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  UNIVERSAL_STRING: 0x1c,
  BMP_STRING: 0x1e,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** Thrown by the reader and by encoders given impossible input; callers map it to their own error. */
export class Asn1Error extends Error {
  override readonly name = 'Asn1Error';
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/** DER length octets for a content of `n` bytes (short form below 128, minimal long form above). */
export function encodeLength(n: number): Buffer {
  if (!Number.isInteger(n) || n < 0) throw new Asn1Error(`invalid length ${n}`);
  if (n < 0x80) return Buffer.from([n]);
  if (n < 0x100) return Buffer.from([0x81, n]);
  if (n < 0x10000) return Buffer.from([0x82, n >> 8, n & 0xff]);
  if (n < 0x1000000) return Buffer.from([0x83, n >> 16, (n >> 8) & 0xff, n & 0xff]);
  if (n <= 0xffffffff) return Buffer.from([0x84, n >>> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);
  throw new Asn1Error(`length ${n} too large`);
}

/** One TLV with a single-octet tag; `content` may be split in parts (concatenated once). */
export function tlv(tag: number, content: Buffer | readonly Buffer[]): Buffer {
  const parts = Buffer.isBuffer(content) ? [content] : content;
  let len = 0;
  for (const p of parts) len += p.length;
  let header: number[];
  if (len < 0x80) header = [tag, len];
  else if (len < 0x100) header = [tag, 0x81, len];
  else if (len < 0x10000) header = [tag, 0x82, len >> 8, len & 0xff];
  else return Buffer.concat([Buffer.from([tag]), encodeLength(len), ...parts]);
  const out = Buffer.allocUnsafe(header.length + len);
  for (let i = 0; i < header.length; i++) out[i] = header[i]!;
  let off = header.length;
  for (const p of parts) off += p.copy(out, off);
  return out;
}

/** SEQUENCE of already-encoded elements. */
export function sequence(...elements: Buffer[]): Buffer {
  return tlv(Tag.SEQUENCE, elements);
}

/** SET of already-encoded elements. DER SET OF ordering is the caller's job (X.509 uses one-element SETs). */
export function set(...elements: Buffer[]): Buffer {
  return tlv(Tag.SET, elements);
}

/** INTEGER from unsigned big-endian magnitude bytes: leading zeros stripped, 0x00 prefixed when the top bit is set. */
export function integerFromBuffer(magnitude: Buffer): Buffer {
  let i = 0;
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
  let body = magnitude.subarray(i);
  if (body.length === 0) body = Buffer.from([0]);
  if (body[0]! & 0x80) return tlv(Tag.INTEGER, [Buffer.from([0]), body]);
  return tlv(Tag.INTEGER, body);
}

/** INTEGER from a non-negative safe integer. */
export function integer(n: number): Buffer {
  if (!Number.isSafeInteger(n) || n < 0) throw new Asn1Error(`integer ${n} not supported`);
  const bytes: number[] = [];
  let v = n;
  do {
    bytes.unshift(v % 256);
    v = Math.floor(v / 256);
  } while (v > 0);
  return integerFromBuffer(Buffer.from(bytes));
}

/** OBJECT IDENTIFIER from dotted notation ("2.5.4.3"). */
export function oid(dotted: string): Buffer {
  const arcs = dotted.split('.').map((s) => {
    if (!/^(0|[1-9][0-9]*)$/.test(s)) throw new Asn1Error(`invalid OID ${dotted}`);
    return BigInt(s);
  });
  if (arcs.length < 2 || arcs[0]! > 2n || (arcs[0]! < 2n && arcs[1]! > 39n)) throw new Asn1Error(`invalid OID ${dotted}`);
  const out: number[] = [];
  const push = (arc: bigint) => {
    const groups: number[] = [Number(arc & 0x7fn)];
    let v = arc >> 7n;
    while (v > 0n) {
      groups.unshift(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    out.push(...groups);
  };
  push(arcs[0]! * 40n + arcs[1]!);
  for (const arc of arcs.slice(2)) push(arc);
  return tlv(Tag.OID, Buffer.from(out));
}

/** BIT STRING with `unusedBits` (0-7) unused trailing bits in the last octet. */
export function bitString(data: Buffer, unusedBits = 0): Buffer {
  if (unusedBits < 0 || unusedBits > 7 || (data.length === 0 && unusedBits !== 0)) throw new Asn1Error('invalid unused bits');
  return tlv(Tag.BIT_STRING, [Buffer.from([unusedBits]), data]);
}

/**
 * BIT STRING for a named-bit list (e.g. keyUsage): `bits` are bit numbers (0 = most significant
 * bit of the first octet), encoded with trailing zero bits removed as DER requires.
 */
export function namedBits(bits: readonly number[]): Buffer {
  if (bits.length === 0) return bitString(Buffer.alloc(0));
  const max = Math.max(...bits);
  const bytes = Buffer.alloc((max >> 3) + 1);
  for (const b of bits) bytes[b >> 3]! |= 0x80 >> (b & 7);
  return bitString(bytes, 7 - (max & 7));
}

export function octetString(data: Buffer): Buffer {
  return tlv(Tag.OCTET_STRING, data);
}

export function utf8String(s: string): Buffer {
  return tlv(Tag.UTF8_STRING, Buffer.from(s, 'utf8'));
}

/** PrintableString; throws on characters outside the PrintableString alphabet. */
export function printableString(s: string): Buffer {
  if (!/^[A-Za-z0-9 '()+,\-./:=?]*$/.test(s)) throw new Asn1Error('not a PrintableString');
  return tlv(Tag.PRINTABLE_STRING, Buffer.from(s, 'latin1'));
}

/** IA5String (ASCII); throws on non-ASCII characters. */
export function ia5String(s: string): Buffer {
  if (!/^[\x00-\x7f]*$/.test(s)) throw new Asn1Error('not an IA5String');
  return tlv(Tag.IA5_STRING, Buffer.from(s, 'latin1'));
}

export function boolean(v: boolean): Buffer {
  return Buffer.from([Tag.BOOLEAN, 1, v ? 0xff : 0x00]);
}

export const NULL: Buffer = Buffer.from([Tag.NULL, 0]);

/** [n] EXPLICIT: constructed context tag wrapping one encoded element. */
export function explicit(n: number, element: Buffer): Buffer {
  if (n < 0 || n > 30) throw new Asn1Error('tag number out of range');
  return tlv(0xa0 | n, element);
}

/**
 * [n] IMPLICIT: context tag replacing the element's own tag. `content` is the element's content
 * octets; `constructed` must be true when the underlying type is constructed (SEQUENCE, SET).
 */
export function implicit(n: number, content: Buffer, constructed = false): Buffer {
  if (n < 0 || n > 30) throw new Asn1Error('tag number out of range');
  return tlv((constructed ? 0xa0 : 0x80) | n, content);
}

const pad2 = (n: number) => (n < 10 ? '0' : '') + n;

/**
 * RFC 5280 Time: UTCTime (YYMMDDHHMMSSZ) for 1950-2049, GeneralizedTime (YYYYMMDDHHMMSSZ) from
 * 2050 on. Fractions of a second are dropped (use `truncateToSecond` to keep values in sync).
 */
export function time(d: Date): Buffer {
  const ms = d.getTime();
  if (!Number.isFinite(ms)) throw new Asn1Error('invalid date');
  const y = d.getUTCFullYear();
  if (y < 1950 || y > 9999) throw new Asn1Error('year out of range');
  const rest =
    pad2(d.getUTCMonth() + 1) + pad2(d.getUTCDate()) + pad2(d.getUTCHours()) + pad2(d.getUTCMinutes()) + pad2(d.getUTCSeconds()) + 'Z';
  if (y < 2050) return tlv(Tag.UTC_TIME, Buffer.from(pad2(y % 100) + rest, 'latin1'));
  return tlv(Tag.GENERALIZED_TIME, Buffer.from(String(y) + rest, 'latin1'));
}

/** The date rounded down to a whole second, as it will read back from a certificate. */
export function truncateToSecond(d: Date): Date {
  return new Date(Math.floor(d.getTime() / 1000) * 1000);
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/** One decoded TLV: offsets are absolute positions in `buf`. */
export interface Tlv {
  readonly buf: Buffer;
  readonly tag: number;
  /** Offset of the tag octet. */
  readonly start: number;
  /** Offset of the first content octet. */
  readonly valueStart: number;
  /** Offset just past the last content octet. */
  readonly end: number;
}

/** Content octets of a TLV (a view, not a copy). */
export function value(t: Tlv): Buffer {
  return t.buf.subarray(t.valueStart, t.end);
}

/** The whole encoding of a TLV, tag through content (a view, not a copy). */
export function raw(t: Tlv): Buffer {
  return t.buf.subarray(t.start, t.end);
}

export function isConstructed(t: Tlv): boolean {
  return (t.tag & 0x20) !== 0;
}

/**
 * Reads the TLV at `offset`, which must end at or before `limit`. Strict DER: single-octet tags
 * only (tag numbers up to 30), definite lengths, minimal length encoding, no truncation.
 */
export function readTlv(buf: Buffer, offset = 0, limit = buf.length): Tlv {
  if (offset >= limit) throw new Asn1Error('truncated: missing tag');
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new Asn1Error('multi-octet tags are not supported');
  if (offset + 1 >= limit) throw new Asn1Error('truncated: missing length');
  const first = buf[offset + 1]!;
  let len: number;
  let valueStart: number;
  if (first < 0x80) {
    len = first;
    valueStart = offset + 2;
  } else {
    const n = first & 0x7f;
    if (n === 0) throw new Asn1Error('indefinite length');
    if (n > 4) throw new Asn1Error('length too large');
    if (offset + 2 + n > limit) throw new Asn1Error('truncated: length octets');
    if (buf[offset + 2] === 0) throw new Asn1Error('non-minimal length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[offset + 2 + i]!;
    if (len < 0x80) throw new Asn1Error('non-minimal length');
    valueStart = offset + 2 + n;
  }
  const end = valueStart + len;
  if (end > limit) throw new Asn1Error('truncated: content');
  return { buf, tag, start: offset, valueStart, end };
}

/** Parses a buffer that must hold exactly one TLV (no trailing bytes). */
export function parseDer(buf: Buffer): Tlv {
  const t = readTlv(buf, 0, buf.length);
  if (t.end !== buf.length) throw new Asn1Error('trailing bytes after DER value');
  return t;
}

/** The elements inside a constructed TLV; they must exactly fill its content. */
export function children(t: Tlv): Tlv[] {
  if (!isConstructed(t)) throw new Asn1Error('not a constructed value');
  const out: Tlv[] = [];
  let off = t.valueStart;
  while (off < t.end) {
    const c = readTlv(t.buf, off, t.end);
    out.push(c);
    off = c.end;
  }
  return out;
}

/** Asserts the tag of a TLV and returns it. */
export function expectTag(t: Tlv | undefined, tag: number, what: string): Tlv {
  if (t === undefined) throw new Asn1Error(`missing ${what}`);
  if (t.tag !== tag) throw new Asn1Error(`${what}: expected tag 0x${tag.toString(16)}, got 0x${t.tag.toString(16)}`);
  return t;
}

/** Children of a SEQUENCE after checking its tag. */
export function sequenceOf(t: Tlv | undefined, what: string): Tlv[] {
  return children(expectTag(t, Tag.SEQUENCE, what));
}

/** Decodes an OBJECT IDENTIFIER TLV to dotted notation (strict: minimal sub-identifiers). */
export function readOid(t: Tlv | undefined, what = 'OID'): string {
  const v = value(expectTag(t, Tag.OID, what));
  if (v.length === 0) throw new Asn1Error(`${what}: empty OID`);
  const arcs: Array<number | bigint> = [];
  let acc = 0;
  let big: bigint | undefined;
  let fresh = true;
  for (let i = 0; i < v.length; i++) {
    const b = v[i]!;
    if (fresh && b === 0x80) throw new Asn1Error(`${what}: non-minimal OID arc`);
    fresh = false;
    if (big === undefined && acc < 2 ** 45) acc = acc * 128 + (b & 0x7f);
    else big = ((big ?? BigInt(acc)) << 7n) | BigInt(b & 0x7f);
    if ((b & 0x80) === 0) {
      arcs.push(big ?? acc);
      acc = 0;
      big = undefined;
      fresh = true;
    }
  }
  if (!fresh) throw new Asn1Error(`${what}: truncated OID`);
  const first = arcs[0]!;
  let head: string;
  if (typeof first === 'bigint') head = `2.${first - 80n}`;
  else head = first < 40 ? `0.${first}` : first < 80 ? `1.${first - 40}` : `2.${first - 80}`;
  for (let i = 1; i < arcs.length; i++) head += '.' + String(arcs[i]);
  return head;
}

/** Content of a BIT STRING with no unused bits (keys and signatures). */
export function readBitStringBytes(t: Tlv | undefined, what = 'BIT STRING'): Buffer {
  const v = value(expectTag(t, Tag.BIT_STRING, what));
  if (v.length === 0) throw new Asn1Error(`${what}: empty`);
  if (v[0] !== 0) throw new Asn1Error(`${what}: unused bits not allowed here`);
  return v.subarray(1);
}

/** Value of a small non-negative INTEGER (strict DER: minimal, no negatives). */
export function readSmallInteger(t: Tlv | undefined, what = 'INTEGER'): number {
  const v = value(expectTag(t, Tag.INTEGER, what));
  if (v.length === 0 || v.length > 6) throw new Asn1Error(`${what}: unsupported size`);
  if (v[0]! & 0x80) throw new Asn1Error(`${what}: negative`);
  if (v.length > 1 && v[0] === 0 && (v[1]! & 0x80) === 0) throw new Asn1Error(`${what}: non-minimal`);
  return v.readUIntBE(0, v.length);
}

// ---------------------------------------------------------------------------------------------
// PEM armour
// ---------------------------------------------------------------------------------------------

/** PEM text for DER bytes: base64 in 64-character lines, trailing newline. */
export function pemEncode(label: string, der: Buffer): string {
  const b64 = der.toString('base64');
  let body = '';
  for (let i = 0; i < b64.length; i += 64) body += b64.slice(i, i + 64) + '\n';
  return `-----BEGIN ${label}-----\n${body}-----END ${label}-----\n`;
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END ([A-Z0-9 ]+)-----/g;
const BASE64_BODY = /^[A-Za-z0-9+/\s]*={0,2}\s*$/;

/** One armoured block found in a text. */
export interface PemBlock {
  label: string;
  der: Buffer;
}

/**
 * Every PEM block in `text`, in order. Text outside the blocks is ignored (as OpenSSL does);
 * a block with mismatched BEGIN/END labels, RFC 1421 headers or non-base64 content throws.
 */
export function pemBlocks(text: string): PemBlock[] {
  const out: PemBlock[] = [];
  for (const m of text.matchAll(PEM_BLOCK)) {
    const [, label, body, endLabel] = m;
    if (label !== endLabel) throw new Asn1Error(`PEM labels differ: ${label} / ${endLabel}`);
    if (!BASE64_BODY.test(body!)) throw new Asn1Error(`PEM block ${label} has invalid base64 content`);
    const compact = body!.replace(/\s+/g, '');
    if (compact.length % 4 !== 0) throw new Asn1Error(`PEM block ${label} has truncated base64 content`);
    out.push({ label: label!, der: Buffer.from(compact, 'base64') });
  }
  return out;
}

/**
 * Claim codes that provisiond generates itself for factory labels.
 *
 * Format: 80 random bits as 16 Crockford base32 symbols, then one Crockford check symbol
 * (the 80-bit value mod 37), grouped for humans: `XXXX-XXXX-XXXX-XXXX-C`.
 *
 * The mod-37 check symbol detects every single-symbol substitution and every swap of two adjacent
 * symbols (37 is prime and larger than the 32-symbol alphabet). It is only a typo hint for
 * installers: the service accepts any string as a claim code (factories may register their own).
 *
 * Canonicalisation, for callers that hash codes (see src/provisioning/claim-codes.ts):
 * the service hashes `normalizeClaimCode(code)` (upper-case, spaces and dashes dropped). That alone
 * does not undo the Crockford confusions an installer may type (O for 0, I or L for 1). Callers
 * should hash
 *
 *     normalizeClaimCode(canonicalClaimCode(input) ?? input)
 *
 * and do it the same way at registration and at lookup, so that an arbitrary factory code that
 * happens to look like one of ours is canonicalised identically on both sides.
 */
import { randomBytes } from 'node:crypto';

/** Crockford base32 data symbols (no I, L, O, U). */
export const CROCKFORD_ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
/** Crockford check symbols: the 32 data symbols, then `*~$=U` for the values 32..36. */
export const CROCKFORD_CHECK_ALPHABET = `${CROCKFORD_ALPHABET}*~$=U`;

/** Random bits in a generated code. */
export const CLAIM_CODE_BITS = 80;
const DATA_SYMBOLS = CLAIM_CODE_BITS / 5; // 16
const BYTES = CLAIM_CODE_BITS / 8; // 10

export type ClaimCodeCheck = 'ok' | 'malformed' | 'bad-check';

function checkSymbol(value: bigint): string {
  return CROCKFORD_CHECK_ALPHABET[Number(value % 37n)]!;
}

function group(data: string, check: string): string {
  return `${data.slice(0, 4)}-${data.slice(4, 8)}-${data.slice(8, 12)}-${data.slice(12, 16)}-${check}`;
}

/** 80 random bits as a grouped Crockford code with check symbol. `random` is injectable for tests. */
export function generateClaimCode(random: (n: number) => Buffer = randomBytes): string {
  const bytes = random(BYTES);
  if (bytes.length < BYTES) throw new RangeError(`random(${BYTES}) returned ${bytes.length} bytes`);
  let value = BigInt(`0x${bytes.subarray(0, BYTES).toString('hex')}`);
  const total = value;
  let data = '';
  for (let i = 0; i < DATA_SYMBOLS; i++) {
    data = CROCKFORD_ALPHABET[Number(value & 31n)]! + data;
    value >>= 5n;
  }
  return group(data, checkSymbol(total));
}

/** Crockford decoding of one symbol: case-insensitive, O→0, I/L→1. Check-only symbols give 32..36. */
function symbolValue(ch: string): number {
  const index = CROCKFORD_CHECK_ALPHABET.indexOf(ch === 'O' ? '0' : ch === 'I' || ch === 'L' ? '1' : ch);
  return index;
}

interface Parsed {
  value: bigint;
  data: string;
  check: string;
  checkOk: boolean;
}

/** Parses a code that looks like one of ours; undefined when it does not (wrong length or symbols). */
function parse(code: string): Parsed | undefined {
  const compact = code.replace(/[\s-]+/g, '').toUpperCase();
  if (compact.length !== DATA_SYMBOLS + 1) return undefined;
  let value = 0n;
  let data = '';
  for (let i = 0; i < DATA_SYMBOLS; i++) {
    const v = symbolValue(compact[i]!);
    if (v < 0 || v >= 32) return undefined;
    value = (value << 5n) | BigInt(v);
    data += CROCKFORD_ALPHABET[v]!;
  }
  const c = symbolValue(compact[DATA_SYMBOLS]!);
  if (c < 0) return undefined;
  const check = CROCKFORD_CHECK_ALPHABET[c]!;
  return { value, data, check, checkOk: BigInt(c) === value % 37n };
}

/**
 * Early typo hint for a code typed by an installer. Accepts lower case, spaces and dashes anywhere,
 * and the Crockford confusions O→0, I/L→1. 'malformed': not shaped like one of our codes (which may
 * still be a valid factory-registered code); 'bad-check': shaped like ours but the check fails.
 */
export function checkClaimCode(code: string): ClaimCodeCheck {
  const parsed = parse(code);
  if (!parsed) return 'malformed';
  return parsed.checkOk ? 'ok' : 'bad-check';
}

/**
 * The grouped canonical form (`XXXX-XXXX-XXXX-XXXX-C`, upper case, confusions fixed) when `input` is
 * one of our codes with a valid check symbol, else undefined. See the module comment for hashing.
 */
export function canonicalClaimCode(input: string): string | undefined {
  const parsed = parse(input);
  return parsed?.checkOk ? group(parsed.data, parsed.check) : undefined;
}

/** The 10 random bytes behind one of our codes (check verified), else undefined. */
export function claimCodeBytes(code: string): Buffer | undefined {
  const parsed = parse(code);
  if (!parsed?.checkOk) return undefined;
  return Buffer.from(parsed.value.toString(16).padStart(BYTES * 2, '0'), 'hex');
}

const PAYLOAD_PREFIX = 'provisiond:claim?';

/** Our codes in canonical form without dashes; other codes with spaces and dashes dropped. */
function compactCode(code: string): string {
  return (canonicalClaimCode(code) ?? code).replace(/[\s-]+/g, '');
}

/**
 * The QR text on a label: `provisiond:claim?d=<deviceId>&c=<code without dashes>`, values
 * URL-encoded (so the payload is plain ASCII; ids that match the DeviceId schema need no encoding).
 * Throws a TypeError for a value with a lone UTF-16 surrogate, which no URI can carry.
 */
export function claimPayload(deviceId: string, code: string): string {
  return `${PAYLOAD_PREFIX}d=${uriValue('deviceId', deviceId)}&c=${uriValue('claim code', compactCode(code))}`;
}

function uriValue(what: string, value: string): string {
  try {
    return encodeURIComponent(value);
  } catch {
    // Only a lone UTF-16 surrogate can make encodeURIComponent fail.
    throw new TypeError(`claimPayload: the ${what} is not well-formed Unicode (lone surrogate)`);
  }
}

export interface ClaimPayload {
  /** Absent when the scanned text was a plain claim code. */
  deviceId?: string;
  /** Grouped canonical form for our codes; otherwise the code as it was in the payload. */
  claimCode: string;
}

/**
 * Reads a scanned label: a `provisiond:claim?...` URI (scheme case-insensitive, `c` required,
 * `d` optional), or a plain claim code alone, accepted only when it is one of ours (check valid).
 * Anything else gives undefined.
 */
export function parseClaimPayload(text: string): ClaimPayload | undefined {
  const trimmed = text.trim();
  if (trimmed.slice(0, PAYLOAD_PREFIX.length).toLowerCase() === PAYLOAD_PREFIX) {
    const params = new URLSearchParams(trimmed.slice(PAYLOAD_PREFIX.length));
    const c = params.get('c');
    if (!c) return undefined;
    const d = params.get('d');
    const claimCode = canonicalClaimCode(c) ?? c;
    return d ? { deviceId: d, claimCode } : { claimCode };
  }
  const canonical = canonicalClaimCode(trimmed);
  return canonical ? { claimCode: canonical } : undefined;
}

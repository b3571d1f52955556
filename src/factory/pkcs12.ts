/**
 * PKCS#12 bundles for devices that cannot make their own keys: the service generates the key pair
 * and the certificate elsewhere (native crypto) and hands the factory station one password-
 * protected `.p12` per device. This module only builds and reads those bundles.
 *
 * Bundle layout (what OpenSSL 3 writes by default, and what `openssl pkcs12` reads WITHOUT
 * `-legacy`):
 *
 *   PFX v3, password integrity mode
 *     authSafe = data(AuthenticatedSafe)
 *       [0] encryptedData: SafeContents = certBag(leaf, friendlyName + localKeyID),
 *                                         certBag(chain[0]), certBag(chain[1]), ...
 *       [1] data:          SafeContents = pkcs8ShroudedKeyBag(key, friendlyName + localKeyID)
 *     macData = HMAC-SHA-256, key from the RFC 7292 appendix B KDF with SHA-256 (ID 3)
 *
 *   key and certificates: PBES2 = PBKDF2-HMAC-SHA-256 (16-byte salt) + AES-256-CBC
 *   iterations: 2048 for PBKDF2 and for the MAC KDF (OpenSSL 3's PKCS12_DEFAULT_ITER)
 *   localKeyID: SHA-1 of the leaf certificate DER (an identifier, as OpenSSL does; not security)
 *
 * Why not `forge.pkcs12.toPkcs12Asn1` (node-forge 1.4): it cannot produce this bundle.
 *   - it takes the key as a forge key and wraps it with `pki.wrapRsaPrivateKey`: RSA only.
 *     `forge.pki.privateKeyFromPem` on an EC P-256 PKCS#8 key throws "ASN.1 object does not
 *     contain an RSAPrivateKey", and `forge.pki.certificateFromPem` on a certificate with an EC
 *     public key throws "Cannot read public key. OID is not RSA.";
 *   - it stores the certificates in a plain `data` SafeContents (unencrypted);
 *   - its MAC is hard-wired to HMAC-SHA-1 (its reader accepts SHA-256 MACs, its writer cannot
 *     produce them).
 * So the structure is assembled here with forge's ASN.1 builder, around forge's crypto pieces:
 *   - `forge.pki.encryptPrivateKeyInfo(asn1, password, { algorithm: 'aes256', prfAlgorithm:
 *     'sha256' })` is a generic PBES2 encryptor: it DER-encodes whatever ASN.1 it is given and
 *     returns SEQUENCE { AlgorithmIdentifier(PBES2 ...), OCTET STRING ciphertext }. Given the
 *     PKCS#8 PrivateKeyInfo (parsed with `forge.asn1.fromDer` from the DER Node exports, so any
 *     key type works, EC included) that is exactly the EncryptedPrivateKeyInfo of the shrouded
 *     key bag; given the certificates' SafeContents, its two parts are the
 *     contentEncryptionAlgorithm and encryptedContent of the PKCS#7 EncryptedData.
 *   - `forge.pki.decryptPrivateKeyInfo` is the same trick in reverse for the reader (it also
 *     understands the legacy PKCS#12 PBE algorithms, so support can read old bundles).
 *   - `forge.pkcs12.generateKey(password, salt, 3, iterations, 32, sha256)` is the RFC 7292 MAC KDF
 *     (Node has no equivalent); the HMAC itself is Node's.
 *
 * Passwords must be printable ASCII. PBES2 feeds the password's bytes to PBKDF2 while the MAC KDF
 * uses its UTF-16BE (BMPString) form; implementations disagree on how non-ASCII passwords map to
 * those (forge passes JS strings as Latin-1 bytes, OpenSSL converts UTF-8, Windows differs
 * again), so for ASCII alone all of them agree. generateBundlePassword() produces such passwords.
 */
import { X509Certificate, createHash, createHmac, createPrivateKey, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';
import forge from 'node-forge';
import { pemBlocks, pemEncode } from '../ca/asn1.js';
import { errorFamily } from '../errors.js';

export const Pkcs12Error = errorFamily('Pkcs12Error', {
  PKCS12_INPUT_INVALID: {
    status: 500,
    description:
      'The key, certificates or password given to build a PKCS#12 bundle are unusable (unparsable, key does not match the certificate, chain out of order, password not printable ASCII).',
  },
  PKCS12_BAD_PASSWORD: { status: 400, description: 'The password does not open the PKCS#12 bundle (its MAC does not verify).' },
  PKCS12_MALFORMED: { status: 400, description: 'The data is not a PKCS#12 bundle of the expected form.' },
});
export type Pkcs12Error = InstanceType<typeof Pkcs12Error>;

// ---------------------------------------------------------------------------------------------
// Bundle passwords
// ---------------------------------------------------------------------------------------------

/** Crockford base32 symbols (no I, L, O, U). */
const CROCKFORD_ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
/** Random bits in a bundle password. */
export const BUNDLE_PASSWORD_BITS = 128;
const PASSWORD_BYTES = BUNDLE_PASSWORD_BITS / 8;
/** ceil(128 / 5): the first symbol carries the top 3 bits (0..7), the other 25 five bits each. */
const PASSWORD_SYMBOLS = Math.ceil(BUNDLE_PASSWORD_BITS / 5);

/**
 * 128 random bits as a Crockford base32 number of 26 symbols (most significant first, so the
 * first symbol is 0-7), grouped in fours with dashes: `XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XX`.
 * Upper-case, no I/L/O/U; the exact string is the PKCS#12 password. `random` is injectable for
 * tests.
 */
export function generateBundlePassword(random: (n: number) => Buffer = randomBytes): string {
  const bytes = random(PASSWORD_BYTES);
  if (bytes.length < PASSWORD_BYTES) throw new RangeError(`random(${PASSWORD_BYTES}) returned ${bytes.length} bytes`);
  let value = BigInt(`0x${bytes.subarray(0, PASSWORD_BYTES).toString('hex')}`);
  let symbols = '';
  for (let i = 0; i < PASSWORD_SYMBOLS; i++) {
    symbols = CROCKFORD_ALPHABET[Number(value & 31n)]! + symbols;
    value >>= 5n;
  }
  return symbols.match(/.{1,4}/g)!.join('-');
}

// ---------------------------------------------------------------------------------------------
// ASN.1 helpers (forge's builder; values are forge "binary strings", one char per byte)
// ---------------------------------------------------------------------------------------------

const { asn1 } = forge;
type Asn1 = forge.asn1.Asn1;

const OIDS = {
  data: '1.2.840.113549.1.7.1',
  encryptedData: '1.2.840.113549.1.7.6',
  keyBag: '1.2.840.113549.1.12.10.1.1',
  pkcs8ShroudedKeyBag: '1.2.840.113549.1.12.10.1.2',
  certBag: '1.2.840.113549.1.12.10.1.3',
  x509Certificate: '1.2.840.113549.1.9.22.1',
  friendlyName: '1.2.840.113549.1.9.20',
  localKeyId: '1.2.840.113549.1.9.21',
} as const;

/** MAC digests readPkcs12 verifies (buildPkcs12 writes SHA-256). */
const MAC_DIGESTS: Record<string, { node: string; forge: () => forge.md.MessageDigest }> = {
  '1.3.14.3.2.26': { node: 'sha1', forge: () => forge.md.sha1.create() },
  '2.16.840.1.101.3.4.2.1': { node: 'sha256', forge: () => forge.md.sha256.create() },
  '2.16.840.1.101.3.4.2.2': { node: 'sha384', forge: () => forge.md.sha384.create() },
  '2.16.840.1.101.3.4.2.3': { node: 'sha512', forge: () => forge.md.sha512.create() },
};
const SHA256_OID = '2.16.840.1.101.3.4.2.1';

/** PBKDF2 and MAC-KDF iterations (OpenSSL 3's default; the 128-bit passwords need no stretching). */
export const PKCS12_ITERATIONS = 2048;
const SALT_BYTES = 16;
const PBES2_OPTIONS: forge.pki.EncryptionOptions = {
  algorithm: 'aes256',
  prfAlgorithm: 'sha256',
  count: PKCS12_ITERATIONS,
  saltSize: SALT_BYTES,
};

const U = asn1.Class.UNIVERSAL;
const seq = (items: Asn1[]): Asn1 => asn1.create(U, asn1.Type.SEQUENCE, true, items);
const setOf = (items: Asn1[]): Asn1 => asn1.create(U, asn1.Type.SET, true, items);
const oid = (dotted: string): Asn1 => asn1.create(U, asn1.Type.OID, false, asn1.oidToDer(dotted).getBytes());
const octets = (bytes: string): Asn1 => asn1.create(U, asn1.Type.OCTETSTRING, false, bytes);
const int = (n: number): Asn1 => asn1.create(U, asn1.Type.INTEGER, false, asn1.integerToDer(n).getBytes());
const nul = (): Asn1 => asn1.create(U, asn1.Type.NULL, false, '');
const explicit0 = (inner: Asn1): Asn1 => asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, [inner]);
const toBinary = (buf: Buffer): string => buf.toString('binary');
const fromBinary = (bytes: string): Buffer => Buffer.from(bytes, 'binary');
const der = (node: Asn1): string => asn1.toDer(node).getBytes();

/** ContentInfo { contentType, [0] EXPLICIT content }. */
function contentInfo(type: string, content: Asn1): Asn1 {
  return seq([oid(type), explicit0(content)]);
}

/** PBES2 (PBKDF2-HMAC-SHA-256, AES-256-CBC) of DER(node): [AlgorithmIdentifier, OCTET STRING]. */
function pbes2Encrypt(node: Asn1, password: string): { algorithm: Asn1; ciphertext: Asn1 } {
  const epki = forge.pki.encryptPrivateKeyInfo(node, password, { ...PBES2_OPTIONS });
  const [algorithm, ciphertext] = epki.value as Asn1[];
  return { algorithm: algorithm!, ciphertext: ciphertext! };
}

/** HMAC over the AuthenticatedSafe with the RFC 7292 appendix B key (ID 3 = MAC). */
function pkcs12Mac(authSafe: string, password: string, salt: string, iterations: number, digestOid: string): Buffer {
  const digest = MAC_DIGESTS[digestOid];
  if (digest === undefined) throw new Pkcs12Error('PKCS12_MALFORMED', `unsupported MAC digest ${digestOid}`);
  const md = digest.forge();
  const key = forge.pkcs12.generateKey(password, forge.util.createBuffer(salt), 3, iterations, md.digestLength, md);
  return createHmac(digest.node, fromBinary(key.getBytes())).update(fromBinary(authSafe)).digest();
}

function checkPassword(password: unknown): asserts password is string {
  if (typeof password !== 'string' || !/^[\x20-\x7e]+$/.test(password)) {
    throw new Pkcs12Error('PKCS12_INPUT_INVALID', 'the bundle password must be a non-empty string of printable ASCII');
  }
}

// ---------------------------------------------------------------------------------------------
// Building
// ---------------------------------------------------------------------------------------------

export interface Pkcs12Input {
  /** The device private key, PKCS#8 PEM (EC P-256 and RSA; any key type Node exports as PKCS#8 works). */
  keyPem: string;
  /** The device certificate for that key. */
  certPem: string;
  /** Its issuing CA up to the root, issuer first (as CertificateAuthority.chainPems); may be empty. */
  chainPems: readonly string[];
  /** Printable ASCII, e.g. generateBundlePassword(). */
  password: string;
  /** friendlyName of the key and the device certificate (e.g. the device id); '' for none. */
  friendlyName: string;
}

function parseCertificate(pem: string, what: string): X509Certificate {
  let blocks;
  try {
    blocks = pemBlocks(pem).filter((b) => b.label === 'CERTIFICATE');
  } catch (err) {
    throw new Pkcs12Error('PKCS12_INPUT_INVALID', `${what}: ${(err as Error).message}`, { cause: err });
  }
  if (blocks.length !== 1) throw new Pkcs12Error('PKCS12_INPUT_INVALID', `${what}: expected one CERTIFICATE PEM block, found ${blocks.length}`);
  try {
    return new X509Certificate(blocks[0]!.der);
  } catch (err) {
    throw new Pkcs12Error('PKCS12_INPUT_INVALID', `${what} does not parse: ${(err as Error).message}`, { cause: err });
  }
}

/** PKCS#8 expected; Node also takes unencrypted PKCS#1/SEC1 PEM, and the bag holds its PKCS#8 export. */
function parseKey(pem: string): KeyObject {
  try {
    return createPrivateKey({ key: pem, format: 'pem' });
  } catch (err) {
    throw new Pkcs12Error('PKCS12_INPUT_INVALID', `the private key does not parse: ${(err as Error).message}`, { cause: err });
  }
}

/** DER PKCS#12 (see the module comment for the exact layout and algorithms). */
export function buildPkcs12(input: Pkcs12Input): Buffer {
  const { keyPem, certPem, chainPems, password, friendlyName } = input;
  checkPassword(password);
  if (typeof friendlyName !== 'string') throw new Pkcs12Error('PKCS12_INPUT_INVALID', 'friendlyName must be a string');

  const key = parseKey(keyPem);
  const leaf = parseCertificate(certPem, 'the certificate');
  if (!leaf.checkPrivateKey(key)) throw new Pkcs12Error('PKCS12_INPUT_INVALID', 'the private key does not match the certificate');
  const chain = chainPems.map((pem, i) => parseCertificate(pem, `chain certificate ${i}`));
  // A wrong chain would make a bundle that installs but does not validate: refuse it here.
  [leaf, ...chain].forEach((cert, i) => {
    const issuer = chain[i];
    if (issuer !== undefined && !(cert.checkIssued(issuer) && cert.verify(issuer.publicKey))) {
      throw new Pkcs12Error('PKCS12_INPUT_INVALID', `chain certificate ${i} did not issue ${i === 0 ? 'the certificate' : `chain certificate ${i - 1}`}`);
    }
  });

  // friendlyName (BMPString: forge writes each UTF-16 code unit) and localKeyID pair the key with
  // the leaf certificate for importers (Windows, macOS, Java, OpenSSL).
  const localKeyId = createHash('sha1').update(leaf.raw).digest();
  const attributes = setOf([
    ...(friendlyName === '' ? [] : [seq([oid(OIDS.friendlyName), setOf([asn1.create(U, asn1.Type.BMPSTRING, false, friendlyName)])])]),
    seq([oid(OIDS.localKeyId), setOf([octets(toBinary(localKeyId))])]),
  ]);

  const certBags = [leaf, ...chain].map((cert, i) =>
    seq([
      oid(OIDS.certBag),
      explicit0(seq([oid(OIDS.x509Certificate), explicit0(octets(toBinary(cert.raw)))])),
      ...(i === 0 ? [attributes] : []),
    ]),
  );
  // EncryptedData { version 0, EncryptedContentInfo { data, algorithm, [0] IMPLICIT ciphertext } }
  const certs = pbes2Encrypt(seq(certBags), password);
  const encryptedCerts = contentInfo(
    OIDS.encryptedData,
    seq([int(0), seq([oid(OIDS.data), certs.algorithm, asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, false, certs.ciphertext.value as string)])]),
  );

  // The PKCS#8 PrivateKeyInfo exactly as Node exports it: forge never interprets the key.
  const privateKeyInfo = asn1.fromDer(toBinary(key.export({ type: 'pkcs8', format: 'der' })));
  const shrouded = forge.pki.encryptPrivateKeyInfo(privateKeyInfo, password, { ...PBES2_OPTIONS });
  const keyBag = seq([oid(OIDS.pkcs8ShroudedKeyBag), explicit0(shrouded), attributes]);
  const keyData = contentInfo(OIDS.data, octets(der(seq([keyBag]))));

  const authSafe = der(seq([encryptedCerts, keyData]));
  const macSalt = toBinary(randomBytes(SALT_BYTES));
  const mac = pkcs12Mac(authSafe, password, macSalt, PKCS12_ITERATIONS, SHA256_OID);
  const pfx = seq([
    int(3),
    contentInfo(OIDS.data, octets(authSafe)),
    seq([seq([seq([oid(SHA256_OID), nul()]), octets(toBinary(mac))]), octets(macSalt), int(PKCS12_ITERATIONS)]),
  ]);
  return fromBinary(der(pfx));
}

// ---------------------------------------------------------------------------------------------
// Reading (tests and support)
// ---------------------------------------------------------------------------------------------

export interface Pkcs12Contents {
  /** PKCS#8 PEM. */
  keyPem: string;
  /** The certificate whose public key is the key's. */
  certPem: string;
  /** The other certificates, in bundle order. */
  chainPems: string[];
  /** friendlyName of the key bag, when present. */
  friendlyName?: string;
}

function malformed(message: string, cause?: unknown): Pkcs12Error {
  return new Pkcs12Error('PKCS12_MALFORMED', `not a usable PKCS#12 bundle: ${message}`, cause === undefined ? undefined : { cause });
}

function children(node: Asn1 | undefined, what: string): Asn1[] {
  if (node === undefined || !Array.isArray(node.value)) throw malformed(`${what} is missing or not constructed`);
  return node.value;
}

function primitive(node: Asn1 | undefined, type: number, what: string): string {
  if (node === undefined || node.tagClass !== U || node.type !== type) throw malformed(`${what} is missing or has the wrong type`);
  // BER: a constructed OCTET STRING is the concatenation of its parts
  if (Array.isArray(node.value)) return node.value.map((part) => primitive(part, type, what)).join('');
  return node.value;
}

function readOid(node: Asn1 | undefined, what: string): string {
  return asn1.derToOid(primitive(node, asn1.Type.OID, what));
}

/** [0] EXPLICIT wrapper -> its single element. */
function unwrap0(node: Asn1 | undefined, what: string): Asn1 {
  if (node === undefined || node.tagClass !== asn1.Class.CONTEXT_SPECIFIC || node.type !== 0) throw malformed(`${what}: expected [0]`);
  const inner = children(node, what)[0];
  if (inner === undefined) throw malformed(`${what} is empty`);
  return inner;
}

function parseBer(bytes: string, what: string): Asn1 {
  try {
    return asn1.fromDer(bytes, false);
  } catch (err) {
    throw malformed(`${what} does not parse (${(err as Error).message})`, err);
  }
}

/** forge.pki.decryptPrivateKeyInfo on any [algorithm, ciphertext] pair; null when it does not decrypt. */
function pbeDecrypt(algorithm: Asn1, ciphertext: string, password: string): Asn1 | null {
  try {
    return forge.pki.decryptPrivateKeyInfo(seq([algorithm, octets(ciphertext)]), password);
  } catch {
    return null;
  }
}

interface RawBag {
  type: string;
  value: Asn1;
  friendlyName: string | undefined;
}

function readBags(safeContents: Asn1): RawBag[] {
  return children(safeContents, 'SafeContents').map((bag) => {
    const [id, value, attrs] = children(bag, 'SafeBag');
    let friendlyName: string | undefined;
    for (const attr of attrs === undefined ? [] : children(attrs, 'bag attributes')) {
      const [attrId, values] = children(attr, 'bag attribute');
      if (readOid(attrId, 'attribute id') === OIDS.friendlyName) friendlyName = primitive(children(values, 'friendlyName')[0], asn1.Type.BMPSTRING, 'friendlyName');
    }
    return { type: readOid(id, 'bag id'), value: unwrap0(value, 'bag value'), friendlyName };
  });
}

/**
 * Opens a bundle: verifies the MAC (HMAC-SHA-1/256/384/512; a bundle without MAC is refused),
 * decrypts (PBES2 or the legacy PKCS#12 PBE schemes forge knows) and returns the key as PKCS#8
 * PEM, the certificate matching it and the other certificates. Throws Pkcs12Error
 * PKCS12_BAD_PASSWORD for a wrong password, PKCS12_MALFORMED otherwise.
 */
export function readPkcs12(der: Buffer, password: string): Pkcs12Contents {
  if (typeof password !== 'string') throw new TypeError('password must be a string');
  const pfx = children(parseBer(toBinary(der), 'PFX'), 'PFX');
  const [version, authSafeInfo, macData] = pfx;
  if (asn1.derToInteger(primitive(version, asn1.Type.INTEGER, 'PFX version')) !== 3) throw malformed('PFX version is not 3');
  const [authType, authContent] = children(authSafeInfo, 'authSafe');
  if (readOid(authType, 'authSafe contentType') !== OIDS.data) throw malformed('only password integrity mode (authSafe of type data) is supported');
  const authSafe = primitive(unwrap0(authContent, 'authSafe content'), asn1.Type.OCTETSTRING, 'authSafe content');

  if (macData === undefined) throw malformed('the bundle has no MAC (no password integrity)');
  const [digestInfo, macSalt, macIterations] = children(macData, 'macData');
  const [digestAlg, digest] = children(digestInfo, 'MAC DigestInfo');
  const digestOid = readOid(children(digestAlg, 'MAC digest algorithm')[0], 'MAC digest algorithm');
  const iterations = macIterations === undefined ? 1 : asn1.derToInteger(primitive(macIterations, asn1.Type.INTEGER, 'MAC iterations'));
  if (!(iterations >= 1 && iterations <= 1_000_000)) throw malformed(`MAC iteration count ${iterations} is out of range`);
  const expected = fromBinary(primitive(digest, asn1.Type.OCTETSTRING, 'MAC'));
  const actual = pkcs12Mac(authSafe, password, primitive(macSalt, asn1.Type.OCTETSTRING, 'MAC salt'), iterations, digestOid);
  if (expected.length !== actual.length || !timingSafeEqual(expected, actual)) {
    throw new Pkcs12Error('PKCS12_BAD_PASSWORD', 'wrong password: the PKCS#12 MAC does not verify');
  }

  const bags: RawBag[] = [];
  for (const info of children(parseBer(authSafe, 'AuthenticatedSafe'), 'AuthenticatedSafe')) {
    const [type, content] = children(info, 'ContentInfo');
    const contentType = readOid(type, 'ContentInfo contentType');
    if (contentType === OIDS.data) {
      bags.push(...readBags(parseBer(primitive(unwrap0(content, 'data'), asn1.Type.OCTETSTRING, 'data'), 'SafeContents')));
    } else if (contentType === OIDS.encryptedData) {
      const [, eci] = children(unwrap0(content, 'encryptedData'), 'EncryptedData');
      const [, algorithm, encrypted] = children(eci, 'EncryptedContentInfo');
      if (algorithm === undefined || encrypted === undefined || encrypted.tagClass !== asn1.Class.CONTEXT_SPECIFIC) {
        throw malformed('EncryptedContentInfo is incomplete');
      }
      const ciphertext = Array.isArray(encrypted.value)
        ? encrypted.value.map((p) => primitive(p, asn1.Type.OCTETSTRING, 'encryptedContent')).join('')
        : encrypted.value;
      const safeContents = pbeDecrypt(algorithm, ciphertext, password);
      if (safeContents === null) throw new Pkcs12Error('PKCS12_BAD_PASSWORD', 'the MAC verifies but the certificates do not decrypt with this password');
      bags.push(...readBags(safeContents));
    } else {
      throw malformed(`unsupported ContentInfo type ${contentType} (public-key privacy mode?)`);
    }
  }

  const keys: { key: KeyObject; friendlyName: string | undefined }[] = [];
  const certs: X509Certificate[] = [];
  for (const bag of bags) {
    if (bag.type === OIDS.pkcs8ShroudedKeyBag || bag.type === OIDS.keyBag) {
      let info: Asn1 | null = bag.value;
      if (bag.type === OIDS.pkcs8ShroudedKeyBag) {
        const [algorithm, ciphertext] = children(bag.value, 'EncryptedPrivateKeyInfo');
        if (algorithm === undefined) throw malformed('EncryptedPrivateKeyInfo is incomplete');
        info = pbeDecrypt(algorithm, primitive(ciphertext, asn1.Type.OCTETSTRING, 'encrypted key'), password);
        if (info === null) throw new Pkcs12Error('PKCS12_BAD_PASSWORD', 'the MAC verifies but the key does not decrypt with this password');
      }
      try {
        keys.push({ key: createPrivateKey({ key: fromBinary(asn1.toDer(info).getBytes()), format: 'der', type: 'pkcs8' }), friendlyName: bag.friendlyName });
      } catch (err) {
        throw malformed(`the private key does not parse (${(err as Error).message})`, err);
      }
    } else if (bag.type === OIDS.certBag) {
      const [certId, certValue] = children(bag.value, 'CertBag');
      if (readOid(certId, 'certId') !== OIDS.x509Certificate) continue; // SDSI certificates: not ours
      const certDer = primitive(unwrap0(certValue, 'certValue'), asn1.Type.OCTETSTRING, 'certValue');
      try {
        certs.push(new X509Certificate(fromBinary(certDer)));
      } catch (err) {
        throw malformed(`a certificate does not parse (${(err as Error).message})`, err);
      }
    }
    // CRL and secret bags carry nothing we return
  }

  if (keys.length !== 1) throw malformed(`expected one private key, found ${keys.length}`);
  const { key, friendlyName } = keys[0]!;
  const leafIndex = certs.findIndex((c) => c.checkPrivateKey(key));
  if (leafIndex < 0) throw malformed('no certificate matches the private key');
  const pem = (c: X509Certificate): string => pemEncode('CERTIFICATE', c.raw);
  return {
    keyPem: key.export({ type: 'pkcs8', format: 'pem' }) as string,
    certPem: pem(certs[leafIndex]!),
    chainPems: certs.filter((_, i) => i !== leafIndex).map(pem),
    ...(friendlyName === undefined ? {} : { friendlyName }),
  };
}

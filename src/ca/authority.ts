/**
 * The certificate authority: owns the root and issuing CA material (generated on first start, or
 * operator-supplied), issues device, server and signer certificates, and keeps the service's own
 * TLS/signing identities fresh.
 */
import crypto, { X509Certificate, type KeyObject } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Clock } from '../clock.js';
import { pemBlocks, pemEncode, truncateToSecond } from './asn1.js';
import {
  CertificateIssuer,
  KeyUsage,
  OID,
  buildCertificate,
  caExtensions,
  inspectSpki,
  ipBytes,
  keyIdentifier,
  orgName,
  randomSerial,
  readCertificate,
  readKeyUsage,
  readSubjectAltNames,
  readSubjectKeyIdentifier,
  signerFor,
  type IssuedCertificate,
} from './certificate.js';
import { buildCrl, crlToPem, type CrlInput, type CrlIssuer } from './crl.js';
import { parseCsr, type ParsedCsr } from './csr.js';
import { CaError } from './errors.js';
import { checkKeyPermissions, decodePrivateKey, encodePrivateKey } from './key-files.js';

/** A pending CA key (`<name>.key.new`) younger than this may be another process creating the CA. */
const INTERRUPTED_KEY_AGE_MS = 30_000;

export interface CaOptions {
  /** Directory of the generated CA material and of service identities (created 0700). */
  dir: string;
  /** O= of the generated CA and of device subjects. */
  organization: string;
  deviceValidityDays: number;
  clock: Clock;
  /** Operator-supplied CA instead of the generated one. */
  external?: { issuingCertFile: string; issuingKeyFile: string; rootCertFile: string };
  /**
   * Keys under `dir` are written encrypted with it (PKCS#8, PBES2/PBKDF2 + AES-256-CBC), plaintext
   * ones found there are encrypted at start, and encrypted ones need it. An operator-supplied
   * issuing key may be encrypted with it too (it is never rewritten).
   */
  keyPassphrase?: string;
  /** Told about every key generated or encrypted in place (for the audit log); awaited, must not throw. */
  onKeyEvent?: (event: CaKeyEvent) => void | Promise<void>;
}

/**
 * A key the CA created ('key.generate'), encrypted in place ('key.encrypt'), or set aside because
 * its creation was interrupted before its certificate was written ('key.discard').
 */
export interface CaKeyEvent {
  action: 'key.generate' | 'key.encrypt' | 'key.discard';
  /** 'root', 'issuing' or the service identity's name. */
  name: string;
  file: string;
}

export type ServiceIdentitySpec =
  | { kind: 'server'; hostnames: string[]; ipAddresses: string[] }
  | { kind: 'signer'; commonName: string };

export interface ServiceIdentity {
  keyPem: string;
  certPem: string;
  /** The certificate's issuing CA up to the root. */
  chainPems: string[];
}

/** Validity of service identities created by serviceIdentity(). */
export const SERVICE_IDENTITY_VALIDITY_DAYS = 365;
/** serviceIdentity() renews certificates with this many days or fewer left. */
export const SERVICE_IDENTITY_RENEW_DAYS = 30;

const DAY_MS = 86_400_000;
const SERVICE_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
const RESERVED_NAMES = new Set(['root', 'issuing']);

interface Loaded {
  issuer: CertificateIssuer;
  /** The issuing CA as CRL signer; undefined when its keyUsage lacks cRLSign. */
  crlIssuer: CrlIssuer | undefined;
  issuingCert: X509Certificate;
  rootPem: string;
  issuingPem: string;
  chainPems: string[];
}

export class CertificateAuthority {
  private readonly opts: CaOptions;
  private state: Loaded | undefined;
  private readonly pendingIdentities = new Map<string, Promise<ServiceIdentity>>();

  constructor(opts: CaOptions) {
    this.opts = opts;
  }

  /** Root CA certificate, PEM. */
  get rootPem(): string {
    return this.loaded().rootPem;
  }

  /** Issuing CA certificate, PEM. */
  get issuingPem(): string {
    return this.loaded().issuingPem;
  }

  /** Issuing first, root last (with any operator-supplied intermediates in between). */
  get chainPems(): string[] {
    return [...this.loaded().chainPems];
  }

  /**
   * Creates `dir` (0700) if missing, then loads the CA material (creating root and issuing CA on
   * first start unless `external` is set) and checks it. Rejects with CA_KEY_PERMISSIONS or
   * CA_MATERIAL_INVALID.
   */
  async start(): Promise<void> {
    if (this.state !== undefined) return;
    const { dir, external, deviceValidityDays } = this.opts;
    if (!(Number.isFinite(deviceValidityDays) && deviceValidityDays > 0)) throw new RangeError('deviceValidityDays must be positive');
    const created = await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    if (created !== undefined) await fs.chmod(dir, 0o700);

    let material: { issuingCertPem: string; issuingKey: KeyObject; rootBundlePem: string };
    if (external !== undefined) {
      material = {
        issuingCertPem: await readMaterial(external.issuingCertFile),
        issuingKey: await this.loadKey(external.issuingKeyFile, 'issuing', false),
        rootBundlePem: await readMaterial(external.rootCertFile),
      };
    } else {
      material = await this.loadOrCreateOwnCa();
    }
    this.state = this.checkMaterial(material.issuingCertPem, material.issuingKey, material.rootBundlePem);
  }

  /** Parses and verifies a PKCS#10 request (see csr.ts); throws CaError only. */
  parseCsr(pem: string): ParsedCsr {
    return parseCsr(pem);
  }

  /** Device identity. Subject and SAN come ONLY from arguments, never from a CSR. */
  issueDevice(req: { deviceId: string; spkiDer: Buffer }): IssuedCertificate {
    const { issuer } = this.loaded();
    return issuer.device(req.deviceId, req.spkiDer, issuer.validity(this.opts.clock.now(), this.opts.deviceValidityDays));
  }

  /** TLS server certificate for the given names (CN = first host name). */
  issueServer(req: { hostnames: string[]; ipAddresses: string[]; spkiDer: Buffer; validityDays: number }): IssuedCertificate {
    const { issuer } = this.loaded();
    return issuer.server(req.hostnames, req.ipAddresses, req.spkiDer, issuer.validity(this.opts.clock.now(), checkDays(req.validityDays)));
  }

  /** Signing certificate (digitalSignature, no EKU), e.g. for the configuration signer. */
  issueSigner(req: { commonName: string; spkiDer: Buffer; validityDays: number }): IssuedCertificate {
    const { issuer } = this.loaded();
    return issuer.signer(req.commonName, req.spkiDer, issuer.validity(this.opts.clock.now(), checkDays(req.validityDays)));
  }

  /**
   * A DER X.509 v2 CRL (RFC 5280 §5) signed by the issuing CA: its signature algorithm, its
   * subject Name verbatim, revokedCertificates omitted when empty, reasonCode entry extensions
   * (none for 'unspecified'), authorityKeyIdentifier (the issuing SKI) and cRLNumber. Serials are
   * hex (IssuedCertificate.serial). Throws TypeError/RangeError for invalid input and
   * CA_MATERIAL_INVALID when the issuing certificate's keyUsage does not allow CRL signing.
   */
  crl(input: CrlInput): Buffer {
    const { crlIssuer } = this.loaded();
    if (crlIssuer === undefined) throw new CaError('CA_MATERIAL_INVALID', 'the issuing certificate may not sign CRLs (keyUsage lacks cRLSign)');
    return buildCrl(input, crlIssuer);
  }

  /** crl() as PEM ("X509 CRL"). */
  crlPem(input: CrlInput): string {
    return crlToPem(this.crl(input));
  }

  /**
   * Loads <dir>/<name>.key + <name>.pem if present, issued by the current issuing CA, valid for
   * more than 30 more days and matching `spec`; otherwise generates a P-256 key, issues a
   * certificate valid 365 days, and writes the key (0600) and certificate. Concurrent calls for
   * the same name share one result.
   */
  serviceIdentity(name: string, spec: ServiceIdentitySpec): Promise<ServiceIdentity> {
    if (this.state === undefined) return Promise.reject(new Error('CertificateAuthority.start() has not completed'));
    if (!SERVICE_NAME.test(name) || RESERVED_NAMES.has(name)) {
      return Promise.reject(new CaError('ISSUE_REQUEST_INVALID', `invalid service identity name: ${name}`));
    }
    const pending = this.pendingIdentities.get(name);
    if (pending !== undefined) return pending;
    const p = this.loadOrCreateIdentity(name, spec).finally(() => this.pendingIdentities.delete(name));
    this.pendingIdentities.set(name, p);
    return p;
  }

  // -------------------------------------------------------------------------------------------

  private loaded(): Loaded {
    if (this.state === undefined) throw new Error('CertificateAuthority.start() has not completed');
    return this.state;
  }

  private async loadOrCreateIdentity(name: string, spec: ServiceIdentitySpec): Promise<ServiceIdentity> {
    const state = this.loaded();
    const keyFile = path.join(this.opts.dir, `${name}.key`);
    const certFile = path.join(this.opts.dir, `${name}.pem`);
    const now = this.opts.clock.now();

    if ((await exists(keyFile)) && (await exists(certFile))) {
      // a key that does not decrypt is an error (never silently replaced); one that decrypts but
      // no longer fits is replaced below
      const key = await this.loadKey(keyFile, name, true);
      const keyPem = key.export({ type: 'pkcs8', format: 'pem' }) as string;
      const certPem = await fs.readFile(certFile, 'utf8');
      if (this.identityStillGood(keyPem, certPem, spec, now)) return { keyPem, certPem, chainPems: [...state.chainPems] };
    }

    const { publicKey, privateKey } = await generateP256();
    const spkiDer = publicKey.export({ type: 'spki', format: 'der' });
    const issued =
      spec.kind === 'server'
        ? this.issueServer({ hostnames: spec.hostnames, ipAddresses: spec.ipAddresses, spkiDer, validityDays: SERVICE_IDENTITY_VALIDITY_DAYS })
        : this.issueSigner({ commonName: spec.commonName, spkiDer, validityDays: SERVICE_IDENTITY_VALIDITY_DAYS });
    const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    await writeFileAtomic(keyFile, encodePrivateKey(privateKey, this.opts.keyPassphrase), 0o600);
    await writeFileAtomic(certFile, issued.pem, 0o644);
    await this.opts.onKeyEvent?.({ action: 'key.generate', name, file: keyFile });
    return { keyPem, certPem: issued.pem, chainPems: [...state.chainPems] };
  }

  private identityStillGood(keyPem: string, certPem: string, spec: ServiceIdentitySpec, now: Date): boolean {
    const { issuingCert } = this.loaded();
    try {
      const cert = new X509Certificate(certPem);
      const key = crypto.createPrivateKey(keyPem);
      if (!cert.checkPrivateKey(key)) return false;
      if (!cert.checkIssued(issuingCert) || !cert.verify(issuingCert.publicKey)) return false;
      if (new Date(cert.validFrom).getTime() > now.getTime()) return false;
      if (new Date(cert.validTo).getTime() - now.getTime() <= SERVICE_IDENTITY_RENEW_DAYS * DAY_MS) return false;
      const info = readCertificate(cert.raw);
      if (spec.kind === 'signer') {
        // re-issued when it lacks the config-signing EKU (certificates from before it existed)
        return info.subjectDer.equals(orgName(this.opts.organization, spec.commonName)) && (cert.keyUsage ?? []).includes(OID.configSigning);
      }
      const san = info.extensions.get(OID.subjectAltName);
      if (san === undefined) return false;
      const want = [...spec.hostnames.map((h) => 'dns:' + h.toLowerCase()), ...spec.ipAddresses.map((ip) => 'ip:' + ipBytes(ip).toString('hex'))];
      return sameSet(readSubjectAltNames(san.value), want);
    } catch {
      return false;
    }
  }

  /** Default mode: reads root.* and issuing.* from dir, creating whatever is missing. */
  private async loadOrCreateOwnCa(): Promise<{ issuingCertPem: string; issuingKey: KeyObject; rootBundlePem: string }> {
    const dir = this.opts.dir;
    const file = (n: string) => path.join(dir, n);
    // A CA key is written as <name>.key.new, then its certificate, then renamed to <name>.key: a
    // crash in between leaves a .new file that the next start completes (certificate written: the
    // pair is checked and the rename done) or sets aside (no certificate: nothing was signed with it).
    for (const name of ['root', 'issuing']) await this.finishInterruptedCreation(dir, name);
    const [rootCert, rootKey, issCert, issKey] = await Promise.all(
      ['root.pem', 'root.key', 'issuing.pem', 'issuing.key'].map((n) => exists(file(n))),
    );
    if (rootCert !== rootKey) {
      throw new CaError('CA_MATERIAL_INVALID', `${file(rootCert ? 'root.key' : 'root.pem')} is missing (remove or restore the CA files)`);
    }
    if (issCert !== issKey) {
      throw new CaError('CA_MATERIAL_INVALID', `${file(issCert ? 'issuing.key' : 'issuing.pem')} is missing (remove or restore the CA files)`);
    }
    if (!rootCert && issCert) throw new CaError('CA_MATERIAL_INVALID', `issuing CA present in ${dir} without its root`);

    const org = this.opts.organization;
    const now = this.opts.clock.now();
    if (!rootCert) {
      const { publicKey, privateKey } = await generateP256();
      const spkiDer = publicKey.export({ type: 'spki', format: 'der' });
      const subjectDer = orgName(org, `${org} Root CA`);
      const der = buildCertificate(
        {
          serialDer: randomSerial().der,
          issuerDer: subjectDer,
          notBefore: truncateToSecond(new Date(now.getTime() - 5 * 60_000)),
          notAfter: truncateToSecond(addYears(now, 20)),
          subjectDer,
          spkiDer,
          extensions: [
            caExtensions.basicConstraints(),
            caExtensions.keyUsage([KeyUsage.keyCertSign, KeyUsage.cRLSign]),
            caExtensions.subjectKeyIdentifier(keyIdentifier(spkiDer)),
          ],
        },
        signerFor(privateKey),
      );
      await writeFileAtomic(file('root.key.new'), encodePrivateKey(privateKey, this.opts.keyPassphrase), 0o600, true);
      await writeFileAtomic(file('root.pem'), pemEncode('CERTIFICATE', der), 0o644, true);
      await renameDurably(file('root.key.new'), file('root.key'));
      await this.opts.onKeyEvent?.({ action: 'key.generate', name: 'root', file: file('root.key') });
    }

    if (!issCert) {
      const rootKeyObj = await this.loadKey(file('root.key'), 'root', true);
      const rootPem = await readMaterial(file('root.pem'));
      const root = parseX509(rootPem, 'root.pem');
      if (!root.checkPrivateKey(rootKeyObj)) throw new CaError('CA_MATERIAL_INVALID', 'root.key does not match root.pem');
      const rootInfo = readCertificate(root.raw);
      const rootSki = rootInfo.extensions.get(OID.subjectKeyIdentifier);
      const rootKeyId = rootSki ? readSubjectKeyIdentifier(rootSki.value) : keyIdentifier(rootInfo.spkiDer);
      const { publicKey, privateKey } = await generateP256();
      const spkiDer = publicKey.export({ type: 'spki', format: 'der' });
      const rootNotAfter = new Date(root.validTo);
      const tenYears = addYears(now, 10);
      const der = buildCertificate(
        {
          serialDer: randomSerial().der,
          issuerDer: rootInfo.subjectDer,
          notBefore: truncateToSecond(new Date(now.getTime() - 5 * 60_000)),
          notAfter: truncateToSecond(tenYears < rootNotAfter ? tenYears : rootNotAfter),
          subjectDer: orgName(org, `${org} Device Issuing CA`),
          spkiDer,
          extensions: [
            caExtensions.basicConstraints(0),
            caExtensions.keyUsage([KeyUsage.digitalSignature, KeyUsage.keyCertSign, KeyUsage.cRLSign]),
            caExtensions.subjectKeyIdentifier(keyIdentifier(spkiDer)),
            caExtensions.authorityKeyIdentifier(rootKeyId),
          ],
        },
        signerFor(rootKeyObj),
      );
      await writeFileAtomic(file('issuing.key.new'), encodePrivateKey(privateKey, this.opts.keyPassphrase), 0o600, true);
      await writeFileAtomic(file('issuing.pem'), pemEncode('CERTIFICATE', der), 0o644, true);
      await renameDurably(file('issuing.key.new'), file('issuing.key'));
      await this.opts.onKeyEvent?.({ action: 'key.generate', name: 'issuing', file: file('issuing.key') });
    } else if (rootCert) {
      // The root key is not kept in memory; it is read (and decrypted, or encrypted in place when
      // a passphrase is new) so that a wrong passphrase or a bad file mode shows at every start.
      await this.loadKey(file('root.key'), 'root', true);
    }

    return {
      issuingCertPem: await readMaterial(file('issuing.pem')),
      issuingKey: await this.loadKey(file('issuing.key'), 'issuing', true),
      rootBundlePem: await readMaterial(file('root.pem')),
    };
  }

  /** See loadOrCreateOwnCa: completes or sets aside `<name>.key.new` left by an interrupted creation. */
  private async finishInterruptedCreation(dir: string, name: string): Promise<void> {
    const pending = path.join(dir, `${name}.key.new`);
    if (!(await exists(pending))) return;
    const keyFile = path.join(dir, `${name}.key`);
    const certFile = path.join(dir, `${name}.pem`);
    if ((await exists(certFile)) && !(await exists(keyFile))) {
      const key = await this.loadKey(pending, name, false);
      if (parseX509(await readMaterial(certFile), `${name}.pem`).checkPrivateKey(key)) {
        await renameDurably(pending, keyFile);
        return;
      }
    }
    const st = await fs.stat(pending);
    // wall-clock time, like the file's mtime: a fresh file may be another process creating the CA now
    if (Date.now() - st.mtimeMs < INTERRUPTED_KEY_AGE_MS) {
      throw new CaError('CA_MATERIAL_INVALID', `${pending} is being written (another process creating the CA?); start again in a minute`);
    }
    const aside = `${pending}.interrupted-${st.mtime.toISOString().replace(/[:.]/g, '-')}`;
    await fs.rename(pending, aside);
    await this.opts.onKeyEvent?.({ action: 'key.discard', name, file: aside });
  }

  /**
   * A private key file: mode checked (CA_KEY_PERMISSIONS), decrypted with the passphrase when
   * encrypted (CA_KEY_PASSPHRASE_REQUIRED / _INVALID). With `migrate` (keys under `dir`), a
   * plaintext key is rewritten encrypted when a passphrase is configured.
   */
  private async loadKey(file: string, name: string, migrate: boolean): Promise<KeyObject> {
    await checkKeyPermissions(file);
    const { key, encrypted } = decodePrivateKey(await readMaterial(file), file, this.opts.keyPassphrase);
    if (migrate && !encrypted && this.opts.keyPassphrase) {
      await writeFileAtomic(file, encodePrivateKey(key, this.opts.keyPassphrase), 0o600);
      await this.opts.onKeyEvent?.({ action: 'key.encrypt', name, file });
    }
    return key;
  }

  /** Checks key/cert match, CA flags, the chain up to a self-signed root, and validity now. */
  private checkMaterial(issuingCertPem: string, issuingKey: KeyObject, rootBundlePem: string): Loaded {
    const invalid = (msg: string, cause?: unknown) => new CaError('CA_MATERIAL_INVALID', msg, cause === undefined ? undefined : { cause });
    const issuing = parseX509(issuingCertPem, 'issuing certificate');
    let bundle: X509Certificate[];
    try {
      bundle = pemBlocks(rootBundlePem)
        .filter((b) => b.label === 'CERTIFICATE')
        .map((b) => new X509Certificate(b.der));
    } catch (err) {
      throw invalid('root certificate file does not parse', err);
    }
    if (bundle.length === 0) throw invalid('root certificate file holds no certificate');

    if (!issuing.checkPrivateKey(issuingKey)) throw invalid('issuing key does not match the issuing certificate');
    if (isSelfSigned(issuing)) throw invalid('the issuing certificate is self-signed; it must be issued by the root');

    const chain: X509Certificate[] = [issuing];
    let current = issuing;
    while (!isSelfSigned(current)) {
      const parent = bundle.find((c) => !chain.includes(c) && current.checkIssued(c) && current.verify(c.publicKey));
      if (parent === undefined || chain.length > 8) throw invalid('the issuing certificate does not chain to a self-signed root in the root certificate file');
      chain.push(parent);
      current = parent;
    }

    const now = this.opts.clock.now().getTime();
    let notAfter = Infinity;
    for (const cert of chain) {
      const label = cert === issuing ? 'issuing certificate' : cert === current ? 'root certificate' : 'intermediate certificate';
      if (!cert.ca) throw invalid(`the ${label} is not a CA certificate (basicConstraints CA:TRUE missing)`);
      const info = readCertificateOrThrow(cert, label);
      const ku = info.extensions.get(OID.keyUsage);
      if (ku !== undefined && !readKeyUsage(ku.value).has(KeyUsage.keyCertSign)) throw invalid(`the ${label} may not sign certificates (keyUsage)`);
      const from = new Date(cert.validFrom).getTime();
      const to = new Date(cert.validTo).getTime();
      if (!(from <= now && now < to)) throw invalid(`the ${label} is not valid now (${cert.validFrom} - ${cert.validTo})`);
      notAfter = Math.min(notAfter, to);
    }

    const info = readCertificateOrThrow(issuing, 'issuing certificate');
    const ski = info.extensions.get(OID.subjectKeyIdentifier);
    let keyId: Buffer;
    try {
      keyId = ski ? readSubjectKeyIdentifier(ski.value) : keyIdentifier(info.spkiDer);
      inspectSpki(info.spkiDer);
    } catch (err) {
      throw invalid('issuing certificate extensions do not parse', err);
    }
    const signer = signerFor(issuingKey);
    const issuer = new CertificateIssuer({ subjectDer: info.subjectDer, keyId, notAfter: new Date(notAfter), signer }, this.opts.organization);
    const issuingKu = info.extensions.get(OID.keyUsage);
    const crlIssuer =
      issuingKu === undefined || readKeyUsage(issuingKu.value).has(KeyUsage.cRLSign) ? { subjectDer: info.subjectDer, keyId, signer } : undefined;
    const pems = chain.map((c) => c.toString());
    return { issuer, crlIssuer, issuingCert: issuing, rootPem: pems[pems.length - 1]!, issuingPem: pems[0]!, chainPems: pems };
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

function checkDays(days: number): number {
  if (!(Number.isFinite(days) && days > 0)) throw new CaError('ISSUE_REQUEST_INVALID', 'validityDays must be a positive number');
  return days;
}

function addYears(d: Date, years: number): Date {
  const out = new Date(d.getTime());
  out.setUTCFullYear(out.getUTCFullYear() + years);
  return out;
}

function sameSet(a: string[], b: string[]): boolean {
  const sa = new Set(a);
  const sb = new Set(b);
  return sa.size === sb.size && [...sa].every((x) => sb.has(x));
}

function isSelfSigned(cert: X509Certificate): boolean {
  return cert.checkIssued(cert) && cert.verify(cert.publicKey);
}

function parseX509(pem: string, label: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (err) {
    throw new CaError('CA_MATERIAL_INVALID', `${label} does not parse`, { cause: err });
  }
}

function readCertificateOrThrow(cert: X509Certificate, label: string): ReturnType<typeof readCertificate> {
  try {
    return readCertificate(cert.raw);
  } catch (err) {
    throw new CaError('CA_MATERIAL_INVALID', `${label} is not strict DER`, { cause: err });
  }
}

function generateP256(): Promise<{ publicKey: KeyObject; privateKey: KeyObject }> {
  return new Promise((resolve, reject) =>
    crypto.generateKeyPair('ec', { namedCurve: 'P-256' }, (err, publicKey, privateKey) => (err ? reject(err) : resolve({ publicKey, privateKey }))),
  );
}

async function exists(file: string): Promise<boolean> {
  try {
    await fs.stat(file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new CaError('CA_MATERIAL_INVALID', `cannot access ${file}`, { cause: err });
  }
}

async function readMaterial(file: string): Promise<string> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (err) {
    throw new CaError('CA_MATERIAL_INVALID', `cannot read ${file}`, { cause: err });
  }
}

/**
 * Writes `data` to `file` atomically: a temp file in the same directory opened exclusively with
 * `mode`, fsynced, then renamed over the target. With `exclusive` the target must not exist yet.
 */
/** rename(2) followed by an fsync of the directory, so that the new name survives a power loss. */
async function renameDurably(from: string, to: string): Promise<void> {
  await fs.rename(from, to);
  const dir = await fs.open(path.dirname(to), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

async function writeFileAtomic(file: string, data: string, mode: number, exclusive = false): Promise<void> {
  if (exclusive && (await exists(file))) throw new CaError('CA_MATERIAL_INVALID', `${file} appeared while the CA was being created`);
  const tmp = `${file}.${process.pid}.${crypto.randomBytes(6).toString('hex')}.tmp`;
  const fh = await fs.open(tmp, 'wx', mode);
  try {
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(tmp, file);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
  try {
    const dh = await fs.open(path.dirname(file), 'r');
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  } catch {
    // Directory fsync is best effort (not supported everywhere).
  }
}

/**
 * `provisiond ca init | import | show`: the certificate authority of a data directory, from a
 * terminal, with the service's own CA code (the same checks as at start).
 *
 * - init: creates the generated CA under <dataDir>/ca now (what the first start would do) and
 *   prints its fingerprints; refuses when CA material is already there or ca.* files are set.
 * - import: the service uses an operator CA through the ca.issuingCertFile / issuingKeyFile /
 *   rootCertFile settings (src/ca/authority.ts reads them in place, never rewrites them). import
 *   checks the material as the start would (key matches certificate, CA flags and keyUsage, chain
 *   to a self-signed root, valid now), installs copies under <dataDir>/ca/operator (key 0600,
 *   directory 0700) and prints the settings that point the service at them.
 * - show: the CA certificates in use (subject, validity, SHA-256 fingerprints); reads certificates
 *   only, never a key.
 */
import { X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rename, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { CertificateAuthority } from '../ca/index.js';
import { systemClock } from '../clock.js';
import type { Config } from '../config/index.js';

/** A coded failure of a ca command (exit 1). */
export class CaCommandError extends Error {
  constructor(
    readonly code: 'CA_EXISTS' | 'CA_NOT_FOUND' | 'CA_EXTERNAL_CONFIGURED',
    message: string,
  ) {
    super(message);
  }
}

const OWN_FILES = ['root.pem', 'root.key', 'issuing.pem', 'issuing.key', 'root.key.new', 'issuing.key.new'];
export const OPERATOR_DIR = 'operator';

function caDir(config: Config): string {
  return join(config.dataDir, 'ca');
}

function externalOf(config: Config) {
  const { issuingCertFile, issuingKeyFile, rootCertFile } = config.ca;
  return issuingCertFile && issuingKeyFile && rootCertFile ? { issuingCertFile, issuingKeyFile, rootCertFile } : undefined;
}

function describe(label: string, cert: X509Certificate): string {
  return [
    `${label}:`,
    `  subject      ${cert.subject.replace(/\n/g, ', ')}`,
    `  issuer       ${cert.issuer.replace(/\n/g, ', ')}`,
    `  valid        ${new Date(cert.validFrom).toISOString()} - ${new Date(cert.validTo).toISOString()}`,
    `  serial       ${cert.serialNumber}`,
    `  SHA-256      ${cert.fingerprint256}`,
  ].join('\n');
}

function describeChain(chainPems: string[]): string {
  const certs = chainPems.map((p) => new X509Certificate(p));
  return certs.map((c, i) => describe(i === 0 ? 'issuing CA' : i === certs.length - 1 ? 'root CA' : 'intermediate CA', c)).join('\n') + '\n';
}

export async function caInit(config: Config): Promise<string> {
  if (externalOf(config)) throw new CaCommandError('CA_EXTERNAL_CONFIGURED', 'ca.issuingCertFile, ca.issuingKeyFile and ca.rootCertFile are set: the service uses that CA, there is none to create');
  const dir = caDir(config);
  const present = OWN_FILES.filter((f) => existsSync(join(dir, f)));
  if (present.length > 0) throw new CaCommandError('CA_EXISTS', `${dir} already holds a CA (${present.join(', ')}); nothing was changed`);
  const ca = new CertificateAuthority({
    dir,
    organization: config.ca.organization,
    deviceValidityDays: config.ca.deviceCertValidityDays,
    clock: systemClock,
    ...(config.ca.keyPassphrase ? { keyPassphrase: config.ca.keyPassphrase } : {}),
  });
  await ca.start();
  const enc = config.ca.keyPassphrase ? 'encrypted with ca.keyPassphrase' : 'unencrypted: set ca.keyPassphrase to encrypt them';
  return `created the CA in ${dir} (keys 0600, ${enc})\n` + describeChain(ca.chainPems);
}

export interface ImportFiles {
  root: string;
  issuingCert: string;
  issuingKey: string;
}

export async function caImport(config: Config, files: ImportFiles): Promise<string> {
  const dir = caDir(config);
  const target = join(dir, OPERATOR_DIR);
  if (existsSync(target)) throw new CaCommandError('CA_EXISTS', `${target} already exists; remove it first to import other CA material`);
  for (const f of Object.values(files)) if (!existsSync(f)) throw new CaCommandError('CA_NOT_FOUND', `${f}: no such file`);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // staged next to the target, checked there with the service's own checks, then renamed into place
  const staging = await mkdtemp(join(dir, '.operator-import-'));
  try {
    await chmod(staging, 0o700);
    const staged = { rootCertFile: join(staging, 'root.pem'), issuingCertFile: join(staging, 'issuing.pem'), issuingKeyFile: join(staging, 'issuing.key') };
    await copyFile(files.root, staged.rootCertFile);
    await copyFile(files.issuingCert, staged.issuingCertFile);
    await copyFile(files.issuingKey, staged.issuingKeyFile);
    await chmod(staged.rootCertFile, 0o644);
    await chmod(staged.issuingCertFile, 0o644);
    await chmod(staged.issuingKeyFile, 0o600);
    const ca = new CertificateAuthority({
      dir: join(staging, 'check'),
      organization: config.ca.organization,
      deviceValidityDays: config.ca.deviceCertValidityDays,
      clock: systemClock,
      external: staged,
      ...(config.ca.keyPassphrase ? { keyPassphrase: config.ca.keyPassphrase } : {}),
    });
    await ca.start();
    await rm(join(staging, 'check'), { recursive: true, force: true });
    await rename(staging, target);
    const abs = (f: string) => resolve(target, f);
    return (
      `checked and installed the CA in ${target} (issuing key 0600)\n` +
      describeChain(ca.chainPems) +
      `\nthe service uses it once these settings are set (config file "ca" section, or environment):\n` +
      `  PROVISIOND_CA__ROOT_CERT_FILE=${abs('root.pem')}\n` +
      `  PROVISIOND_CA__ISSUING_CERT_FILE=${abs('issuing.pem')}\n` +
      `  PROVISIOND_CA__ISSUING_KEY_FILE=${abs('issuing.key')}\n`
    );
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

export async function caShow(config: Config): Promise<string> {
  const external = externalOf(config);
  const dir = caDir(config);
  const rootFile = external ? external.rootCertFile : join(dir, 'root.pem');
  const issuingFile = external ? external.issuingCertFile : join(dir, 'issuing.pem');
  if (!existsSync(rootFile) || !existsSync(issuingFile)) {
    throw new CaCommandError('CA_NOT_FOUND', external ? `${!existsSync(rootFile) ? rootFile : issuingFile}: no such file` : `no CA in ${dir} yet (provisiond ca init, or the first start, creates it)`);
  }
  const source = external ? 'operator CA (ca.* settings)' : `generated CA in ${dir}`;
  const root = (await readFile(rootFile, 'utf8')).match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  const issuing = await readFile(issuingFile, 'utf8');
  return `${source}\n` + describeChain([issuing, ...root]);
}

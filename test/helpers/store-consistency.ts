/**
 * What a store must look like after provisioning runs that were interrupted (crashes, shutdowns),
 * read directly from the store (the service stopped). Returns the problems found, one line each,
 * so that a test asserts `toEqual([])` and a failure names every device that is wrong.
 *
 * Checked for every device of the run:
 *  - it is there (none lost, none extra) and in the expected final state;
 *  - at most one active certificate; the device's current serial names an active certificate of
 *    the device, whose key and PEM are the ones the device holds; every other certificate of the
 *    device is superseded or revoked (with a time and a reason), never left active or orphaned;
 *  - serials are unique across the store, and the indexes lead back to the records (serial,
 *    key fingerprint, claim-code hash, counts by state);
 *  - the bootstrap token the device's certificate was issued with is its current one, consumed
 *    once, for that certificate and key; no other token is consumed;
 *  - its configuration document exists;
 *  - its history is a valid path through the lifecycle (each state change starts where the last
 *    ended, is allowed by src/policy, and ends in the device's state), in time order.
 */
import type { DeviceState } from '../../schemas/types.js';
import { canTransition } from '../../src/policy/index.js';
import type { Store } from '../../src/store/index.js';
import type { DeviceEntry } from '../../src/store/types.js';

export interface Expected {
  /** Device ids of the run: exactly these (with `prefix`) must be in the store. */
  ids: readonly string[];
  /** Only devices whose id starts with this are the run's. */
  prefix: string;
  /** The state every device must be in (a run that finished); any state when omitted (a run cut short). */
  state?: DeviceState;
  /** Certificate each device holds (serial and PEM), when the run knows it. */
  held: ReadonlyMap<string, { serial: string; pem: string }>;
  /** The whole path a first provisioning takes (consecutive repeats removed); checked when given. */
  path?: readonly DeviceState[];
}

export interface ConsistencyReport {
  problems: string[];
  devices: number;
  certificates: number;
  /** Bootstrap tokens never used (voided by a new credential, or made by a claim that did not commit). */
  unusedTokens: number;
}

export async function checkStoreConsistency(store: Store, expected: Expected): Promise<ConsistencyReport> {
  const problems: string[] = [];
  const bad = (id: string, what: string) => problems.push(`${id}: ${what}`);
  const serials = new Map<string, string>();
  const seen = new Set<string>();
  let certificates = 0;
  let unusedTokens = 0;
  const entries: DeviceEntry[] = [];
  for await (const entry of store.exportEntries()) {
    if (entry.kind === 'device' && entry.device.id.startsWith(expected.prefix)) entries.push(entry);
  }
  for (const entry of entries) {
    const { device, events, configDocuments, bootstrapTokens } = entry;
    const id = device.id;
    seen.add(id);
    if (expected.state && device.state !== expected.state) bad(id, `state ${device.state}, expected ${expected.state}`);

    // certificates
    certificates += entry.certificates.length;
    for (const c of entry.certificates) {
      const owner = serials.get(c.serial);
      if (owner !== undefined) bad(id, `serial ${c.serial} also recorded for ${owner}`);
      serials.set(c.serial, id);
      if (c.deviceId !== id) bad(id, `certificate ${c.serial} names device ${c.deviceId}`);
      const current = c.serial === device.certificateSerial;
      if (c.status === 'active' && !current) bad(id, `certificate ${c.serial} is active but not the device's current one (${device.certificateSerial})`);
      if (current && c.status !== 'active') bad(id, `current certificate ${c.serial} is ${c.status}`);
      if (c.status === 'revoked' && (!c.revokedAt || !c.revocationReason)) bad(id, `certificate ${c.serial} revoked without time or reason`);
      if (c.status === 'superseded' && c.serial !== device.previousCertificateSerial) bad(id, `certificate ${c.serial} superseded but not the previous one awaiting confirmation`);
    }
    const active = entry.certificates.filter((c) => c.status === 'active');
    if (active.length > 1) bad(id, `${active.length} active certificates: ${active.map((c) => c.serial).join(', ')}`);
    const cert = entry.certificates.find((c) => c.serial === device.certificateSerial);
    if (device.certificateSerial && !cert) bad(id, `current certificate ${device.certificateSerial} is not recorded`);
    if (cert) {
      const byKey = await store.findCertificateByKey(cert.keyFingerprint);
      if (byKey?.deviceId !== id) bad(id, `its key's certificate index leads to ${byKey?.deviceId}/${byKey?.serial}`);
      const bySerial = await store.getCertificate(cert.serial);
      if (bySerial?.pem !== cert.pem) bad(id, `the serial index does not give back certificate ${cert.serial}`);
    }
    const held = expected.held.get(id);
    if (held && held.serial !== device.certificateSerial) bad(id, `holds certificate ${held.serial}, the store says ${device.certificateSerial}`);
    if (held && cert && held.pem.trim() !== cert.pem.trim()) bad(id, `the PEM it holds differs from the stored certificate ${cert.serial}`);

    // bootstrap tokens
    const consumed = bootstrapTokens.filter((t) => t.consumedAt);
    unusedTokens += bootstrapTokens.length - consumed.length;
    for (const t of bootstrapTokens) if (t.deviceId !== id) bad(id, `token ${t.jti} names ${t.deviceId}`);
    if (cert) {
      if (consumed.length !== 1) bad(id, `${consumed.length} consumed bootstrap tokens (expected the one its certificate was issued with)`);
      const used = consumed[0];
      if (used && (used.certificateSerial !== cert.serial || used.keyFingerprint !== cert.keyFingerprint)) {
        bad(id, `token ${used.jti} was consumed for ${used.certificateSerial}, the device has ${cert.serial}`);
      }
      if (used && used.jti !== device.bootstrapJti) bad(id, `the consumed token ${used.jti} is not the device's current credential ${device.bootstrapJti}`);
    } else if (consumed.length > 0) {
      bad(id, `${consumed.length} consumed tokens but no certificate`);
    }
    if (device.bootstrapJti && !bootstrapTokens.some((t) => t.jti === device.bootstrapJti)) bad(id, `current credential ${device.bootstrapJti} is not recorded`);

    // configuration
    if (device.config && !configDocuments.some((d) => d.version === device.config!.version)) bad(id, `config version ${device.config.version} has no document`);
    if (device.config && (device.lastConfigVersion ?? 0) < device.config.version) bad(id, `lastConfigVersion ${device.lastConfigVersion} < config ${device.config.version}`);

    // claim-code index
    const byCode = await store.findDeviceByClaimCodeHash(device.claimCodeHash);
    if (byCode?.id !== id) bad(id, `its claim-code hash leads to ${byCode?.id}`);

    // history
    let at = '';
    let current: DeviceState | undefined;
    const path: DeviceState[] = [];
    for (const e of events) {
      if (e.deviceId !== id) bad(id, `event ${e.type} names ${e.deviceId}`);
      if (e.at < at) bad(id, `event ${e.type} at ${e.at} before the previous one at ${at}`);
      at = e.at;
      if (!e.to) continue;
      if (current === undefined) {
        if (e.type !== 'registered' || e.to !== 'registered') bad(id, `history starts with ${e.type} -> ${e.to}`);
      } else {
        if (e.from !== undefined && e.from !== current) bad(id, `${e.type}: from ${e.from}, but the device was ${current}`);
        const from = e.from ?? current;
        if (from !== e.to && !canTransition(from, e.to)) bad(id, `${e.type}: ${from} -> ${e.to} is not a lifecycle transition`);
      }
      current = e.to;
      if (path.at(-1) !== e.to) path.push(e.to);
    }
    if (current !== device.state) bad(id, `history ends in ${current}, the device is ${device.state}`);
    if (expected.path && path.join(' ') !== expected.path.join(' ')) bad(id, `history path ${path.join(' -> ')}`);
  }
  for (const id of expected.ids) if (!seen.has(id)) problems.push(`${id}: missing from the store`);
  for (const id of seen) if (!expected.ids.includes(id)) problems.push(`${id}: in the store but not in the run`);

  // counts by state agree with the records
  const counts = await store.countDevicesByState();
  const byState = new Map<string, number>();
  for (const e of entries) byState.set(e.device.state, (byState.get(e.device.state) ?? 0) + 1);
  for (const [state, n] of byState) if ((counts[state as DeviceState] ?? 0) < n) problems.push(`count of ${state} devices is ${counts[state as DeviceState]}, ${n} records say so`);
  return { problems, devices: entries.length, certificates, unusedTokens };
}

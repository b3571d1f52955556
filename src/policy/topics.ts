/**
 * Who may publish and subscribe where. Pure functions of (session kind, device id, topic): the
 * broker asks, this module answers. Every device lives under devices/<deviceId>/ and may touch
 * nothing else; subscriptions must name exact topics (no wildcards), so a device can never match
 * another device's or the broker's ($SYS) topics.
 */
/**
 * bootstrap: token, gets a certificate; operational: mutual TLS; renewal: an expired certificate
 * the profile lets renew, nothing else; birth: a manufacturer birth certificate (zero-touch), gets
 * a certificate.
 */
export type SessionKind = 'bootstrap' | 'operational' | 'renewal' | 'birth';

/** Topics a device publishes to (device -> service). */
export type InboundTopic = 'csr' | 'config/ack' | 'telemetry';
/** Topics the service publishes to (service -> device). */
export type OutboundTopic = 'csr/accepted' | 'csr/rejected' | 'config' | 'state' | 'errors' | 'commands';

export const TOPIC_ROOT = 'devices';

export function deviceTopic(deviceId: string, leaf: InboundTopic | OutboundTopic): string {
  return `${TOPIC_ROOT}/${deviceId}/${leaf}`;
}

const PUBLISH: Record<SessionKind, readonly InboundTopic[]> = {
  bootstrap: ['csr'],
  operational: ['config/ack', 'telemetry', 'csr'],
  renewal: ['csr'],
  birth: ['csr'],
};

const SUBSCRIBE: Record<SessionKind, readonly OutboundTopic[]> = {
  bootstrap: ['csr/accepted', 'csr/rejected', 'errors'],
  operational: ['config', 'state', 'errors', 'commands', 'csr/accepted', 'csr/rejected'],
  renewal: ['csr/accepted', 'csr/rejected', 'errors'],
  birth: ['csr/accepted', 'csr/rejected', 'errors'],
};

/** The leaf of `topic` if it is under this device's root, else undefined. */
function leafOf(deviceId: string, topic: string): string | undefined {
  const prefix = `${TOPIC_ROOT}/${deviceId}/`;
  return topic.startsWith(prefix) ? topic.slice(prefix.length) : undefined;
}

/** Which inbound topic this publish is, or undefined when the session may not publish there. */
export function publishTarget(kind: SessionKind, deviceId: string, topic: string): InboundTopic | undefined {
  const leaf = leafOf(deviceId, topic);
  return PUBLISH[kind].find((t) => t === leaf);
}

export function maySubscribe(kind: SessionKind, deviceId: string, filter: string): boolean {
  if (filter.includes('+') || filter.includes('#')) return false;
  const leaf = leafOf(deviceId, filter);
  return SUBSCRIBE[kind].some((t) => t === leaf);
}

/** For docs and tests: the full table. */
export function topicTable(): { publish: typeof PUBLISH; subscribe: typeof SUBSCRIBE } {
  return { publish: PUBLISH, subscribe: SUBSCRIBE };
}

/**
 * Smart-home hubs: on its operational session a hub also claims devices it discovered and relays
 * their provisioning, under its own root only: devices/<hub>/hub/claim and
 * devices/<hub>/children/<child>/... (whether <child> is really the hub's child is the
 * use-cases' check: the service only ever publishes a child's messages under its own hub).
 */
export type HubInbound = { kind: 'hub/claim' } | { kind: 'child/csr'; childId: string } | { kind: 'child/config/ack'; childId: string };
const CHILD_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const CHILD_OUTBOUND = ['csr/accepted', 'csr/rejected', 'config', 'state', 'errors'] as const;
export type ChildOutbound = (typeof CHILD_OUTBOUND)[number];

export function hubTopic(hubId: string, leaf: 'hub/claim/accepted' | 'hub/claim/rejected'): string {
  return `${TOPIC_ROOT}/${hubId}/${leaf}`;
}

export function childTopic(hubId: string, childId: string, leaf: ChildOutbound): string {
  return `${TOPIC_ROOT}/${hubId}/children/${childId}/${leaf}`;
}

export function hubPublishTarget(hubId: string, topic: string): HubInbound | undefined {
  const leaf = leafOf(hubId, topic);
  if (leaf === undefined) return undefined;
  if (leaf === 'hub/claim') return { kind: 'hub/claim' };
  const m = /^children\/([^/]+)\/(csr|config\/ack)$/.exec(leaf);
  if (!m || !CHILD_ID.test(m[1]!)) return undefined;
  return m[2] === 'csr' ? { kind: 'child/csr', childId: m[1]! } : { kind: 'child/config/ack', childId: m[1]! };
}

export function hubMaySubscribe(hubId: string, filter: string): { childId?: string; leaf: string } | undefined {
  if (filter.includes('+') || filter.includes('#')) return undefined;
  const leaf = leafOf(hubId, filter);
  if (leaf === 'hub/claim/accepted' || leaf === 'hub/claim/rejected') return { leaf };
  const m = leaf === undefined ? null : /^children\/([^/]+)\/(.+)$/.exec(leaf);
  if (!m || !CHILD_ID.test(m[1]!) || !(CHILD_OUTBOUND as readonly string[]).includes(m[2]!)) return undefined;
  return { childId: m[1]!, leaf: m[2]! };
}

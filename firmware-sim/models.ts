/**
 * The simulated device models: what each applies and what telemetry it sends once provisioned.
 * Telemetry goes to devices/<id>/telemetry (docs/protocol.md §4): any JSON object up to the
 * broker's mqtt.maxPayloadBytes (64 KiB by default), QoS 0 here. Thermostats send a small reading
 * often, cameras a large one (a thumbnail) rarely, hubs a status in between.
 */
import type { ConfigDocument } from '../schemas/types.js';

export type ModelName = 'thermostat' | 'camera' | 'hub';

/** The firmware version every simulated device runs. */
export const FIRMWARE_VERSION = '2.3.0';

function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) if ((pa[i] ?? 0) !== (pb[i] ?? 0)) return (pa[i] ?? 0) - (pb[i] ?? 0);
  return 0;
}

export interface DeviceModel {
  name: ModelName;
  /** Apply one config item; throw to report it failed. */
  apply(item: ConfigDocument['items'][number], secret: string | undefined): void;
  telemetry(seq: number): Record<string, unknown>;
  /** Keep-alive telemetry of a held device: the period... */
  telemetryIntervalMs: number;
  /** ...and about how many bytes of JSON each message has. */
  telemetryBytes: number;
}

/** Deterministic base64 filler of `length` characters (a thumbnail stand-in; incompressible like one). */
function filler(length: number): string {
  const bytes = Buffer.alloc(Math.ceil((length * 3) / 4));
  let x = 0x2545f491;
  for (let i = 0; i < bytes.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = x & 0xff;
  }
  return bytes.toString('base64').slice(0, length);
}

const CAMERA_TELEMETRY_BYTES = 16 * 1024;
const THUMBNAIL = filler(CAMERA_TELEMETRY_BYTES - 64);

const applyCommon = (item: ConfigDocument['items'][number], secret: string | undefined) => {
  if (item.type === 'network') {
    const wifi = item.data.wifi;
    if (wifi.security !== 'open' && (!secret || secret.length < 8)) throw new Error('no usable Wi-Fi secret');
  } else if (item.type === 'security-policy') {
    if (!['1.2', '1.3'].includes(item.data.minTlsVersion)) throw new Error('unsupported TLS version');
  } else if (item.type === 'firmware-floor') {
    const floor = String((item.data as { minVersion?: unknown }).minVersion ?? '0.0.0');
    if (compareVersions(FIRMWARE_VERSION, floor) < 0) throw new Error(`firmware ${FIRMWARE_VERSION} is below the floor ${floor}`);
  }
};

export const MODELS: Record<ModelName, DeviceModel> = {
  thermostat: {
    name: 'thermostat',
    apply: applyCommon,
    telemetry: (seq) => ({ seq, temperatureC: 20 + (seq % 50) / 10, setpointC: 21, humidity: 40 + (seq % 7) }),
    telemetryIntervalMs: 5_000,
    telemetryBytes: 60,
  },
  hub: {
    name: 'hub',
    apply: applyCommon,
    telemetry: (seq) => ({ seq, children: 0, uptimeSeconds: seq * 15, radio: { zigbee: { rssi: -60 - (seq % 20), lqi: 200 }, thread: { rssi: -55 - (seq % 15), routers: 3 } }, queue: seq % 4 }),
    telemetryIntervalMs: 15_000,
    telemetryBytes: 130,
  },
  camera: {
    name: 'camera',
    apply: applyCommon,
    telemetry: (seq) => ({ seq, motion: seq % 5 === 0, frameRate: 15, thumbnail: THUMBNAIL }),
    telemetryIntervalMs: 30_000,
    telemetryBytes: CAMERA_TELEMETRY_BYTES,
  },
};

/** The simulated device models: what each applies and what telemetry it sends. */
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
}

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
  },
  hub: {
    name: 'hub',
    apply: applyCommon,
    telemetry: (seq) => ({ seq, children: 0, uptimeSeconds: seq * 60 }),
  },
  camera: {
    name: 'camera',
    apply: applyCommon,
    telemetry: (seq) => ({ seq, motion: seq % 5 === 0, frameRate: 15, thumbnail: 'x'.repeat(2048) }),
  },
};

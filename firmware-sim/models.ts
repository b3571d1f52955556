/** The simulated device models: what each applies and what telemetry it sends. */
import type { ConfigDocument } from '../schemas/types.js';

export type ModelName = 'thermostat' | 'camera';

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
  }
};

export const MODELS: Record<ModelName, DeviceModel> = {
  thermostat: {
    name: 'thermostat',
    apply: applyCommon,
    telemetry: (seq) => ({ seq, temperatureC: 20 + (seq % 50) / 10, setpointC: 21, humidity: 40 + (seq % 7) }),
  },
  camera: {
    name: 'camera',
    apply: applyCommon,
    telemetry: (seq) => ({ seq, motion: seq % 5 === 0, frameRate: 15, thumbnail: 'x'.repeat(2048) }),
  },
};

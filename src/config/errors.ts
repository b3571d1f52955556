import { errorFamily } from '../errors.js';

export const ConfigError = errorFamily('ConfigError', {
  CONFIG_INVALID: { status: 500, description: 'The configuration is invalid.' },
  CONFIG_FILE_UNREADABLE: { status: 500, description: 'The configuration file cannot be read or is not JSON.' },
});
export type ConfigError = InstanceType<typeof ConfigError>;

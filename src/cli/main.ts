#!/usr/bin/env node
/**
 * provisiond command line.
 *   provisiond [start] [--config FILE]     run the service until SIGTERM/SIGINT
 *   provisiond demo [--devices N] [--concurrency N] [--json] [--data-dir DIR]
 *                                          start a throw-away service and provision N simulated devices
 */
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../config/index.js';
import { isProvisiondError } from '../errors.js';
import { startService } from '../main.js';
import { runDemo } from './demo.js';

const USAGE = `usage:
  provisiond [start] [--config FILE]
  provisiond demo [--devices N] [--concurrency N] [--json] [--data-dir DIR]`;

async function main(argv: string[]): Promise<number> {
  const command = argv[0] && !argv[0].startsWith('-') ? argv[0] : 'start';
  const rest = command === argv[0] ? argv.slice(1) : argv;
  if (command === 'start') {
    const { values } = parseArgs({ args: rest, options: { config: { type: 'string' } }, strict: true });
    const config = loadConfig({ ...(values.config ? { file: values.config } : {}), env: process.env });
    const running = await startService(config);
    if (running.initialAdminKeyFile) console.error(`initial admin API key written to ${running.initialAdminKeyFile}`);
    console.error(`provisiond: HTTP ${running.httpUrl}  MQTT/TLS port ${running.mqttPort}`);
    await new Promise<void>((resolve) => {
      const onSignal = (signal: string) => {
        console.error(`provisiond: ${signal}, stopping`);
        resolve();
      };
      process.once('SIGTERM', () => onSignal('SIGTERM'));
      process.once('SIGINT', () => onSignal('SIGINT'));
    });
    await running.stop();
    return 0;
  }
  if (command === 'demo') {
    const { values } = parseArgs({
      args: rest,
      options: {
        devices: { type: 'string', default: '100' },
        concurrency: { type: 'string', default: '20' },
        json: { type: 'boolean', default: false },
        'data-dir': { type: 'string' },
      },
      strict: true,
    });
    const devices = Number(values.devices);
    const concurrency = Number(values.concurrency);
    if (!Number.isInteger(devices) || devices < 1 || devices > 100_000) throw new UsageError('--devices must be an integer from 1 to 100000');
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 1000) throw new UsageError('--concurrency must be an integer from 1 to 1000');
    const summary = await runDemo({ devices, concurrency, json: values.json, ...(values['data-dir'] ? { dataDir: values['data-dir'] } : {}) });
    return summary.failed === 0 ? 0 : 1;
  }
  throw new UsageError(`unknown command ${command}`);
}

class UsageError extends Error {}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof UsageError || (err instanceof Error && (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS'))) {
      console.error(`provisiond: ${err.message}\n${USAGE}`);
      process.exit(2);
    }
    if (err instanceof ConfigError || isProvisiondError(err)) {
      console.error(`provisiond: ${err.message}`);
      process.exit(78); // EX_CONFIG
    }
    console.error(err);
    process.exit(1);
  },
);

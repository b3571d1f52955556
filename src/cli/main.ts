#!/usr/bin/env node
/**
 * provisiond command line.
 *   provisiond [start] [--config FILE]     run the service until SIGTERM/SIGINT: stop accepting,
 *                                          let work in hand finish (shutdownGraceSeconds), exit 0;
 *                                          a second signal exits at once (130 SIGINT, 143 SIGTERM);
 *                                          1 when the stop itself hangs past the grace + 30 s
 *   provisiond demo [--devices N] [--concurrency N] [--json] [--data-dir DIR]
 *                                          start a throw-away service and provision N simulated devices
 *   provisiond store copy --from SPEC --to SPEC [--from-prefix P] [--to-prefix P] [--batch N] [--config FILE]
 *                                          copy a whole store into an empty one and verify it (counts,
 *                                          digest); SPEC is sqlite:<path to provisiond.db>, a
 *                                          redis:// / rediss:// URL (key prefix default provisiond:), or
 *                                          config (the store of the service configuration: Sentinel, Cluster).
 *                                          Exit 0 copied and verified, 1 target not empty or mismatch,
 *                                          2 usage, 78 a store unreachable.
 */
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../config/index.js';
import { isProvisiondError } from '../errors.js';
import { startService, storeConfigOf } from '../main.js';
import { runDemo } from './demo.js';
import { parseStoreSpec, runStoreCopy, StoreSpecError } from './store-copy.js';

const USAGE = `usage:
  provisiond [start] [--config FILE]
  provisiond demo [--devices N] [--concurrency N] [--json] [--data-dir DIR]
  provisiond store copy --from SPEC --to SPEC [--from-prefix P] [--to-prefix P] [--batch N] [--config FILE]
      SPEC: sqlite:<path to provisiond.db> | redis://... | rediss://...  (prefix default provisiond:)
            | config  (the store of the service configuration: --config FILE and PROVISIOND_*)`;

async function main(argv: string[]): Promise<number> {
  const command = argv[0] && !argv[0].startsWith('-') ? argv[0] : 'start';
  const rest = command === argv[0] ? argv.slice(1) : argv;
  if (command === 'start') {
    const { values } = parseArgs({ args: rest, options: { config: { type: 'string' } }, strict: true });
    const config = loadConfig({ ...(values.config ? { file: values.config } : {}), env: process.env });
    const running = await startService(config);
    if (running.initialAdminKeyFile) console.error(`initial admin API key written to ${running.initialAdminKeyFile}`);
    console.error(`provisiond: HTTP ${running.httpUrl}  MQTT/TLS port ${running.mqttPort}`);
    const signal = await new Promise<NodeJS.Signals>((resolve) => {
      process.once('SIGTERM', () => resolve('SIGTERM'));
      process.once('SIGINT', () => resolve('SIGINT'));
    });
    const grace = config.shutdownGraceSeconds;
    console.error(`provisiond: ${signal}, stopping (work in hand gets up to ${grace} s; a second SIGTERM or SIGINT stops at once)`);
    // a second signal: stop at once, as a crash would (nothing committed is lost, docs/operations.md)
    const now = (second: NodeJS.Signals) => {
      console.error(`provisiond: ${second} while stopping, exiting at once`);
      process.exit(second === 'SIGINT' ? 130 : 143);
    };
    process.once('SIGTERM', () => now('SIGTERM'));
    process.once('SIGINT', () => now('SIGINT'));
    // a stop that hangs (a store that never answers) must not keep the process: the grace plus 30 s
    setTimeout(() => {
      console.error(`provisiond: not stopped ${grace + 30} s after ${signal}, exiting`);
      process.exit(1);
    }, (grace + 30) * 1000).unref();
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
  if (command === 'store') {
    const sub = rest[0];
    if (sub !== 'copy') throw new UsageError(sub === undefined ? 'store: missing subcommand (copy)' : `unknown store subcommand ${sub}`);
    const { values } = parseArgs({
      args: rest.slice(1),
      options: {
        from: { type: 'string' },
        to: { type: 'string' },
        'from-prefix': { type: 'string' },
        'to-prefix': { type: 'string' },
        batch: { type: 'string', default: '500' },
        config: { type: 'string' },
      },
      strict: true,
    });
    if (values.from === undefined || values.to === undefined) throw new UsageError('store copy needs --from and --to');
    const batchSize = Number(values.batch);
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 10_000) throw new UsageError('--batch must be an integer from 1 to 10000');
    const configured = () => storeConfigOf(loadConfig({ ...(values.config ? { file: values.config } : {}), env: process.env }));
    try {
      return await runStoreCopy({
        from: parseStoreSpec(values.from, values['from-prefix'], '--from', configured),
        to: parseStoreSpec(values.to, values['to-prefix'], '--to', configured),
        batchSize,
      });
    } catch (err) {
      if (err instanceof StoreSpecError) throw new UsageError(err.message);
      throw err;
    }
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
      // the code first (stable, for scripts), then the message; neither carries a secret value
      console.error(`provisiond: ${err.code}: ${err.message}`);
      process.exit(78); // EX_CONFIG
    }
    console.error(err);
    process.exit(1);
  },
);

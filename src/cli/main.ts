#!/usr/bin/env node
/**
 * provisiond command line (`provisiond --help`, `provisiond COMMAND --help`; docs/operations.md
 * "Command line").
 *
 * On this machine (configuration from --config FILE and PROVISIOND_*, as the service reads it):
 *   provisiond [start] [--config FILE]   run the service until SIGTERM/SIGINT: stop accepting, let
 *                                        work in hand finish (shutdownGraceSeconds), exit 0; a second
 *                                        signal exits at once (130 SIGINT, 143 SIGTERM); 1 when the
 *                                        stop itself hangs past the grace + 30 s
 *   provisiond demo ...                  a throw-away service provisioning N simulated devices
 *   provisiond store copy ...            copy a whole store into an empty one and verify it
 *   provisiond ca init | import | show   the certificate authority of the data directory
 *   provisiond simulate ...              the fleet simulator (npm run fleet)
 * Against a running service (--url/PROVISIOND_URL, --key/PROVISIOND_API_KEY; the key is never printed):
 *   provisiond devices import|show|list, labels, funnel, events
 *
 * Exit status: 0 done; 1 failed (an API error prints its code and message); 2 usage; 78
 * configuration or start-up error (EX_CONFIG).
 */
import { readFile } from 'node:fs/promises';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import type { Config } from '../config/index.js';
import { isProvisiondError } from '../errors.js';
import { CaCommandError } from './ca.js';
import {
  ApiClient,
  DEVICE_STATES,
  KEY_ENV,
  RemoteError,
  URL_ENV,
  formatDevice,
  formatDeviceList,
  formatEvent,
  formatFunnel,
  importDevices,
  labelInputs,
  listDevices,
  tailEvents,
  writeLabels,
} from './remote.js';

/** A wrong command line: exit 2 with the command's usage. */
class UsageError extends Error {
  constructor(
    message: string,
    readonly command?: Command,
  ) {
    super(message);
  }
}

/** A coded failure that is not the API's (exit 1). */
class CliError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * The service's configuration: --config FILE and PROVISIOND_* (without the CLI's own client
 * variables). The service modules load only for the commands that need them (remote commands
 * start faster).
 */
async function serviceConfig(file: string | undefined): Promise<Config> {
  return (await configLoader())(file);
}

async function configLoader(): Promise<(file: string | undefined) => Config> {
  const { loadConfig } = await import('../config/index.js');
  return (file) => {
    const env = { ...process.env };
    delete env[URL_ENV];
    delete env[KEY_ENV];
    return loadConfig({ ...(file ? { file } : {}), env });
  };
}

function intOption(name: string, min: number, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`--${name} must be an integer from ${min} to ${max}`);
    return n;
  };
}

function fullUsage(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return `${names.join(' ')} ${cmd.usage()}`;
}

/** --url / --key with their environment variables (the key: better from the environment, not seen in `ps`). */
function remote(cmd: Command): Command {
  return cmd
    .addOption(new Option('--url <URL>', 'HTTP API of the service, e.g. https://prov.example.com').env(URL_ENV))
    .addOption(new Option('--key <KEY>', `API key (prefer ${KEY_ENV}: a command-line key shows in ps; never printed)`).env(KEY_ENV));
}

function client(cmd: Command): ApiClient {
  const { url, key } = cmd.optsWithGlobals<{ url?: string; key?: string }>();
  if (!url) throw new UsageError(`needs --url or ${URL_ENV}`, cmd);
  if (!key) throw new UsageError(`needs --key or ${KEY_ENV}`, cmd);
  try {
    new URL(url);
  } catch {
    throw new UsageError('--url is not a valid URL', cmd);
  }
  return new ApiClient({ url, key });
}

async function readInput(file: string, cmd: Command): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new UsageError(`${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : 'cannot be read'}`, cmd);
  }
}

async function runStart(configFile: string | undefined): Promise<number> {
  const config = await serviceConfig(configFile);
  const { startService } = await import('../main.js');
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

function buildProgram(setResult: (code: number) => void): Command {
  const program = new Command('provisiond')
    .description('Self-hostable IoT device provisioning service: run it, manage its CA, and operate a running one from a terminal.')
    .exitOverride()
    .configureOutput({ outputError: (str, write) => write(`provisiond: ${str.replace(/^error: /, '')}`) })
    .showHelpAfterError('(add --help for usage)')
    .addHelpText(
      'after',
      `
Remote commands (devices, labels, funnel, events) talk to a running service:
  --url URL or ${URL_ENV}, --key KEY or ${KEY_ENV} (the key is never printed).
Local commands (start, demo, store, ca) read the service configuration: --config FILE and PROVISIOND_* variables.

Exit status: 0 done, 1 failed (API errors print "CODE: message" on stderr), 2 usage, 78 configuration or start-up error.
See docs/operations.md, "Command line".`,
    );

  program
    .command('start', { isDefault: true })
    .description('run the service until SIGTERM/SIGINT (the default command)')
    .option('--config <FILE>', 'JSON configuration file (PROVISIOND_* variables override it)')
    .addHelpText('after', '\nA first signal stops gracefully (shutdownGraceSeconds), a second at once (exit 130 SIGINT, 143 SIGTERM).')
    .action(async (opts: { config?: string }) => setResult(await runStart(opts.config)));

  program
    .command('demo')
    .description('start a throw-away service and provision N simulated devices')
    .option('--devices <N>', 'devices to provision', intOption('devices', 1, 100_000), 100)
    .option('--concurrency <N>', 'devices provisioning at once', intOption('concurrency', 1, 1000), 20)
    .option('--json', 'print the summary as JSON', false)
    .option('--data-dir <DIR>', 'keep the service data here (default: a temporary directory, removed)')
    .action(async (opts: { devices: number; concurrency: number; json: boolean; dataDir?: string }) => {
      const { runDemo } = await import('./demo.js');
      const summary = await runDemo({ devices: opts.devices, concurrency: opts.concurrency, json: opts.json, ...(opts.dataDir ? { dataDir: opts.dataDir } : {}) });
      setResult(summary.failed === 0 ? 0 : 1);
    });

  const store = program.command('store').description('work on a store (SQLite file or Redis) directly');
  const copy = store
    .command('copy')
    .description('copy a whole store into an empty one and verify it (counts, digest)')
    .usage('--from SPEC --to SPEC [--from-prefix P] [--to-prefix P] [--batch N] [--config FILE]')
    .option('--from <SPEC>', 'source store')
    .option('--to <SPEC>', 'target store (must be empty)')
    .option('--from-prefix <P>', 'Redis key prefix of the source (default provisiond:)')
    .option('--to-prefix <P>', 'Redis key prefix of the target (default provisiond:)')
    .option('--batch <N>', 'entries per write', intOption('batch', 1, 10_000), 500)
    .option('--config <FILE>', 'service configuration, for the SPEC config')
    .addHelpText(
      'after',
      `
SPEC: sqlite:<path to provisiond.db> | redis://... | rediss://...  (prefix default provisiond:)
      | config  (the store of the service configuration: --config FILE and PROVISIOND_*: Sentinel, Cluster)
Exit 0 copied and verified, 1 target not empty or mismatch, 2 usage, 78 a store unreachable.`,
    );
  copy.action(async (opts: { from?: string; to?: string; fromPrefix?: string; toPrefix?: string; batch: number; config?: string }) => {
    if (opts.from === undefined || opts.to === undefined) throw new UsageError('store copy needs --from and --to', copy);
    const { parseStoreSpec, runStoreCopy, StoreSpecError } = await import('./store-copy.js');
    const { storeConfigOf } = await import('../main.js');
    const load = await configLoader();
    const configured = () => storeConfigOf(load(opts.config));
    try {
      setResult(
        await runStoreCopy({
          from: parseStoreSpec(opts.from, opts.fromPrefix, '--from', configured),
          to: parseStoreSpec(opts.to, opts.toPrefix, '--to', configured),
          batchSize: opts.batch,
        }),
      );
    } catch (err) {
      if (err instanceof StoreSpecError) throw new UsageError(err.message, copy);
      throw err;
    }
  });

  const ca = program
    .command('ca')
    .description('the certificate authority of the data directory (dataDir/ca)')
    .addHelpText('after', '\nThese read the service configuration (--config FILE, PROVISIOND_*): dataDir, ca.organization, ca.keyPassphrase, ca.*File.');
  ca.command('init')
    .description('create the CA now (root and issuing CA, keys 0600) and print its fingerprints; refuses when one exists')
    .option('--config <FILE>', 'service configuration file')
    .action(async (opts: { config?: string }) => {
      const { caInit } = await import('./ca.js');
      process.stdout.write(await caInit(await serviceConfig(opts.config)));
      setResult(0);
    });
  ca.command('import')
    .description('check operator CA material and install it under dataDir/ca/operator (key 0600); prints the ca.* settings that use it')
    .requiredOption('--root <FILE>', 'root certificate (PEM; may hold intermediates)')
    .requiredOption('--issuing-cert <FILE>', 'issuing CA certificate (PEM)')
    .requiredOption('--issuing-key <FILE>', 'its private key (PEM; encrypted with ca.keyPassphrase, or plain)')
    .option('--config <FILE>', 'service configuration file')
    .addHelpText('after', '\nChecked as at start: the key matches the certificate, CA flags and keyUsage, the chain to a self-signed root, valid now.')
    .action(async (opts: { root: string; issuingCert: string; issuingKey: string; config?: string }) => {
      const config = await serviceConfig(opts.config);
      const { caImport } = await import('./ca.js');
      try {
        process.stdout.write(await caImport(config, { root: opts.root, issuingCert: opts.issuingCert, issuingKey: opts.issuingKey }));
      } catch (err) {
        // material that does not pass the checks is this command's failure (1), not the configuration's
        if (isProvisiondError(err)) throw new CliError(err.code, err.message);
        throw err;
      }
      setResult(0);
    });
  ca.command('show')
    .description('print the CA certificates in use (subject, validity, SHA-256 fingerprints); reads no key')
    .option('--config <FILE>', 'service configuration file')
    .action(async (opts: { config?: string }) => {
      const { caShow } = await import('./ca.js');
      process.stdout.write(await caShow(await serviceConfig(opts.config)));
      setResult(0);
    });

  const devices = program.command('devices').description('the device registry of a running service');
  const importCmd = remote(
    devices
      .command('import')
      .description('register devices in bulk from a CSV (header id,model[,claimCode]) or a .json file ({"devices": [...]})')
      .argument('<file>', 'CSV or JSON file')
      .addOption(new Option('--mode <MODE>', 'atomic: nothing is written when a row fails; partial: the good rows are').choices(['atomic', 'partial']).default('atomic'))
      .option('--out <FILE>', 'write the row results (with generated claim codes) here, mode 0600, instead of stdout')
      .option('--json', 'the API result as JSON', false)
      .addHelpText('after', '\nPrints row,id,status,claimCode,code,message as CSV; generated claim codes are shown this once. Exit 1 when a row failed.'),
  );
  importCmd.action(async (file: string, opts: { mode: 'atomic' | 'partial'; out?: string; json: boolean }) => {
    const body = await readInput(file, importCmd);
    setResult(await importDevices(client(importCmd), file, body, { mode: opts.mode, json: opts.json, ...(opts.out ? { out: opts.out } : {}) }));
  });
  const show = remote(devices.command('show').description('one device').argument('<id>', 'device id').option('--json', 'as JSON', false));
  show.action(async (id: string, opts: { json: boolean }) => {
    const device = await client(show).json<Record<string, unknown>>('GET', `/v1/devices/${encodeURIComponent(id)}`);
    process.stdout.write(opts.json ? JSON.stringify(device, null, 2) + '\n' : formatDevice(device));
    setResult(0);
  });
  const list = remote(
    devices
      .command('list')
      .description('devices, optionally in one state or profile')
      .addOption(new Option('--state <STATE>', 'only devices in this state').choices([...DEVICE_STATES]))
      .option('--profile <ID>', 'only devices of this profile')
      .option('--limit <N>', 'at most N devices (0: all)', intOption('limit', 0, 10_000_000), 1000)
      .option('--json', 'as JSON lines (one device a line)', false),
  );
  list.action(async (opts: { state?: string; profile?: string; limit: number; json: boolean }) => {
    const items = await listDevices(client(list), { limit: opts.limit, ...(opts.state ? { state: opts.state } : {}), ...(opts.profile ? { profile: opts.profile } : {}) });
    process.stdout.write(opts.json ? items.map((d) => JSON.stringify(d) + '\n').join('') : formatDeviceList(items));
    setResult(0);
  });

  const labels = remote(
    program
      .command('labels')
      .description('claim-code labels: an HTML sheet, or one label as SVG or PNG')
      .argument('<file>', 'CSV with the columns id (or deviceId), claimCode[, model]: e.g. the --out of devices import')
      .requiredOption('--out <FILE>', 'where the labels go')
      .addOption(new Option('--format <FORMAT>', 'default: from the --out extension, else html').choices(['html', 'svg', 'png']))
      .option('--title <TEXT>', 'title of the HTML sheet')
      .addHelpText('after', '\nThe service keeps only hashes of claim codes, so the codes come from the file. svg and png render exactly one label; print the HTML sheet to PDF from a browser.'),
  );
  labels.action(async (file: string, opts: { out: string; format?: 'html' | 'svg' | 'png'; title?: string }) => {
    const ext = /\.(html|svg|png)$/i.exec(opts.out)?.[1]?.toLowerCase() as 'html' | 'svg' | 'png' | undefined;
    const format = opts.format ?? ext ?? 'html';
    let inputs;
    try {
      inputs = labelInputs(await readInput(file, labels));
    } catch (err) {
      if (err instanceof RemoteError) throw new UsageError(`${file}: ${err.message}`, labels);
      throw err;
    }
    await writeLabels(client(labels), inputs, { out: opts.out, format, ...(opts.title ? { title: opts.title } : {}) });
    setResult(0);
  });

  const funnel = remote(
    program
      .command('funnel')
      .description('the fleet report: devices per state, per profile, model and site, stalled devices')
      .option('--json', 'the API report as JSON', false),
  );
  funnel.action(async (opts: { json: boolean }) => {
    const report = await client(funnel).json<Parameters<typeof formatFunnel>[0]>('GET', '/v1/reports/fleet');
    process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : formatFunnel(report));
    setResult(0);
  });

  const events = remote(
    program
      .command('events')
      .description("tail the tenant's live events (GET /v1/events) until Ctrl-C")
      .option('--json', 'one JSON event a line', false)
      .option('--count <N>', 'stop after N events', intOption('count', 1, 1_000_000_000))
      .option('--since <ID>', 'replay the events after this event id first (Last-Event-ID)'),
  );
  events.action(async (opts: { json: boolean; count?: number; since?: string }) => {
    const api = client(events);
    const abort = new AbortController();
    const stop = () => abort.abort();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    let seen = 0;
    const how = await tailEvents(
      api,
      (e) => {
        process.stdout.write((opts.json ? JSON.stringify(e) : formatEvent(e)) + '\n');
        if (opts.count !== undefined && ++seen >= opts.count) abort.abort();
      },
      { signal: abort.signal, ...(opts.since ? { lastEventId: opts.since } : {}) },
    );
    if (how === 'ended') throw new CliError('STREAM_ENDED', 'the service ended the event stream (stopping?)');
    setResult(0);
  });

  program
    .command('simulate')
    .description('run the fleet simulator (as npm run fleet): simulated devices against a service or a throw-away one (--local)')
    .usage('[--local | --api-url URL ...] --devices N [options]   (simulate --help lists them)')
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .argument('[options...]')
    .action(async (_args: string[], _opts: unknown, cmd: Command) => {
      const { parseFleetArgs, USAGE, UsageError: FleetUsageError } = await import('../../firmware-sim/fleet/args.js');
      let cli;
      try {
        cli = parseFleetArgs(cmd.args, process.env);
      } catch (err) {
        if (err instanceof FleetUsageError) throw new UsageError(`simulate: ${err.message}\n\n${USAGE.replace('npm run fleet --', 'provisiond simulate')}`);
        throw err;
      }
      if (!cli) {
        console.log(USAGE.replace('npm run fleet --', 'provisiond simulate'));
        return setResult(0);
      }
      // --local starts a service from process.env: without the CLI's client variables
      delete process.env[URL_ENV];
      delete process.env[KEY_ENV];
      const { runFleetCli } = await import('../../firmware-sim/cli.js');
      const report = await runFleetCli(cli);
      setResult(report.summary.failed === 0 ? 0 : 1);
    });

  return program;
}

async function main(argv: string[]): Promise<number> {
  let result = 0;
  const program = buildProgram((code) => (result = code));
  // `start` is the default command: a word that names no command is an error, not start's argument
  const first = argv[0];
  if (first !== undefined && !first.startsWith('-') && !program.commands.some((c) => c.name() === first || c.aliases().includes(first)) && first !== 'help') {
    throw new UsageError(`unknown command ${first} (provisiond --help lists them)`);
  }
  await program.parseAsync(argv, { from: 'user' });
  return result;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof CommanderError) {
      // help and version: 0; every other complaint of the parser (already printed): usage, 2
      process.exit(err.exitCode === 0 ? 0 : 2);
    }
    if (err instanceof UsageError) {
      console.error(`provisiond: ${err.message}${err.command ? `\nusage: ${fullUsage(err.command)}\n(add --help for more)` : ''}`);
      process.exit(2);
    }
    if (err instanceof RemoteError || err instanceof CliError || err instanceof CaCommandError) {
      // the API's code first (stable, for scripts), then its message
      console.error(`provisiond: ${err.code}: ${err.message}`);
      process.exit(1);
    }
    if (isProvisiondError(err)) {
      // the code first (stable, for scripts), then the message; neither carries a secret value
      console.error(`provisiond: ${err.code}: ${err.message}`);
      process.exit(78); // EX_CONFIG
    }
    console.error(err);
    process.exit(1);
  },
);

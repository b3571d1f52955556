/** The fleet runner's command line (firmware-sim/cli.ts), parsed and checked without side effects. */
import { parseArgs } from 'node:util';
import { parseMix, parseSourceAddresses, type Mix } from './plan.js';

export const USAGE = `usage: npm run fleet -- [target] --devices N [options]

target (one of):
  --local                          start a throw-away provisiond in this process (SQLite in a temp dir)
  --api-url URL                    a deployment's HTTP API, e.g. https://prov.example.com
    --factory-key KEY              API key with the factory role   (or env FLEET_FACTORY_KEY)
    --installer-key KEY            API key with the installer role (or env FLEET_INSTALLER_KEY)

fleet:
  --devices N                      devices provisioned directly (default 100); hub children come on top
  --concurrency C                  at most C devices provisioning at once (default 20)
  --rate R                         start R devices per second instead (open loop; with --concurrency, also capped)
  --mix SPEC                       model weights, e.g. thermostat:6,camera:3,hub:1 (default thermostat:1,camera:1)
  --children-per-hub K             devices each hub onboards over its own connection (default 2)
  --hold SECONDS                   keep the fleet connected this long after the last device is provisioned,
                                   sending telemetry (default 0: disconnect each device once provisioned)
  --no-telemetry                   hold without telemetry

chaos (fractions 0..1 of the devices that are not hubs):
  --drop-rate F                    cut the connection of this fraction of held devices once, at a random
                                   time of the hold; they reconnect (needs --hold)
  --factory-reset-fraction F       these do a factory reset once provisioned and are re-provisioned
  --never-ack-fraction F           these never acknowledge their configuration (stay "configuring")
  --seed N                         which devices get the chaos (default random; the report names it)

network and timing:
  --pre-register                   register the devices (hubs excepted) in bulk before the clock starts, as a
                                   factory line does; the run then times claim -> provisioned only
  --source-addresses N|LIST        MQTT connections from 127.0.0.1 .. 127.0.0.N in turn (or from the listed
                                   addresses), to go past one address's ephemeral ports
  --timeout SECONDS                how long a device waits for each answer (default 15)

output:
  --json FILE                      write the JSON report (- for stdout)
  --html FILE                      write the HTML report (self-contained, inline SVG charts)
  --quiet                          no progress bar
  --data-dir DIR                   with --local: keep the service's data here
  --help

Exit status: 0 when no device failed (never-ack devices are not failures), 1 otherwise, 2 usage.`;

export interface FleetCli {
  local: boolean;
  apiUrl?: string;
  factoryKey?: string;
  installerKey?: string;
  devices: number;
  concurrency?: number;
  rate?: number;
  mix?: Mix;
  childrenPerHub: number;
  holdSeconds: number;
  telemetry: boolean;
  dropFraction: number;
  factoryResetFraction: number;
  neverAckFraction: number;
  seed?: number;
  sourceAddresses?: string[];
  preRegister: boolean;
  timeoutMs: number;
  json?: string;
  html?: string;
  quiet: boolean;
  dataDir?: string;
}

export class UsageError extends Error {}

function int(name: string, v: string | undefined, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`--${name} must be an integer from ${min} to ${max} (got ${v})`);
  return n;
}

function num(name: string, v: string | undefined, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < min || n > max) throw new UsageError(`--${name} must be a number from ${min} to ${max} (got ${v})`);
  return n;
}

/** `undefined` means --help. */
export function parseFleetArgs(argv: string[], env: Record<string, string | undefined> = {}): FleetCli | undefined {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        local: { type: 'boolean', default: false },
        'api-url': { type: 'string' },
        'factory-key': { type: 'string' },
        'installer-key': { type: 'string' },
        devices: { type: 'string' },
        concurrency: { type: 'string' },
        rate: { type: 'string' },
        mix: { type: 'string' },
        'children-per-hub': { type: 'string' },
        hold: { type: 'string' },
        'no-telemetry': { type: 'boolean', default: false },
        'drop-rate': { type: 'string' },
        'factory-reset-fraction': { type: 'string' },
        'never-ack-fraction': { type: 'string' },
        seed: { type: 'string' },
        'source-addresses': { type: 'string' },
        'pre-register': { type: 'boolean', default: false },
        timeout: { type: 'string' },
        json: { type: 'string' },
        html: { type: 'string' },
        quiet: { type: 'boolean', default: false },
        'data-dir': { type: 'string' },
        help: { type: 'boolean', default: false },
      },
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help) return undefined;
  const apiUrl = values['api-url'];
  if (values.local && apiUrl) throw new UsageError('give either --local or --api-url, not both');
  if (!values.local && !apiUrl) throw new UsageError('give --api-url (with --factory-key and --installer-key) or --local');
  const factoryKey = values['factory-key'] ?? env.FLEET_FACTORY_KEY;
  const installerKey = values['installer-key'] ?? env.FLEET_INSTALLER_KEY;
  if (apiUrl) {
    if (!/^https?:\/\/[^/]+/.test(apiUrl)) throw new UsageError(`--api-url must be an http:// or https:// URL (got ${apiUrl})`);
    if (!factoryKey || !installerKey) throw new UsageError('--api-url needs --factory-key and --installer-key (or FLEET_FACTORY_KEY and FLEET_INSTALLER_KEY)');
  }
  if (values['data-dir'] && !values.local) throw new UsageError('--data-dir is for --local');
  const holdSeconds = num('hold', values.hold, 0, 86_400) ?? 0;
  const dropFraction = num('drop-rate', values['drop-rate'], 0, 1) ?? 0;
  if (dropFraction > 0 && holdSeconds === 0) throw new UsageError('--drop-rate cuts connections of held devices: give --hold SECONDS as well');
  let mix: Mix | undefined;
  try {
    mix = values.mix === undefined ? undefined : parseMix(values.mix);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  let sourceAddresses: string[] | undefined;
  try {
    sourceAddresses = values['source-addresses'] === undefined ? undefined : parseSourceAddresses(values['source-addresses']);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const out: FleetCli = {
    local: values.local,
    devices: int('devices', values.devices, 1, 1_000_000) ?? 100,
    childrenPerHub: int('children-per-hub', values['children-per-hub'], 0, 1000) ?? 2,
    holdSeconds,
    telemetry: !values['no-telemetry'],
    dropFraction,
    factoryResetFraction: num('factory-reset-fraction', values['factory-reset-fraction'], 0, 1) ?? 0,
    neverAckFraction: num('never-ack-fraction', values['never-ack-fraction'], 0, 1) ?? 0,
    preRegister: values['pre-register'],
    timeoutMs: (num('timeout', values.timeout, 1, 3600) ?? 15) * 1000,
    quiet: values.quiet,
  };
  if (apiUrl) Object.assign(out, { apiUrl: apiUrl.replace(/\/+$/, ''), factoryKey, installerKey });
  const concurrency = int('concurrency', values.concurrency, 1, 100_000);
  const rate = num('rate', values.rate, 0.001, 100_000);
  if (concurrency !== undefined) out.concurrency = concurrency;
  if (rate !== undefined) out.rate = rate;
  if (mix) out.mix = mix;
  const seed = int('seed', values.seed, 0, 2 ** 31 - 1);
  if (seed !== undefined) out.seed = seed;
  if (sourceAddresses) out.sourceAddresses = sourceAddresses;
  if (values.json) out.json = values.json;
  if (values.html) out.html = values.html;
  if (values['data-dir']) out.dataDir = values['data-dir'];
  return out;
}

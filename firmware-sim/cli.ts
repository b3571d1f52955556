#!/usr/bin/env node
/**
 * `npm run fleet`: load-test a provisiond deployment (or a throw-away one, --local) with a fleet of
 * simulated devices, and write what happened as a JSON and a self-contained HTML report.
 * `npm run fleet -- --help` lists the options; docs/performance.md explains the report.
 *
 * Everything but --local speaks only the documented protocol (HTTP API, MQTT over TLS). --local
 * loads the service from src/ into this process, for a run without a deployment.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, hostname, totalmem } from 'node:os';
import { dirname } from 'node:path';
import cliProgress from 'cli-progress';
import { USAGE, UsageError, parseFleetArgs, type FleetCli } from './fleet/args.js';
import { renderHtmlReport } from './fleet/html.js';
import { formatSummary, reportToJson, type LoadReport } from './fleet/report.js';
import { runFleet, type FleetProgress } from './fleet/runner.js';

async function write(file: string, text: string): Promise<void> {
  if (file === '-') {
    process.stdout.write(text.endsWith('\n') ? text : text + '\n');
    return;
  }
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, text);
}

function progressBars(quiet: boolean) {
  if (quiet) return { update: (_p: FleetProgress) => undefined, stop: () => undefined };
  const options = { stream: process.stderr, hideCursor: true, noTTYOutput: true, notTTYSchedule: 2000, barsize: 30 };
  const provisioning = new cliProgress.SingleBar(
    { ...options, format: 'provisioning |{bar}| {value}/{total} devices  ok {provisioned}  never-ack {neverAck}  failed {failed}  in flight {inFlight}  {perSecond}/s  {duration}s' },
    cliProgress.Presets.shades_classic,
  );
  const holding = new cliProgress.SingleBar(
    { ...options, format: 'holding      |{bar}| {value}/{total} s  held {held}  telemetry {telemetry}  cut {drops}  reconnected {reconnects}  failed {failed}' },
    cliProgress.Presets.shades_classic,
  );
  let phase: FleetProgress['phase'] | 'none' = 'none';
  return {
    update: (p: FleetProgress) => {
      if (p.phase === 'provisioning') {
        if (phase === 'none') provisioning.start(p.total, 0, { provisioned: 0, neverAck: 0, failed: 0, inFlight: 0, perSecond: '0.0' });
        phase = 'provisioning';
        provisioning.update(p.done, {
          provisioned: p.provisioned,
          neverAck: p.neverAck,
          failed: p.failed,
          inFlight: p.inFlight,
          perSecond: (p.provisioned / Math.max(0.001, p.elapsedMs / 1000)).toFixed(1),
        });
      } else {
        if (phase !== 'holding') {
          if (phase === 'provisioning') provisioning.stop();
          holding.start(Math.round(p.holdMs / 1000), 0, { held: p.held, telemetry: p.telemetryMessages, drops: p.drops, reconnects: p.reconnects, failed: p.failed });
          phase = 'holding';
        }
        holding.update(Math.min(Math.round(p.holdMs / 1000), Math.floor(p.holdElapsedMs / 1000)), {
          held: p.held,
          telemetry: p.telemetryMessages,
          drops: p.drops,
          reconnects: p.reconnects,
          failed: p.failed,
        });
      }
    },
    stop: () => {
      if (phase === 'provisioning') provisioning.stop();
      if (phase === 'holding') holding.stop();
      phase = 'none';
    },
  };
}

/** Runs what the command line asked for; `silent` prints nothing (tests). */
export async function runFleetCli(cli: FleetCli, { silent = false } = {}): Promise<LoadReport> {
  let local: import('../src/cli/local-service.js').LocalService | undefined;
  if (cli.local) {
    const { startLocalService } = await import('../src/cli/local-service.js');
    local = await startLocalService(cli.dataDir ? { dataDir: cli.dataDir } : {});
    if (!cli.quiet && !silent) console.error(`fleet: throw-away provisiond at ${local.apiUrl}, MQTT/TLS port ${local.mqttPort}, data in ${local.dataDir}`);
  }
  const bars = progressBars(cli.quiet || silent);
  try {
    const target = local ?? { apiUrl: cli.apiUrl!, factoryKey: cli.factoryKey!, installerKey: cli.installerKey! };
    const fleet = await runFleet({
      apiUrl: target.apiUrl,
      factoryKey: target.factoryKey,
      installerKey: target.installerKey,
      devices: cli.devices,
      ...(cli.concurrency !== undefined ? { concurrency: cli.concurrency } : {}),
      ...(cli.rate !== undefined ? { rate: cli.rate } : {}),
      ...(cli.mix ? { mix: cli.mix } : {}),
      childrenPerHub: cli.childrenPerHub,
      holdSeconds: cli.holdSeconds,
      telemetry: cli.telemetry && cli.holdSeconds > 0,
      dropFraction: cli.dropFraction,
      factoryResetFraction: cli.factoryResetFraction,
      neverAckFraction: cli.neverAckFraction,
      ...(cli.seed !== undefined ? { seed: cli.seed } : {}),
      ...(cli.sourceAddresses ? { sourceAddresses: cli.sourceAddresses } : {}),
      preRegister: cli.preRegister,
      timeoutMs: cli.timeoutMs,
      onProgress: bars.update,
    });
    bars.stop();
    const cpu = cpus();
    const machine = {
      hostname: hostname(),
      cpus: cpu.length,
      cpuModel: cpu[0]?.model.trim() ?? 'unknown',
      memoryGiB: Math.round(totalmem() / 2 ** 30),
      node: process.versions.node,
      platform: `${process.platform} ${process.arch}`,
    };
    // where the run happened, next to what it ran against
    const { kind, version, startedAt, finishedAt, target: runTarget, ...rest } = fleet.load;
    const report: LoadReport = { kind, version, startedAt, finishedAt, target: runTarget, machine, ...rest };
    if (local) {
      report.target.local = true;
      report.serviceStates = await local.countDevicesByState();
    }
    if (cli.json) await write(cli.json, reportToJson(report));
    if (cli.html) await write(cli.html, renderHtmlReport(report));
    const summary = formatSummary(report) + (report.serviceStates ? `\n  service records    ${JSON.stringify(report.serviceStates)}` : '');
    if (!silent) {
      if (cli.json === '-' || cli.html === '-') console.error(summary);
      else console.log(summary);
    }
    return report;
  } finally {
    bars.stop();
    await local?.stop();
  }
}

async function main(argv: string[]): Promise<number> {
  let cli: FleetCli | undefined;
  try {
    cli = parseFleetArgs(argv, process.env);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    console.error(`fleet: ${err.message}\n\n${USAGE}`);
    return 2;
  }
  if (!cli) {
    console.log(USAGE);
    return 0;
  }
  const report = await runFleetCli(cli);
  return report.summary.failed === 0 ? 0 : 1;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(`fleet: ${(err as Error).stack ?? String(err)}`);
      process.exit(1);
    },
  );
}

/** Fleet reports for one tenant, paged out of the store so large fleets stream. */
import type { Clock } from '../clock.js';
import type { FleetReport } from '../../schemas/types.js';
import type { Store } from '../store/index.js';
import type { TenantContext } from './context.js';
import { FleetReportBuilder, deviceCsvHeader, deviceCsvRow } from './reports.js';
import { toDeviceView } from './service.js';

const PAGE = 1000;

export class FleetReports {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
  ) {}

  async report(ctx: Pick<TenantContext, 'tenantId'>): Promise<FleetReport> {
    const builder = new FleetReportBuilder(ctx.tenantId, this.clock.now());
    for await (const device of this.#all(ctx.tenantId)) builder.add(device);
    return builder.build();
  }

  /** The tenant's devices as CSV (RFC 4180), one chunk per page. */
  async *csv(ctx: Pick<TenantContext, 'tenantId'>): AsyncGenerator<string> {
    yield deviceCsvHeader();
    let rows = '';
    let n = 0;
    for await (const device of this.#all(ctx.tenantId)) {
      rows += deviceCsvRow(device);
      if (++n % PAGE === 0) {
        yield rows;
        rows = '';
      }
    }
    if (rows) yield rows;
  }

  async *#all(tenantId: string) {
    let after: string | undefined;
    for (;;) {
      const page = await this.store.listDevices({ tenantId, limit: PAGE, ...(after ? { after } : {}) });
      for (const d of page) yield toDeviceView(d);
      if (page.length < PAGE) return;
      after = page[page.length - 1]!.id;
    }
  }
}

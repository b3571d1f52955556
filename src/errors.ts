/**
 * The one error base of provisiond. Every failure a client can cause carries a stable `code`
 * (never match on message text), the HTTP status it maps to, and, for MQTT, the CONNACK return
 * code to use when it happens while a client connects. Each domain defines its own family
 * beside its module (src/ca/errors.ts, src/store/errors.ts, ...); the transports translate
 * in exactly one place each (src/api/errors.ts, src/broker/replies.ts).
 */
export interface ErrorSpec {
  /** HTTP status when the error reaches the API. */
  readonly status: number;
  /** One-line description used in docs and as the default message. */
  readonly description: string;
}

export class ProvisiondError extends Error {
  readonly code: string;
  readonly status: number;
  /** Extra fields safe to show to the client (never secrets). */
  readonly details: Record<string, unknown> | undefined;

  constructor(
    code: string,
    spec: ErrorSpec,
    message?: string,
    options?: { cause?: unknown; details?: Record<string, unknown> },
  ) {
    super(message ?? spec.description, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.status = spec.status;
    this.details = options?.details;
  }
}

/**
 * Builds a typed error family: `const CaError = errorFamily('CaError', { CSR_MALFORMED: {...} })`
 * then `throw new CaError('CSR_MALFORMED', 'optional message')`. The code table is exported with
 * the class so docs and tests can enumerate every code.
 */
export function errorFamily<C extends string>(name: string, table: Record<C, ErrorSpec>) {
  const Family = class extends ProvisiondError {
    static readonly codes = table;
    constructor(code: C, message?: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
      super(code, table[code], message, options);
    }
  };
  Object.defineProperty(Family, 'name', { value: name });
  return Family;
}

export function isProvisiondError(err: unknown): err is ProvisiondError {
  return err instanceof ProvisiondError;
}

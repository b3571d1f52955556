/**
 * The JSON Schemas of schemas/ (the single contract for HTTP bodies, MQTT payloads and the service
 * configuration), loaded once and shared: Fastify gets them by $id (app.addSchema), everything else
 * validates through one Ajv instance built here. Types come from schemas/types.ts,
 * generated from the same files.
 */
import { Ajv, type ErrorObject, type Options, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import apiKeyCreateRequestSchema from '../schemas/api-key-create-request.json' with { type: 'json' };
import apiKeySchema from '../schemas/api-key.json' with { type: 'json' };
import auditEntrySchema from '../schemas/audit-entry.json' with { type: 'json' };
import claimRequestSchema from '../schemas/claim-request.json' with { type: 'json' };
import claimResponseSchema from '../schemas/claim-response.json' with { type: 'json' };
import commonSchema from '../schemas/common.json' with { type: 'json' };
import configDocumentSchema from '../schemas/config-document.json' with { type: 'json' };
import configSchema from '../schemas/config.json' with { type: 'json' };
import deviceEventSchema from '../schemas/device-event.json' with { type: 'json' };
import deviceImportRequestSchema from '../schemas/device-import-request.json' with { type: 'json' };
import deviceImportResultSchema from '../schemas/device-import-result.json' with { type: 'json' };
import deviceRegisterRequestSchema from '../schemas/device-register-request.json' with { type: 'json' };
import deviceSchema from '../schemas/device.json' with { type: 'json' };
import errorSchema from '../schemas/error.json' with { type: 'json' };
import factoryBundlesRequestSchema from '../schemas/factory-bundles-request.json' with { type: 'json' };
import factoryBundlesResultSchema from '../schemas/factory-bundles-result.json' with { type: 'json' };
import factoryIssueRequestSchema from '../schemas/factory-issue-request.json' with { type: 'json' };
import factoryIssueResultSchema from '../schemas/factory-issue-result.json' with { type: 'json' };
import fleetReportSchema from '../schemas/fleet-report.json' with { type: 'json' };
import labelsRequestSchema from '../schemas/labels-request.json' with { type: 'json' };
import manufacturerCaRequestSchema from '../schemas/manufacturer-ca-request.json' with { type: 'json' };
import mqttCommandSchema from '../schemas/mqtt-command.json' with { type: 'json' };
import mqttConfigAckSchema from '../schemas/mqtt-config-ack.json' with { type: 'json' };
import mqttCsrAcceptedSchema from '../schemas/mqtt-csr-accepted.json' with { type: 'json' };
import mqttCsrRequestSchema from '../schemas/mqtt-csr-request.json' with { type: 'json' };
import mqttErrorSchema from '../schemas/mqtt-error.json' with { type: 'json' };
import mqttHubClaimSchema from '../schemas/mqtt-hub-claim.json' with { type: 'json' };
import mqttHubClaimedSchema from '../schemas/mqtt-hub-claimed.json' with { type: 'json' };
import mqttStateSchema from '../schemas/mqtt-state.json' with { type: 'json' };
import mqttTelemetrySchema from '../schemas/mqtt-telemetry.json' with { type: 'json' };
import networkSettingsSchema from '../schemas/network-settings.json' with { type: 'json' };
import profileRequestSchema from '../schemas/profile-request.json' with { type: 'json' };
import profileSchema from '../schemas/profile.json' with { type: 'json' };
import securityPolicySchema from '../schemas/security-policy.json' with { type: 'json' };
import tenantCreateRequestSchema from '../schemas/tenant-create-request.json' with { type: 'json' };
import tenantUpdateRequestSchema from '../schemas/tenant-update-request.json' with { type: 'json' };
import tenantSchema from '../schemas/tenant.json' with { type: 'json' };

export const SCHEMA_BASE = 'https://schemas.provisiond.dev/v1/';

/** Every schema document, each with its $id. */
export const schemaDocuments: readonly { $id: string }[] = [
  apiKeyCreateRequestSchema,
  apiKeySchema,
  auditEntrySchema,
  claimRequestSchema,
  claimResponseSchema,
  commonSchema,
  configDocumentSchema,
  configSchema,
  deviceEventSchema,
  deviceImportRequestSchema,
  deviceImportResultSchema,
  deviceRegisterRequestSchema,
  deviceSchema,
  errorSchema,
  factoryBundlesRequestSchema,
  factoryBundlesResultSchema,
  factoryIssueRequestSchema,
  factoryIssueResultSchema,
  fleetReportSchema,
  labelsRequestSchema,
  manufacturerCaRequestSchema,
  mqttCommandSchema,
  mqttConfigAckSchema,
  mqttCsrAcceptedSchema,
  mqttCsrRequestSchema,
  mqttErrorSchema,
  mqttHubClaimSchema,
  mqttHubClaimedSchema,
  mqttStateSchema,
  mqttTelemetrySchema,
  networkSettingsSchema,
  profileRequestSchema,
  profileSchema,
  securityPolicySchema,
  tenantCreateRequestSchema,
  tenantUpdateRequestSchema,
  tenantSchema,
];

export type SchemaName =
  | 'api-key-create-request'
  | 'api-key'
  | 'audit-entry'
  | 'claim-request'
  | 'claim-response'
  | 'common'
  | 'config-document'
  | 'config'
  | 'device-event'
  | 'device-import-request'
  | 'device-import-result'
  | 'device-register-request'
  | 'device'
  | 'error'
  | 'factory-bundles-request'
  | 'factory-bundles-result'
  | 'factory-issue-request'
  | 'factory-issue-result'
  | 'fleet-report'
  | 'labels-request'
  | 'manufacturer-ca-request'
  | 'mqtt-command'
  | 'mqtt-config-ack'
  | 'mqtt-csr-accepted'
  | 'mqtt-csr-request'
  | 'mqtt-error'
  | 'mqtt-hub-claim'
  | 'mqtt-hub-claimed'
  | 'mqtt-state'
  | 'mqtt-telemetry'
  | 'network-settings'
  | 'profile-request'
  | 'profile'
  | 'security-policy'
  | 'tenant-create-request'
  | 'tenant-update-request'
  | 'tenant';

/** The $id of a schema file, for `{ $ref: schemaRef('device') }` in Fastify route schemas. */
export function schemaRef(name: SchemaName): string {
  return `${SCHEMA_BASE}${name}.json`;
}

// ajv-formats is CommonJS; under NodeNext its default import may be the module object.
const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ??
  addFormatsModule) as (ajv: Ajv) => Ajv;

export function createAjv(options: Options = {}): Ajv {
  const ajv = new Ajv({ allErrors: true, strict: true, ...options });
  addFormats(ajv);
  for (const doc of schemaDocuments) ajv.addSchema(doc);
  return ajv;
}

export interface Validator<T> {
  (data: unknown): data is T;
  errors?: ErrorObject[] | null;
}

/** The compiled validator of a schema file, or of one of its definitions. */
export function getValidator<T>(ajv: Ajv, name: SchemaName, definition?: string): Validator<T> {
  const ref = definition ? `${schemaRef(name)}#/definitions/${definition}` : schemaRef(name);
  const fn = ajv.getSchema(ref) as ValidateFunction<T> | undefined;
  if (!fn) throw new Error(`schema ${ref} is not registered`);
  return fn;
}

/** One clause per problem, e.g. "items/0/status must be one of: applied, failed". */
export function describeErrors(errors: readonly ErrorObject[] | null | undefined, root = '(root)'): string {
  if (!errors || errors.length === 0) return 'invalid';
  const lines = new Set<string>();
  for (const e of errors) {
    const at = e.instancePath ? e.instancePath.slice(1) : root;
    if (e.keyword === 'additionalProperties') {
      lines.add(`${at === root ? '' : at + '/'}${String(e.params.additionalProperty)} is not allowed`);
    } else if (e.keyword === 'enum') {
      lines.add(`${at} must be one of: ${(e.params.allowedValues as unknown[]).join(', ')}`);
    } else if (e.keyword === 'oneOf') {
      continue;
    } else {
      lines.add(`${at} ${e.message ?? 'is invalid'}`);
    }
  }
  return [...lines].join('; ') || 'invalid';
}

import type { FastifyInstance } from 'fastify';
import type { Ajv } from 'ajv';
import type { DeviceImport, Lifecycle, Profiles, ProvisioningService, Tenants, ApiKeys } from '../../provisioning/index.js';
import type { EventStreams } from '../../alerts/index.js';
import { schemaRef } from '../../schemas.js';

export interface RouteDeps {
  service: ProvisioningService;
  lifecycle: Lifecycle;
  profiles: Profiles;
  tenants: Tenants;
  apiKeys: ApiKeys;
  streams: EventStreams;
  imports: DeviceImport;
  ajv: Ajv;
  ca: { rootPem: string; chainPems: readonly string[] };
}

export type Routes = (app: FastifyInstance, deps: RouteDeps) => void;

export const errorResponses = {
  '4xx': { $ref: schemaRef('error') },
  '5xx': { $ref: schemaRef('error') },
};

export const idParams = {
  type: 'object',
  required: ['id'],
  properties: { id: { $ref: `${schemaRef('common')}#/definitions/DeviceId` } },
} as const;

export const reasonBody = {
  type: 'object',
  additionalProperties: false,
  properties: { reason: { type: 'string', minLength: 1, maxLength: 256 } },
} as const;

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, envName, loadConfig } from '../../src/config/index.js';

function fails(sources: Parameters<typeof loadConfig>[0]): string {
  try {
    loadConfig(sources);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected the configuration to be refused');
}

describe('configuration', () => {
  it('runs out of the box with defaults', () => {
    const c = loadConfig({ env: {} });
    expect(c.dataDir).toBe('./data');
    expect(c.http.port).toBe(8080);
    expect(c.mqtt.port).toBe(8883);
    expect(c.publicHostname).toBe('localhost');
    expect(c.ca.deviceCertValidityDays).toBe(365);
    expect(c.provisioning.securityPolicy.minTlsVersion).toBe('1.2');
  });

  it('maps settings to environment names by one rule', () => {
    expect(envName(['http', 'port'])).toBe('PROVISIOND_HTTP__PORT');
    expect(envName(['ca', 'deviceCertValidityDays'])).toBe('PROVISIOND_CA__DEVICE_CERT_VALIDITY_DAYS');
    expect(envName(['dataDir'])).toBe('PROVISIOND_DATA_DIR');
    const c = loadConfig({
      env: {
        PROVISIOND_HTTP__PORT: '9000',
        PROVISIOND_CA__DEVICE_CERT_VALIDITY_DAYS: '30',
        PROVISIOND_PUBLIC_HOSTNAME: 'prov.example.com',
        PROVISIOND_PROVISIONING__DEFAULT_NETWORK: '{"wifi":{"ssid":"site","security":"open"}}',
        UNRELATED: 'x',
      },
    });
    expect(c.http.port).toBe(9000);
    expect(c.ca.deviceCertValidityDays).toBe(30);
    expect(c.publicHostname).toBe('prov.example.com');
    expect(c.provisioning.defaultNetwork?.wifi.ssid).toBe('site');
  });

  it('layers defaults < file < environment', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
    try {
      const file = join(dir, 'c.json');
      writeFileSync(file, JSON.stringify({ http: { port: 7000, host: '127.0.0.1' }, logLevel: 'debug' }));
      const c = loadConfig({ env: { PROVISIOND_CONFIG: file, PROVISIOND_HTTP__PORT: '7001' } });
      expect(c.http).toMatchObject({ port: 7001, host: '127.0.0.1' });
      expect(c.logLevel).toBe('debug');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a bad setting names the setting, where it came from, and what is allowed', () => {
    expect(fails({ env: { PROVISIOND_HTTP__PORT: '70000' } })).toContain('http.port: must be <= 65535 (got 70000, from env PROVISIOND_HTTP__PORT)');
    expect(fails({ env: { PROVISIOND_MQTT__PORT: 'abc' } })).toContain('mqtt.port: must be integer');
    expect(fails({ env: { PROVISIOND_LOG_LEVEL: 'loud' } })).toContain('logLevel: must be one of: fatal, error, warn, info, debug, trace, silent');
    expect(fails({ env: { PROVISIOND_HTTP__PROT: '1' } })).toContain('http.prot: is not a known setting (from env PROVISIOND_HTTP__PROT)');
    expect(fails({ env: { PROVISIOND_CA__ISSUING_CERT_FILE: '/x.pem' } })).toContain('must be set together');
    expect(fails({ env: { PROVISIOND_PROVISIONING__DEFAULT_NETWORK: '{"wifi":{"ssid":"s","security":"wpa2-psk"}}' } })).toContain(
      'provisioning.defaultNetwork.wifi.secret is required',
    );
    expect(fails({ env: { PROVISIOND_PROVISIONING__DEFAULT_NETWORK: '{"wifi":' } })).toContain('looks like JSON but does not parse');
  });

  it('an unreadable or invalid file is refused with its path', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
    try {
      expect(fails({ file: join(dir, 'missing.json'), env: {} })).toContain('missing.json');
      writeFileSync(join(dir, 'bad.json'), '{ nope');
      expect(fails({ file: join(dir, 'bad.json'), env: {} })).toContain('is not valid JSON');
      writeFileSync(join(dir, 'extra.json'), JSON.stringify({ mqtt: { tls: true } }));
      expect(fails({ file: join(dir, 'extra.json'), env: {} })).toContain(`mqtt.tls: is not a known setting (from config file ${join(dir, 'extra.json')})`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('takes Redis Sentinel and Cluster settings, and refuses half-made or misplaced ones', () => {
    const sentinel = loadConfig({
      env: {
        PROVISIOND_STORE__KIND: 'redis',
        PROVISIOND_STORE__REDIS_URL: 'redis://:pw@master/2',
        PROVISIOND_STORE__REDIS_TOPOLOGY: 'sentinel',
        PROVISIOND_STORE__REDIS_SENTINELS: '["10.0.0.1:26379","sentinel-b:26379"]',
      },
    });
    expect(sentinel.store).toMatchObject({ redisTopology: 'sentinel', redisSentinels: ['10.0.0.1:26379', 'sentinel-b:26379'], redisSentinelName: 'mymaster' });
    const cluster = loadConfig({
      env: {
        PROVISIOND_STORE__KIND: 'redis',
        PROVISIOND_STORE__REDIS_URL: 'redis://node-a:7000',
        PROVISIOND_STORE__REDIS_TOPOLOGY: 'cluster',
        PROVISIOND_STORE__REDIS_CLUSTER_NODES: '["node-b:7000"]',
      },
    });
    expect(cluster.store).toMatchObject({ redisTopology: 'cluster', redisClusterNodes: ['node-b:7000'] });
    expect(loadConfig({ env: {} }).store.redisTopology).toBe('standalone');

    const redis = { PROVISIOND_STORE__KIND: 'redis', PROVISIOND_STORE__REDIS_URL: 'redis://h:6379' };
    expect(fails({ env: { ...redis, PROVISIOND_STORE__REDIS_TOPOLOGY: 'sentinel' } })).toContain(
      'store.redisSentinels is required when store.redisTopology is "sentinel"',
    );
    expect(fails({ env: { ...redis, PROVISIOND_STORE__REDIS_CLUSTER_NODES: '["b:7000"]' } })).toContain(
      'store.redisClusterNodes is set but store.redisTopology is "standalone"',
    );
    expect(fails({ env: { ...redis, PROVISIOND_STORE__REDIS_TOPOLOGY: 'cluster', PROVISIOND_STORE__REDIS_SENTINELS: '["b:1"]' } })).toContain(
      'store.redisSentinels is set but store.redisTopology is "cluster"',
    );
    expect(fails({ env: { ...redis, PROVISIOND_STORE__REDIS_TOPOLOGY: 'cluster', PROVISIOND_STORE__REDIS_CLUSTER_NODES: '["no-port"]' } })).toContain(
      'store.redisClusterNodes.0: must match pattern',
    );
    expect(fails({ env: { ...redis, PROVISIOND_STORE__REDIS_TOPOLOGY: 'ring' } })).toContain('store.redisTopology');
  });
  it('never echoes a refused secret: keys, passwords, URLs, objects that may hold a passphrase', () => {
    const secret = 'short-secret-value';
    const messages = [
      fails({ env: { PROVISIOND_ADMIN_API_KEY: secret } }),
      fails({ env: { PROVISIOND_STORE__KIND: 'redis', PROVISIOND_STORE__REDIS_URL: `http://:${secret}@h` } }),
      fails({ env: { PROVISIOND_STORE__KIND: 'redis', PROVISIOND_STORE__REDIS_URL: 'redis://h', PROVISIOND_STORE__REDIS_TOPOLOGY: 'sentinel', PROVISIOND_STORE__REDIS_SENTINELS: '["a:1"]', PROVISIOND_STORE__REDIS_SENTINEL_PASSWORD: '' } }),
      fails({ env: { PROVISIOND_PROVISIONING__DEFAULT_NETWORK: JSON.stringify({ wifi: { ssid: 'x', security: 'wpa2-psk', secret, extra: 1 } }) } }),
    ];
    expect(messages[0]).toContain('adminApiKey: must NOT have fewer than 32 characters (from env PROVISIOND_ADMIN_API_KEY)');
    expect(messages[1]).toContain('store.redisUrl: must match pattern');
    for (const m of messages) expect(m).not.toContain(secret);
    // a plain setting still shows what was refused
    expect(fails({ env: { PROVISIOND_HTTP__PORT: '70000' } })).toContain('got 70000');
  });
});

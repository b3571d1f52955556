/**
 * The broker's abuse limits over real TLS (docs/protocol.md §19-§20): connection rate per source
 * address and in all (refused before the handshake), packet size (cut off from the fixed header,
 * even before CONNECT), payload size (answered PAYLOAD_TOO_LARGE), topic depth, messages in flight
 * in each direction, subscriptions per connection. Each refusal is coded and counted in GET
 * /metrics (provisiond_mqtt_rejections_total{limit}). A raw MQTT client (mqtt-packet over
 * node:tls) controls exactly what goes on the wire: several packets in one write, no PUBACK.
 */
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimHub } from '../../firmware-sim/index.js';
import type { ClaimResponse } from '../../schemas/types.js';
import { ManualClock } from '../helpers/clock.js';
import { claim, opensslCsr, registerAndClaim } from '../helpers/device.js';
import { startTestService, type TestService } from '../helpers/service.js';
import { waitUntil } from '../helpers/wait.js';

const auth = (key: string) => ({ authorization: `Bearer ${key}` });

async function rejections(ts: TestService, limit: string): Promise<number> {
  const res = await ts.running.api.inject({ method: 'GET', url: '/metrics', headers: auth(ts.keys.viewer) });
  return Number(new RegExp(`^provisiond_mqtt_rejections_total\\{limit="${limit}"\\} (\\d+)$`, 'm').exec(res.body)?.[1]);
}

interface RawOptions {
  port: number;
  ca: string;
  localAddress?: string;
  key?: string;
  cert?: string;
}

/** A TLS socket speaking raw MQTT 3.1.1: what is sent is exactly what the test writes. */
class RawMqtt {
  readonly packets: Packet[] = [];
  closed = false;
  #waiters: (() => void)[] = [];
  #nextId = 1;

  private constructor(
    readonly socket: TLSSocket,
    /** PUBACK every QoS 1 message from the service (off: let them pile up). */
    public autoAck: boolean,
  ) {
    const parser = mqttPacket.parser();
    parser.on('packet', (p: Packet) => {
      this.packets.push(p);
      if (p.cmd === 'publish' && p.qos === 1 && this.autoAck) this.send({ cmd: 'puback', messageId: p.messageId! });
      this.#wake();
    });
    socket.on('data', (d: Buffer) => parser.parse(d));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      this.#wake();
    });
  }

  /** TLS only (no CONNECT): resolves with the socket, or rejects when it is closed before the handshake completes. */
  static handshake(opts: RawOptions): Promise<TLSSocket> {
    return new Promise((resolve, reject) => {
      const socket = tlsConnect({ host: '127.0.0.1', servername: 'localhost', port: opts.port, ca: opts.ca, ...(opts.localAddress ? { localAddress: opts.localAddress } : {}), ...(opts.key ? { key: opts.key, cert: opts.cert } : {}) });
      socket.once('secureConnect', () => resolve(socket));
      socket.once('error', reject);
      socket.once('close', () => reject(new Error('closed before the TLS handshake completed')));
    });
  }

  static async open(opts: RawOptions, connect: { clientId: string; username?: string; password?: string }, autoAck = true): Promise<RawMqtt> {
    const client = new RawMqtt(await RawMqtt.handshake(opts), autoAck);
    client.send({
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: 4,
      clean: true,
      keepalive: 60,
      clientId: connect.clientId,
      ...(connect.username !== undefined ? { username: connect.username, password: Buffer.from(connect.password ?? '') } : {}),
    });
    const connack = await client.next((p) => p.cmd === 'connack');
    expect(connack).toMatchObject({ returnCode: 0 });
    return client;
  }

  /** Writes the packets in ONE socket write (so the broker reads them together). */
  send(...packets: Packet[]): void {
    this.socket.write(Buffer.concat(packets.map((p) => mqttPacket.generate(p))));
  }

  publish(topic: string, payload: string | Buffer, qos: 0 | 1 = 1): Packet {
    return { cmd: 'publish', topic, payload, qos, retain: false, dup: false, ...(qos > 0 ? { messageId: this.#nextId++ } : {}) } as Packet;
  }

  async subscribe(topics: string[]): Promise<number[]> {
    const messageId = this.#nextId++;
    this.send({ cmd: 'subscribe', messageId, subscriptions: topics.map((topic) => ({ topic, qos: 1 })) } as Packet);
    const suback = await this.next((p) => p.cmd === 'suback' && p.messageId === messageId);
    return (suback as { granted: number[] }).granted;
  }

  /** The first packet (received so far or later) matching `pred`. */
  async next(pred: (p: Packet) => boolean, timeoutMs = 5000): Promise<Packet> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const found = this.packets.find(pred);
      if (found) return found;
      if (this.closed) throw new Error('connection closed');
      if (Date.now() > until) throw new Error('no such packet in time');
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        setTimeout(r, 50);
      });
    }
  }

  messages(topic: string): Record<string, unknown>[] {
    return this.packets
      .filter((p): p is Packet & { topic: string; payload: Buffer } => p.cmd === 'publish' && (p as { topic: string }).topic === topic)
      .map((p) => JSON.parse(p.payload.toString('utf8')) as Record<string, unknown>);
  }

  async waitClosed(timeoutMs = 5000): Promise<void> {
    await waitUntil(() => this.closed, 'the broker closed the connection', timeoutMs);
  }

  end(): void {
    this.socket.destroy();
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }
}

describe('MQTT limits on a connection', () => {
  let ts: TestService;
  let raw: RawOptions;
  beforeAll(async () => {
    ts = await startTestService({
      mqtt: { maxPayloadBytes: 4096, maxInflightInbound: 2, maxInflightOutbound: 5, maxSubscriptionsPerClient: 8, connectionRatePerAddressPerSecond: 0, connectionRatePerSecond: 0 },
    });
    raw = { port: ts.running.mqttPort, ca: ts.running.ca.rootPem };
  });
  afterAll(async () => ts?.stop());

  /** A claimed device's bootstrap session. */
  async function bootstrapSession(autoAck = true) {
    const { id, bootstrap } = await registerAndClaim(ts);
    const client = await RawMqtt.open(raw, { clientId: id, username: id, password: bootstrap.token }, autoAck);
    const t = (leaf: string) => `devices/${id}/${leaf}`;
    expect(await client.subscribe([t('csr/accepted'), t('csr/rejected'), t('errors')])).toEqual([1, 1, 1]);
    return { id, client, t };
  }

  it('cuts off a packet that announces more than twice maxPayloadBytes as soon as its header is read, even before CONNECT', async () => {
    const before = await rejections(ts, 'packet_size');
    const { client, t } = await bootstrapSession();
    // the fixed header of a 20,000-byte PUBLISH and the first bytes of it; the rest never comes
    const header = mqttPacket.generate(client.publish(t('csr'), Buffer.alloc(20_000, 0x20))).subarray(0, 200);
    client.socket.write(header);
    await client.waitClosed();
    expect(await rejections(ts, 'packet_size')).toBe(before + 1);

    // no CONNECT yet: a CONNECT announcing 1,000,000 bytes
    const socket = await RawMqtt.handshake(raw);
    const gone = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => undefined);
    socket.write(Buffer.from([0x10, 0xc0, 0x84, 0x3d, 0x00, 0x04]));
    await gone;
    expect(await rejections(ts, 'packet_size')).toBe(before + 2);
  });

  it('answers a payload over maxPayloadBytes with PAYLOAD_TOO_LARGE and keeps the connection', async () => {
    const before = await rejections(ts, 'payload_size');
    const { client, t } = await bootstrapSession();
    client.send(client.publish(t('csr'), Buffer.alloc(5000, 0x20)));
    await client.next((p) => p.cmd === 'publish' && (p as { topic: string }).topic === t('csr/rejected'));
    expect(client.messages(t('csr/rejected'))).toEqual([{ code: 'PAYLOAD_TOO_LARGE', message: 'payload of 5000 bytes exceeds 4096', topic: t('csr') }]);
    client.send({ cmd: 'pingreq' });
    await client.next((p) => p.cmd === 'pingresp');
    expect(await rejections(ts, 'payload_size')).toBe(before + 1);
    client.end();
  });

  it('closes the connection on a topic deeper than maxTopicLevels (PUBLISH and SUBSCRIBE)', async () => {
    const before = await rejections(ts, 'topic_depth');
    const a = await bootstrapSession();
    a.client.send(a.client.publish(a.t('csr/a/b/c/d/e/f'), '{}'));
    await a.client.waitClosed();
    const b = await bootstrapSession();
    b.client.send({ cmd: 'subscribe', messageId: 77, subscriptions: [{ topic: b.t('errors/a/b/c/d/e/f'), qos: 1 }] } as Packet);
    await b.client.waitClosed();
    expect(await rejections(ts, 'topic_depth')).toBe(before + 2);
  });

  it('handles at most maxInflightInbound messages of a connection at once; the others are answered INFLIGHT_LIMIT_EXCEEDED', async () => {
    const before = await rejections(ts, 'inflight_inbound');
    const { client, t } = await bootstrapSession();
    const { csrPem } = opensslCsr();
    // five CSRs in one write: all parsed together, so all in flight together (their five answers
    // stay within maxInflightOutbound)
    client.send(...[1, 2, 3, 4, 5].map((i) => client.publish(t('csr'), JSON.stringify({ requestId: `r${i}`, csr: csrPem }))));
    await waitUntil(() => client.packets.filter((p) => p.cmd === 'puback').length === 5, 'every message was acknowledged');
    await waitUntil(() => client.messages(t('csr/rejected')).length + client.messages(t('csr/accepted')).length === 5, 'every message was answered');
    const refused = client.messages(t('csr/rejected')).filter((m) => m.code === 'INFLIGHT_LIMIT_EXCEEDED');
    expect(refused).toHaveLength(3);
    expect(client.messages(t('csr/accepted')).length).toBeGreaterThanOrEqual(1);
    expect(await rejections(ts, 'inflight_inbound')).toBe(before + 3);
    // one at a time is fine again
    client.send(client.publish(t('csr'), JSON.stringify({ requestId: 'r6', csr: csrPem })));
    await waitUntil(() => client.messages(t('csr/accepted')).some((m) => m.requestId === 'r6'), 'the re-sent CSR was answered');
    client.end();
  });

  it('closes a connection that leaves more than maxInflightOutbound service messages unacknowledged', async () => {
    const before = await rejections(ts, 'inflight_outbound');
    const { client, t } = await bootstrapSession(false);
    for (let i = 1; i <= 5; i++) {
      client.send(client.publish(t('csr'), 'not json'));
      await waitUntil(() => client.messages(t('csr/rejected')).length === i, `answer ${i}`);
    }
    // the sixth answer would be the sixth awaiting a PUBACK
    client.send(client.publish(t('csr'), 'not json'));
    await client.waitClosed();
    expect(client.messages(t('csr/rejected'))).toHaveLength(5);
    expect(await rejections(ts, 'inflight_outbound')).toBe(before + 1);
  });

  it('refuses subscriptions past maxSubscriptionsPerClient with SUBACK 0x80 and SUBSCRIPTION_LIMIT_EXCEEDED; an unsubscribe frees a slot', async () => {
    const hubId = `hub-${Date.now()}`;
    const reg = await ts.running.api.inject({ method: 'POST', url: '/v1/devices', headers: auth(ts.keys.factory), payload: { id: hubId, model: 'hub', claimCode: `label-${hubId}`, hub: true } });
    expect(reg.statusCode).toBe(201);
    const sim = new SimHub({ deviceId: hubId, bootstrap: ((await claim(ts, `label-${hubId}`)).json() as ClaimResponse).bootstrap! });
    await sim.run();
    await sim.stop();
    const before = await rejections(ts, 'subscriptions');
    const hub = await RawMqtt.open({ ...raw, key: sim.keyPem, cert: sim.certificatePem }, { clientId: hubId });
    const t = (leaf: string) => `devices/${hubId}/${leaf}`;
    const own = ['errors', 'state', 'commands', 'config'].map(t);
    const children = Array.from({ length: 6 }, (_, i) => t(`children/c${i}/state`));
    // the same topic twice counts once
    expect(await hub.subscribe([...own, own[0]!])).toEqual([1, 1, 1, 1]);
    expect(await hub.subscribe(children)).toEqual([1, 1, 1, 1, 128, 128]);
    await waitUntil(() => hub.messages(t('errors')).length === 2, 'two errors');
    expect(hub.messages(t('errors'))[0]).toMatchObject({ code: 'SUBSCRIPTION_LIMIT_EXCEEDED', topic: children[4] });
    expect(await rejections(ts, 'subscriptions')).toBe(before + 2);
    hub.send({ cmd: 'unsubscribe', messageId: 500, unsubscriptions: [children[0]!] } as Packet);
    await hub.next((p) => p.cmd === 'unsuback');
    expect(await hub.subscribe([children[4]!])).toEqual([1]);
    expect(await hub.subscribe([children[5]!])).toEqual([128]);
    hub.end();
  });
});

describe('MQTT connection rates', () => {
  const clock = new ManualClock();
  let ts: TestService;
  beforeAll(async () => {
    ts = await startTestService(
      { mqtt: { connectionRatePerAddressPerSecond: 1, connectionRatePerAddressBurst: 3, connectionRatePerSecond: 1, connectionRateBurst: 5 } },
      { clock },
    );
  });
  afterAll(async () => ts?.stop());

  it('closes connections past the per-address and the overall rate before the TLS handshake', async () => {
    const raw = (localAddress: string) => ({ port: ts.running.mqttPort, ca: ts.running.ca.rootPem, localAddress });
    const opened: TLSSocket[] = [];
    const attempt = async (localAddress: string) => {
      try {
        opened.push(await RawMqtt.handshake(raw(localAddress)));
        return 'ok';
      } catch {
        return 'refused';
      }
    };
    try {
      const first: string[] = [];
      for (let i = 0; i < 4; i++) first.push(await attempt('127.0.0.1'));
      expect(first).toEqual(['ok', 'ok', 'ok', 'refused']);
      expect(await rejections(ts, 'connection_rate_address')).toBe(1);
      // another address: its own bucket, until the instance's is empty (5 in all)
      const second: string[] = [];
      for (let i = 0; i < 3; i++) second.push(await attempt('127.0.0.2'));
      expect(second).toEqual(['ok', 'ok', 'refused']);
      expect(await rejections(ts, 'connection_rate_total')).toBe(1);
      // a second later, one more
      clock.advance(1000);
      expect(await attempt('127.0.0.3')).toBe('ok');
      expect(await attempt('127.0.0.3')).toBe('refused');
    } finally {
      for (const s of opened) s.destroy();
    }
  });

  it('lets a device connect over MQTT once its address has tokens again', async () => {
    clock.advance(60_000);
    const { id, bootstrap } = await registerAndClaim(ts);
    const client = await RawMqtt.open({ port: ts.running.mqttPort, ca: ts.running.ca.rootPem }, { clientId: id, username: id, password: bootstrap.token });
    client.end();
  });
});

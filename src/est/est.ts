/**
 * EST (RFC 7030) enrollment over HTTPS: a second, thin transport around the same provisioning
 * use-cases the MQTT broker calls (docs/protocol.md §5-§7 and §16). Nothing here decides
 * provisioning logic; it maps EST's HTTP shapes onto ProvisioningService and back.
 *
 *   GET  /.well-known/est/cacerts        the CA chain (issuing, root) as a certs-only PKCS#7
 *   POST /.well-known/est/simpleenroll   HTTP Basic: user = device id, password = bootstrap token
 *   POST /.well-known/est/simplereenroll mutual TLS with the device's current certificate
 *
 * Enrollment bodies are base64 DER PKCS#10 (Content-Type application/pkcs10); answers are base64
 * DER certs-only PKCS#7 holding the issued certificate (RFC 7030 §4.2.3). Refusals carry a
 * text/plain body "CODE: message" with the same codes as the MQTT csr/rejected topic.
 */
import { X509Certificate, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { Asn1Error, Tag, parseDer, pemEncode } from '../ca/asn1.js';
import { isProvisiondError } from '../errors.js';
import type { DeviceSession, ProvisioningService } from '../provisioning/index.js';
import { base64Lines, certsOnlyDer, certsOnlyFromPems } from './pkcs7.js';

/** Where EST lives (RFC 7030 §3.2.2); no CA labels (arbitrary-label segments) are served. */
export const EST_PATH_PREFIX = '/.well-known/est/';
/** Largest request body accepted; a P-384 or RSA-4096 CSR in base64 is far below. */
export const EST_MAX_BODY_BYTES = 64 * 1024;
/** The realm of the HTTP Basic challenge sent with every 401. */
export const EST_REALM = 'provisiond EST';

export interface EstServerOptions {
  service: ProvisioningService;
  /** The CA: chainPems is issuing first, root last (CertificateAuthority satisfies this). */
  ca: { readonly chainPems: readonly string[]; readonly rootPem: string };
  tls: {
    keyPem: string;
    /** Server certificate followed by its issuing CA. */
    certChainPem: string;
    /** CAs that client certificates (simplereenroll) must chain to: issuing and root. */
    clientCaPems: readonly string[];
  };
  host: string;
  /** 0 picks a free port (see the returned port). */
  port: number;
  log: Logger;
}

export interface EstServer {
  /** The port actually listened on. */
  readonly port: number;
  /** Stops accepting, closes open connections, resolves when the server is closed. */
  stop(): Promise<void>;
}

/** An HTTP answer that ends a request early ("CODE: message" body). */
class EstRefusal extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const PKCS7_CERTS_ONLY = 'application/pkcs7-mime; smime-type=certs-only';

export async function startEstServer(opts: EstServerOptions): Promise<EstServer> {
  const { service, ca, tls, log } = opts;
  const issuers = tls.clientCaPems.map((pem) => new X509Certificate(pem));

  const server: Server = createServer(
    {
      key: tls.keyPem,
      cert: tls.certChainPem,
      ca: [...tls.clientCaPems],
      requestCert: true, // optional client certificate: only simplereenroll uses it
      rejectUnauthorized: false, // decided per request
      minVersion: 'TLSv1.2',
    },
    (req, res) => dispatch(req, res),
  );
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.keepAliveTimeout = 5_000;
  // A client announcing a too-large body with "Expect: 100-continue" is refused before it sends it.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    if (declaredLength(req) > EST_MAX_BODY_BYTES) return refuse(res, tooLarge(), { close: true });
    res.writeContinue();
    dispatch(req, res);
  });
  server.on('tlsClientError', (err) => log.debug({ err: err.message }, 'est tls handshake failed'));

  function dispatch(req: IncomingMessage, res: ServerResponse): void {
    handle(req, res).catch((err: unknown) => {
      if (err instanceof EstRefusal) {
        log.info({ status: err.status, code: err.code, url: req.url }, 'est request refused');
        // a body left unread is not drained for keep-alive: the connection ends with the answer
        return refuse(res, err, { close: !req.complete });
      }
      log.error({ err, url: req.url }, 'est request failed');
      refuse(res, new EstRefusal(500, 'INTERNAL_ERROR', 'the service failed to handle this request; retry later'), { close: true });
    });
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'https://est.invalid').pathname;
    const op = path.startsWith(EST_PATH_PREFIX) ? path.slice(EST_PATH_PREFIX.length) : undefined;
    const method = req.method ?? 'GET';
    switch (op) {
      case 'cacerts':
        if (method !== 'GET' && method !== 'HEAD') throw notAllowed(res, 'GET, HEAD');
        return sendCerts(res, 'application/pkcs7-mime', certsOnlyFromPems(ca.chainPems));
      case 'simpleenroll': {
        // credentials first (checking them changes nothing), then the body
        if (method !== 'POST') throw notAllowed(res, 'POST');
        checkCsrHeaders(req);
        const session = await authenticateBasic(req);
        const pem = csrPemFromBase64(await readBody(req));
        return enroll(res, session, pem, 'simpleenroll');
      }
      case 'simplereenroll': {
        // The TLS verdict first, then the body, and only then the service: authenticating a new
        // certificate confirms it (and retires the one it replaced), which a request refused for
        // its body must not do.
        if (method !== 'POST') throw notAllowed(res, 'POST');
        checkCsrHeaders(req);
        const presented = presentedCertificate(req);
        const pem = csrPemFromBase64(await readBody(req));
        const session = await authenticateCertificate(presented);
        return enroll(res, session, pem, 'simplereenroll');
      }
      default:
        throw new EstRefusal(404, 'NOT_FOUND', `no EST operation at ${path}`);
    }
  }

  /** What can be refused from the headers alone: size and content type. */
  function checkCsrHeaders(req: IncomingMessage): void {
    if (declaredLength(req) > EST_MAX_BODY_BYTES) throw tooLarge();
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (type !== 'application/pkcs10') {
      throw new EstRefusal(415, 'UNSUPPORTED_MEDIA_TYPE', `the CSR must be sent as application/pkcs10 (base64 DER), not ${type || 'no content type'}`);
    }
  }

  /** simpleenroll: HTTP Basic, username = device id, password = the bootstrap token. */
  async function authenticateBasic(req: IncomingMessage): Promise<DeviceSession> {
    const creds = basicCredentials(req.headers.authorization);
    if (!creds) throw new EstRefusal(401, 'AUTH_REQUIRED', 'HTTP Basic credentials are required: username = device id, password = bootstrap token');
    try {
      return await service.authenticateBootstrap(creds.user, creds.user, creds.password);
    } catch (err) {
      throw asRefusal(err);
    }
  }

  /** simplereenroll: the certificate presented in the TLS handshake, as TLS judged it (no service call). */
  function presentedCertificate(req: IncomingMessage): { deviceId: string; der: Buffer; expired: boolean } {
    const socket = req.socket as TLSSocket;
    const peer = typeof socket.getPeerCertificate === 'function' ? socket.getPeerCertificate() : undefined;
    if (!peer?.raw) throw new EstRefusal(401, 'AUTH_REQUIRED', 'simplereenroll needs the current client certificate (mutual TLS)');
    const reason = socket.authorized ? undefined : String(socket.authorizationError ?? 'untrusted');
    // expired but ours: the device's profile decides whether it may renew (as on MQTT)
    const expired = reason === 'CERT_HAS_EXPIRED' && signedByOurCa(peer.raw);
    if (reason !== undefined && !expired) {
      throw new EstRefusal(401, reason === 'CERT_HAS_EXPIRED' ? 'CERTIFICATE_EXPIRED' : 'CERTIFICATE_UNTRUSTED', `the client certificate is not accepted: ${reason}`);
    }
    // the device id is the certificate's CN (docs/protocol.md §1); the service checks it is the device's current certificate
    const cn = peer.subject?.CN as unknown;
    if (typeof cn !== 'string' || cn.length === 0) throw new EstRefusal(401, 'CERTIFICATE_UNKNOWN', 'the client certificate has no single subject CN');
    return { deviceId: cn, der: peer.raw, expired };
  }

  async function authenticateCertificate(cert: { deviceId: string; der: Buffer; expired: boolean }): Promise<DeviceSession> {
    try {
      return await service.authenticateOperational(cert.deviceId, cert.der, cert.expired ? { expired: true } : {});
    } catch (err) {
      throw asRefusal(err);
    }
  }

  async function enroll(res: ServerResponse, session: DeviceSession, csrPem: string, op: string): Promise<void> {
    const requestId = `est-${randomBytes(12).toString('hex')}`;
    const reply = await service.submitCsr(session, Buffer.from(JSON.stringify({ requestId, csr: csrPem }), 'utf8'), { channel: 'est' });
    if (!reply.ok) throw asRefusal(reply.error);
    const cert = new X509Certificate(reply.value.certificate);
    log.info({ deviceId: session.deviceId, op, serial: reply.value.serial }, 'est certificate issued');
    // RFC 7030 §4.2.3: the response holds only the issued certificate; the chain is at /cacerts.
    sendCerts(res, PKCS7_CERTS_ONLY, certsOnlyDer([cert.raw]));
  }

  function signedByOurCa(der: Buffer): boolean {
    try {
      const cert = new X509Certificate(der);
      return issuers.some((issuer) => cert.checkIssued(issuer) && cert.verify(issuer.publicKey));
    } catch {
      return false;
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  log.info({ port }, 'est server listening (HTTPS)');

  let stopping: Promise<void> | undefined;
  return {
    port,
    stop: () =>
      (stopping ??= new Promise<void>((resolve) => {
        // idle keep-alive connections now, requests in flight get 2 s to finish
        const force = setTimeout(() => server.closeAllConnections(), 2000);
        force.unref();
        server.close(() => {
          clearTimeout(force);
          resolve();
        });
        server.closeIdleConnections();
      })),
  };
}

// ---------------------------------------------------------------------------------------------

function sendCerts(res: ServerResponse, contentType: string, der: Buffer): void {
  const body = base64Lines(der);
  res.writeHead(200, {
    'Content-Type': contentType,
    'Content-Transfer-Encoding': 'base64',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
  });
  res.end(body);
}

function refuse(res: ServerResponse, err: EstRefusal, opts: { close?: boolean } = {}): void {
  if (res.headersSent) return void res.destroy();
  const body = `${err.code}: ${err.message}\n`;
  const headers: Record<string, string | number> = {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
  };
  // RFC 7235 §3.1: a 401 carries a challenge (also on simplereenroll, where the cure is a client certificate)
  if (err.status === 401) headers['WWW-Authenticate'] = `Basic realm="${EST_REALM}", charset="UTF-8"`;
  if (err.status === 503) headers['Retry-After'] = 5;
  if (opts.close) headers.Connection = 'close';
  const allow = res.getHeader('Allow');
  if (allow !== undefined) headers.Allow = String(allow);
  res.writeHead(err.status, headers);
  res.end(body);
}

function notAllowed(res: ServerResponse, allow: string): EstRefusal {
  res.setHeader('Allow', allow);
  return new EstRefusal(405, 'METHOD_NOT_ALLOWED', `use ${allow}`);
}

function tooLarge(): EstRefusal {
  return new EstRefusal(413, 'PAYLOAD_TOO_LARGE', `the request body exceeds ${EST_MAX_BODY_BYTES} bytes`);
}

function declaredLength(req: IncomingMessage): number {
  const raw = req.headers['content-length'];
  if (raw === undefined) return 0;
  const n = Number(raw);
  return Number.isFinite(n) ? n : Number.POSITIVE_INFINITY;
}

/**
 * HTTP status for a coded rejection of the use-cases: CSR and payload errors 400, credential and
 * certificate errors 401, too large 413, service trouble 5xx, and everything else (key in use,
 * device state, a missing profile, ...) 409: the request was fine, the device's situation is not.
 */
function asRefusal(err: unknown): EstRefusal {
  if (!isProvisiondError(err)) throw err;
  const s = err.status;
  const status = s === 400 || s === 401 || s === 413 || s >= 500 ? s : 409;
  return new EstRefusal(status, err.code, err.message.replace(/[\r\n]+/g, ' '));
}

function basicCredentials(header: string | undefined): { user: string; password: string } | undefined {
  const m = /^Basic[ \t]+([A-Za-z0-9+/]+={0,2})[ \t]*$/i.exec(header ?? '');
  if (!m) return undefined;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0) return undefined;
  const user = decoded.slice(0, colon);
  const password = decoded.slice(colon + 1);
  return password ? { user, password } : undefined;
}

/**
 * The whole body, at most EST_MAX_BODY_BYTES. Past the limit it stops collecting but leaves the
 * stream alone (destroying it would kill the socket before the 413 is written); the answer then
 * closes the connection.
 */
function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= EST_MAX_BODY_BYTES) return void chunks.push(chunk);
      done();
      reject(tooLarge());
    };
    const onEnd = () => {
      done();
      resolve(Buffer.concat(chunks, size));
    };
    const onError = (err: Error) => {
      done();
      reject(err);
    };
    const onClose = () => {
      done();
      reject(new EstRefusal(400, 'REQUEST_ABORTED', 'the client went away before the body was complete'));
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

/** RFC 7030 §4.2.1: base64 (line breaks allowed) of one DER PKCS#10 SEQUENCE. */
function csrPemFromBase64(body: Buffer): string {
  const text = body.toString('latin1').replace(/[\r\n\t ]+/g, '');
  if (text.length === 0) throw new EstRefusal(400, 'CSR_MALFORMED', 'the request body is empty; send the base64 DER PKCS#10');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(text) || text.length % 4 !== 0) {
    throw new EstRefusal(400, 'CSR_MALFORMED', 'the request body is not base64 (send the DER PKCS#10, base64-encoded)');
  }
  const der = Buffer.from(text, 'base64');
  try {
    if (parseDer(der).tag !== Tag.SEQUENCE) throw new Asn1Error('not a SEQUENCE');
  } catch (err) {
    const why = err instanceof Asn1Error ? err.message : 'unreadable';
    throw new EstRefusal(400, 'CSR_MALFORMED', `the request body is not one DER PKCS#10 structure (${why})`);
  }
  return pemEncode('CERTIFICATE REQUEST', der);
}

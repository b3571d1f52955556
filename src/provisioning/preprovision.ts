/**
 * The optional pre-provisioning webhook of zero-touch enrollment: before a device with a birth
 * certificate gets its identity, the tenant's endpoint may allow or deny it. No answer in time,
 * an error status or an unreadable answer is a denial: the check fails closed.
 */
import { createHmac } from 'node:crypto';

export interface PreprovisionVerdict {
  allow: boolean;
  reason: string;
}

export async function askPreprovisionWebhook(
  hook: { url: string; secret?: string; timeoutMs?: number },
  body: Record<string, unknown>,
): Promise<PreprovisionVerdict> {
  const text = JSON.stringify(body);
  const headers: Record<string, string> = { 'content-type': 'application/json', 'x-provisiond-event': 'device.preprovision' };
  if (hook.secret) headers['x-provisiond-signature'] = `sha256=${createHmac('sha256', hook.secret).update(text).digest('hex')}`;
  let res: Response;
  try {
    res = await fetch(hook.url, { method: 'POST', headers, body: text, redirect: 'manual', signal: AbortSignal.timeout(hook.timeoutMs ?? 3000) });
  } catch (err) {
    const timeout = (err as Error).name === 'TimeoutError';
    return { allow: false, reason: timeout ? 'the pre-provisioning webhook did not answer in time' : 'the pre-provisioning webhook cannot be reached' };
  }
  if (res.status < 200 || res.status >= 300) return { allow: false, reason: `the pre-provisioning webhook answered HTTP ${res.status}` };
  try {
    const answer = (await res.json()) as { allow?: unknown; reason?: unknown };
    if (typeof answer.allow !== 'boolean') return { allow: false, reason: 'the pre-provisioning webhook answer has no boolean "allow"' };
    const reason = typeof answer.reason === 'string' ? answer.reason.slice(0, 256) : answer.allow ? 'allowed' : 'denied by the pre-provisioning webhook';
    return { allow: answer.allow, reason };
  } catch {
    return { allow: false, reason: 'the pre-provisioning webhook answer is not JSON' };
  }
}

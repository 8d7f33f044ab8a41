import type { Msg, NatsConnection, Payload, RequestOptions } from '@nats-io/nats-core';
import { ReplyLostError } from './errors.js';

/**
 * Wraps a connection so that a request whose reply the connection lost fails at the reconnect,
 * with `ReplyLostError`, instead of waiting out its whole timeout.
 *
 * nats.js keeps such a request waiting although no reply can come: the server that would have
 * sent it is gone (or wrote it to the old socket), and what was written while the connection was
 * down is dropped when it comes back (nats.js resets its outbound buffer at each dial). Every
 * JetStream publish, KV call and API call is such a request, so after a nats-server restart each
 * handling in flight stalled for the API timeout (5 s). Failing at the reconnect, the caller
 * retries on a connection that works, as it would after the timeout. Whether the lost request
 * took effect is unknown either way; every request here is idempotent or conditional.
 *
 * Everything but `request` is the connection's own. JetStream and KV reach the server only
 * through `request`, subscriptions and plain publishes: nats.js restores the subscriptions at the
 * reconnect, and drops plain publishes made while the connection is down (an ack so lost leaves
 * its item to come back after the ack wait, and be handled again).
 */
export function failRequestsOnReconnect(nc: NatsConnection): NatsConnection {
  /** The requests waiting for a reply, each with how to fail it. */
  const waiting = new Map<(error: Error) => void, string>();
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type !== 'reconnect') continue;
      const lost = [...waiting];
      waiting.clear();
      for (const [fail, subject] of lost) fail(new ReplyLostError(subject));
    }
  })().catch(() => undefined);

  const request = (subject: string, payload?: Payload, options?: RequestOptions): Promise<Msg> =>
    new Promise<Msg>((resolve, reject) => {
      waiting.set(reject, subject);
      nc.request(subject, payload, options)
        .then(resolve, reject)
        .finally(() => waiting.delete(reject));
    });

  // The connection's methods run on the connection itself (nats.js keeps private state there).
  const bound = new Map<PropertyKey, unknown>();
  return new Proxy(nc, {
    get(target, property) {
      if (property === 'request') return request;
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      let method = bound.get(property);
      if (method === undefined) {
        method = (value as (...args: unknown[]) => unknown).bind(target);
        bound.set(property, method);
      }
      return method;
    },
  });
}

import { randomBytes } from 'node:crypto';
import { Types } from './resources.js';
import type { KubeObject } from './resources.js';
import type { Store } from './store.js';

export type EventKind = 'Normal' | 'Warning';

/** Writes core/v1 Events about objects, as the kubelet and controllers do. */
export class EventRecorder {
  constructor(
    private readonly store: Store,
    private readonly component: string,
    private readonly host?: string,
  ) {}

  record(obj: KubeObject, type: EventKind, reason: string, message: string): void {
    const meta = obj.metadata ?? {};
    const namespace = meta.namespace ?? 'default';
    const now = new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
    const source: Record<string, string> = { component: this.component };
    if (this.host) source.host = this.host;
    try {
      this.store.create(
        Types.events,
        {
          metadata: { name: `${meta.name}.${randomBytes(8).toString('hex')}`, namespace },
          involvedObject: {
            apiVersion: obj.apiVersion,
            kind: obj.kind,
            namespace: meta.namespace,
            name: meta.name,
            uid: meta.uid,
            resourceVersion: meta.resourceVersion,
          },
          reason,
          message,
          type,
          source,
          firstTimestamp: now,
          lastTimestamp: now,
          count: 1,
          reportingComponent: this.component,
          reportingInstance: this.host ?? '',
        },
        { internal: true },
      );
    } catch {
      // The namespace may be going away; an event is best effort, as in Kubernetes.
    }
  }
}

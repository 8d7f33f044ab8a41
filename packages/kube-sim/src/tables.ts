import { Types } from './resources.js';
import type { KubeObject, ResourceType } from './resources.js';

/** A `meta.k8s.io/v1` Table column, as `kubectl get` prints it. */
interface Column {
  name: string;
  type: string;
  format: string;
  description: string;
  priority: number;
}

type Cell = string | number;
type Obj = Record<string, unknown>;

function col(name: string, priority = 0, type = 'string'): Column {
  return { name, type, format: name === 'Name' ? 'name' : '', description: name, priority };
}

function get(obj: unknown, path: string): unknown {
  let node = obj;
  for (const seg of path.split('.')) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Obj)[seg];
  }
  return node;
}

function str(obj: unknown, path: string, fallback = '<none>'): string {
  const v = get(obj, path);
  if (v === undefined || v === null || v === '') return fallback;
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return JSON.stringify(v);
}

/** Kubernetes' short human duration (`5s`, `3m12s`, `4h`, `2d`). */
export function age(timestamp: string | undefined, now = Date.now()): string {
  if (!timestamp) return '<unknown>';
  const s = Math.max(0, Math.floor((now - Date.parse(timestamp)) / 1000));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 10) return `${m}m${s % 60}s`;
  if (m < 180) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h`;
  return `${Math.floor(h / 24)}d`;
}

function podCells(pod: KubeObject): Cell[] {
  const statuses = (get(pod, 'status.containerStatuses') as Obj[] | undefined) ?? [];
  const containers = (get(pod, 'spec.containers') as unknown[] | undefined) ?? [];
  const ready = statuses.filter((s) => s.ready === true).length;
  const restarts = statuses.reduce((n, s) => n + Number(s.restartCount ?? 0), 0);
  const phase = pod.metadata?.deletionTimestamp ? 'Terminating' : str(pod, 'status.phase', '');
  return [
    `${ready}/${containers.length}`,
    phase,
    restarts,
    age(pod.metadata?.creationTimestamp),
    str(pod, 'status.podIP'),
    str(pod, 'spec.nodeName'),
  ];
}

function pvcCells(pvc: KubeObject): Cell[] {
  const modes = (get(pvc, 'status.accessModes') as string[] | undefined) ?? [];
  const short: Record<string, string> = {
    ReadWriteOnce: 'RWO',
    ReadOnlyMany: 'ROX',
    ReadWriteMany: 'RWX',
    ReadWriteOncePod: 'RWOP',
  };
  return [
    str(pvc, 'status.phase', ''),
    str(pvc, 'spec.volumeName', ''),
    str(pvc, 'status.capacity.storage', ''),
    modes.map((m) => short[m] ?? m).join(','),
    str(pvc, 'spec.storageClassName'),
    str(pvc, 'spec.volumeMode', 'Filesystem'),
    age(pvc.metadata?.creationTimestamp),
  ];
}

interface Printer {
  columns: Column[];
  cells(obj: KubeObject): Cell[];
}

const AGE = col('Age');

const PRINTERS = new Map<ResourceType, Printer>([
  [
    Types.pods,
    {
      columns: [
        col('Ready'),
        col('Status'),
        col('Restarts', 0, 'integer'),
        AGE,
        col('IP', 1),
        col('Node', 1),
      ],
      cells: podCells,
    },
  ],
  [
    Types.persistentvolumeclaims,
    {
      columns: [
        col('Status'),
        col('Volume'),
        col('Capacity'),
        col('Access Modes'),
        col('StorageClass'),
        col('VolumeMode', 1),
        AGE,
      ],
      cells: pvcCells,
    },
  ],
  [
    Types.persistentvolumes,
    {
      columns: [col('Capacity'), col('Status'), col('Claim'), AGE],
      cells: (pv) => [
        str(pv, 'spec.capacity.storage', ''),
        str(pv, 'status.phase', ''),
        pv.spec
          ? `${str(pv, 'spec.claimRef.namespace', '')}/${str(pv, 'spec.claimRef.name', '')}`
          : '',
        age(pv.metadata?.creationTimestamp),
      ],
    },
  ],
  [
    Types.namespaces,
    {
      columns: [col('Status'), AGE],
      cells: (ns) => [str(ns, 'status.phase', ''), age(ns.metadata?.creationTimestamp)],
    },
  ],
  [
    Types.nodes,
    {
      columns: [col('Status'), AGE],
      cells: (n) => ['Ready', age(n.metadata?.creationTimestamp)],
    },
  ],
  [
    Types.events,
    {
      columns: [col('Type'), col('Reason'), col('Object'), col('Message')],
      cells: (e) => [
        str(e, 'type', ''),
        str(e, 'reason', ''),
        `${str(e, 'involvedObject.kind', '').toLowerCase()}/${str(e, 'involvedObject.name', '')}`,
        str(e, 'message', ''),
      ],
    },
  ],
  [
    Types.virtualmachineinstances,
    {
      columns: [AGE, col('Phase'), col('IP'), col('NodeName'), col('Ready')],
      cells: (v) => {
        const conds = (get(v, 'status.conditions') as Obj[] | undefined) ?? [];
        const ready = conds.find((c) => c.type === 'Ready')?.status ?? 'False';
        return [
          age(v.metadata?.creationTimestamp),
          str(v, 'status.phase', ''),
          str(v, 'status.interfaces.0.ipAddress', ''),
          str(v, 'status.nodeName', ''),
          typeof ready === 'string' ? ready : 'False',
        ];
      },
    },
  ],
  [
    Types.virtualmachines,
    {
      columns: [AGE, col('Status'), col('Ready')],
      cells: (v) => [
        age(v.metadata?.creationTimestamp),
        str(v, 'status.printableStatus', ''),
        str(v, 'status.ready', 'False'),
      ],
    },
  ],
  [
    Types.datavolumes,
    {
      columns: [col('Phase'), col('Progress'), col('Restarts'), AGE],
      cells: (d) => [
        str(d, 'status.phase', ''),
        str(d, 'status.progress', 'N/A'),
        str(d, 'status.restartCount', ''),
        age(d.metadata?.creationTimestamp),
      ],
    },
  ],
]);

/** Converts objects into a Table (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`). */
export function toTable(
  type: ResourceType,
  objects: readonly KubeObject[],
  opts: { includeObject: string; resourceVersion: string; withColumns: boolean },
): Obj {
  const printer = PRINTERS.get(type) ?? {
    columns: [AGE],
    cells: (o: KubeObject) => [age(o.metadata?.creationTimestamp)],
  };
  const rows = objects.map((obj) => {
    const row: Obj = { cells: [obj.metadata?.name ?? '', ...printer.cells(obj)] };
    if (opts.includeObject === 'Object') row.object = obj;
    else if (opts.includeObject !== 'None') {
      row.object = {
        kind: 'PartialObjectMetadata',
        apiVersion: 'meta.k8s.io/v1',
        metadata: obj.metadata,
      };
    }
    return row;
  });
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata: { resourceVersion: opts.resourceVersion },
    columnDefinitions: opts.withColumns ? [col('Name'), ...printer.columns] : [],
    rows,
  };
}

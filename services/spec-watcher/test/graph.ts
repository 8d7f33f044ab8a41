import { getAdjacencyMap, getShortestPaths } from '@xstate/graph';
import type { AnyStateMachine, AnyStateNode, EventObject } from 'xstate';

type TransitionDef = ReturnType<AnyStateMachine['getTransitionData']>[number];

/** The snapshot fields the coverage walk reads. */
export interface Snap {
  value: unknown;
  status: string;
  context: unknown;
  _nodes: AnyStateNode[];
}

function allTransitions(node: AnyStateNode): TransitionDef[] {
  const own: TransitionDef[] = [...node.transitions.values()].flat();
  const children = Object.values(node.states);
  return [...own, ...children.flatMap(allTransitions)];
}

function allLeafIds(node: AnyStateNode): string[] {
  const children = Object.values(node.states);
  return children.length === 0 ? [node.id] : children.flatMap(allLeafIds);
}

function label(t: TransitionDef): string {
  const guard = t.guard === undefined ? '' : `[${JSON.stringify(t.guard)}]`;
  const targets = (t.target ?? []).map((n) => n.id).join(',') || '(internal)';
  return `${t.source.id} --${t.eventType}${guard}--> ${targets}`;
}

export interface Coverage<E extends EventObject> {
  /** Every reachable (state, event) edge, as a path from the initial state. */
  edges: Array<{ steps: Array<{ event: E; state: Snap }>; taken: boolean }>;
  untakenTransitions: string[];
  unreachedStates: string[];
}

/**
 * Walks every reachable (state, event) pair of `machine` with `@xstate/graph` and reports which
 * transition definitions and leaf states were never exercised. Each edge comes back as a
 * replayable path: the shortest path to its source state, plus the edge.
 */
export function coverage<E extends EventObject>(
  machine: AnyStateMachine,
  options: {
    events: (snapshot: Snap) => E[];
    serializeState: (snapshot: Snap) => string;
    input?: unknown;
  },
): Coverage<E> {
  const traversal = {
    events: options.events,
    serializeState: options.serializeState,
    input: options.input,
  } as never;
  type Step = { event: E; state: Snap };
  const adjacency = getAdjacencyMap(machine, traversal) as unknown as Record<
    string,
    { state: Snap; transitions: Record<string, Step> }
  >;
  const paths = getShortestPaths(machine, traversal) as unknown as Array<{
    state: Snap;
    steps: Step[];
  }>;
  const shortest = new Map(paths.map((p) => [options.serializeState(p.state), p]));
  const taken = new Set<TransitionDef>();
  const reached = new Set<string>();
  const edges: Coverage<E>['edges'] = [];
  for (const [key, value] of Object.entries(adjacency)) {
    const snapshot = value.state;
    for (const node of snapshot._nodes) reached.add(node.id);
    if (snapshot.status === 'done') continue; // a final state takes no events
    const prefix = (shortest.get(key)?.steps ?? []).filter((s) => s.event.type !== 'xstate.init');
    for (const { event, state: next } of Object.values(value.transitions)) {
      const fired = machine.getTransitionData(snapshot as never, event);
      for (const t of fired) taken.add(t);
      edges.push({ steps: [...prefix, { event, state: next }], taken: fired.length > 0 });
    }
  }
  return {
    edges,
    untakenTransitions: allTransitions(machine.root)
      .filter((t) => !taken.has(t))
      .map(label),
    unreachedStates: allLeafIds(machine.root).filter((id) => !reached.has(id)),
  };
}

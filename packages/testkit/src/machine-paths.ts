import { getAdjacencyMap, getShortestPaths, getSimplePaths } from '@xstate/graph';
import type { AdjacencyValue, StatePath } from '@xstate/graph';
import type { AnyStateMachine, AnyStateNode, EventObject, Snapshot } from 'xstate';

/**
 * Path walkers over an XState machine's pure transition function (@xstate/graph), shared by the
 * services' model-based machine tests: each test says which events the world can deliver in a
 * state and how to tell states apart, gets replayable paths back, and replays them on a live
 * actor with its own checks.
 */

/** A path from the initial state: every step is the event taken and the snapshot it led to. */
export type ModelPath<TSnapshot extends Snapshot<unknown>, TEvent extends EventObject> = StatePath<
  TSnapshot,
  TEvent
>;

/** What a walk needs: the machine input, the events possible in a state, and a state's identity. */
export interface ModelTraversal<TSnapshot extends Snapshot<unknown>, TEvent extends EventObject> {
  readonly input?: unknown;
  readonly events: (snapshot: TSnapshot) => TEvent[];
  readonly serializeState: (snapshot: TSnapshot) => string;
}

/** Every simple path (no state twice) from the initial state. */
export function simplePaths<TSnapshot extends Snapshot<unknown>, TEvent extends EventObject>(
  machine: AnyStateMachine,
  traversal: ModelTraversal<TSnapshot, TEvent>,
): ModelPath<TSnapshot, TEvent>[] {
  // @xstate/graph types the options from the machine's own types; the tests' models are looser.
  return getSimplePaths(machine, traversal as never) as unknown as ModelPath<TSnapshot, TEvent>[];
}

export interface EdgePaths<TSnapshot extends Snapshot<unknown>, TEvent extends EventObject> {
  /** The shortest path to each reachable state. */
  readonly states: ModelPath<TSnapshot, TEvent>[];
  /** For every reachable state and every event possible there: its shortest path plus that event. */
  readonly edges: ModelPath<TSnapshot, TEvent>[];
}

/**
 * Every transition of the model: the shortest path to each state, extended by each event the
 * state takes. Covers what simple paths cannot (transitions back into a state already visited).
 */
export function edgePaths<TSnapshot extends Snapshot<unknown>, TEvent extends EventObject>(
  machine: AnyStateMachine,
  traversal: ModelTraversal<TSnapshot, TEvent>,
): EdgePaths<TSnapshot, TEvent> {
  const states = getShortestPaths(machine, traversal as never) as unknown as ModelPath<
    TSnapshot,
    TEvent
  >[];
  const adjacency = getAdjacencyMap(machine, traversal as never) as unknown as Record<
    string,
    AdjacencyValue<TSnapshot, TEvent>
  >;
  const byState = new Map(states.map((p) => [traversal.serializeState(p.state), p] as const));
  const edges: ModelPath<TSnapshot, TEvent>[] = [];
  for (const [key, node] of Object.entries(adjacency)) {
    const to = byState.get(key);
    if (to === undefined) throw new Error(`no path to ${key}`);
    for (const next of Object.values(node.transitions)) {
      edges.push({
        ...to,
        state: next.state,
        steps: [...to.steps, { event: next.event, state: next.state }],
      });
    }
  }
  return { states, edges };
}

/** The number of steps over all `paths`. */
export function stepCount(paths: readonly { readonly steps: readonly unknown[] }[]): number {
  return paths.reduce((n, p) => n + p.steps.length, 0);
}

/**
 * The transitions `paths` take, as `from -<label>-> to` between `String(state.value)`s, starting
 * from `initial` (the `xstate.init` step is skipped).
 */
export function transitionsOf<TSnapshot extends Snapshot<unknown>, TEvent extends EventObject>(
  paths: readonly ModelPath<TSnapshot, TEvent>[],
  initial: string,
  label: (event: TEvent) => string,
): Set<string> {
  const seen = new Set<string>();
  for (const p of paths) {
    let from = initial;
    for (const step of p.steps) {
      if (step.event.type === 'xstate.init') continue;
      const to = String((step.state as { value?: unknown }).value);
      seen.add(`${from} -${label(step.event)}-> ${to}`);
      from = to;
    }
  }
  return seen;
}

/** The default path description: `event → state, …`. */
export function describeModelPath<TSnapshot extends Snapshot<unknown>, TEvent extends EventObject>(
  path: ModelPath<TSnapshot, TEvent>,
  label: (event: TEvent) => string = (event) => event.type,
): string {
  return path.steps
    .map((s) => `${label(s.event)} → ${String((s.state as { value?: unknown }).value)}`)
    .join(', ');
}

/**
 * Replays `paths` one after the other; the first failure is rethrown naming its path (with the
 * original failure as `cause`).
 */
export async function replayPaths<TPath>(
  paths: readonly TPath[],
  replay: (path: TPath) => Promise<void>,
  describe: (path: TPath) => string,
): Promise<void> {
  for (const path of paths) {
    try {
      await replay(path);
    } catch (err) {
      throw new Error(`path failed: ${describe(path)}`, { cause: err });
    }
  }
}

// ---- transition-definition coverage ----

type TransitionDef = ReturnType<AnyStateMachine['getTransitionData']>[number];

/** The snapshot fields the coverage walk reads. */
export interface CoverageSnapshot {
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

function transitionLabel(t: TransitionDef): string {
  const guard = t.guard === undefined ? '' : `[${JSON.stringify(t.guard)}]`;
  const targets = (t.target ?? []).map((n) => n.id).join(',') || '(internal)';
  return `${t.source.id} --${t.eventType}${guard}--> ${targets}`;
}

export interface Coverage<E extends EventObject> {
  /** Every reachable (state, event) edge, as a path from the initial state. */
  edges: { steps: { event: E; state: CoverageSnapshot }[]; taken: boolean }[];
  untakenTransitions: string[];
  unreachedStates: string[];
}

/**
 * Walks every reachable (state, event) pair of `machine` and reports which transition
 * definitions and leaf states were never exercised. Each edge comes back as a replayable path:
 * the shortest path to its source state, plus the edge (`xstate.init` left out).
 */
export function coverage<E extends EventObject>(
  machine: AnyStateMachine,
  options: {
    events: (snapshot: CoverageSnapshot) => E[];
    serializeState: (snapshot: CoverageSnapshot) => string;
    input?: unknown;
  },
): Coverage<E> {
  const traversal = {
    events: options.events,
    serializeState: options.serializeState,
    input: options.input,
  } as never;
  type Step = { event: E; state: CoverageSnapshot };
  const adjacency = getAdjacencyMap(machine, traversal) as unknown as Record<
    string,
    { state: CoverageSnapshot; transitions: Record<string, Step> }
  >;
  const paths = getShortestPaths(machine, traversal) as unknown as {
    state: CoverageSnapshot;
    steps: Step[];
  }[];
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
      .map(transitionLabel),
    unreachedStates: allLeafIds(machine.root).filter((id) => !reached.has(id)),
  };
}

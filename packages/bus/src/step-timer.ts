import type { PluglineMetrics, WorkStep } from '@plugline/telemetry';
import type { Stage } from '@plugline/contracts';

/**
 * Times the steps of one work item's handling into `plugline_work_step_seconds`: each `lap` ends
 * the step named and starts the next one. An operator reads from it where a stage's time goes
 * (a slow `lease` is contention, a long `queued` a saturated stage, `run` the effects).
 */
export class StepTimer {
  #since: number;

  constructor(
    private readonly metrics: PluglineMetrics,
    private readonly stage: Stage,
  ) {
    // Made when the item arrives: its `queued` step starts here.
    this.#since = performance.now();
  }

  lap(step: WorkStep): void {
    const now = performance.now();
    this.metrics.workStep.observe({ stage: this.stage, step }, (now - this.#since) / 1000);
    this.#since = now;
  }
}

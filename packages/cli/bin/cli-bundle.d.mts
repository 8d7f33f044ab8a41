/** See cli-bundle.mjs. */
export function cliBundleStaleReason(dir: string, repoRoot: string): string | undefined;
export function changedInputReason(
  inputs: readonly string[],
  repoRoot: string,
  builtMs: number,
): string | undefined;

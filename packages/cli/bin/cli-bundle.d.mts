/** See cli-bundle.mjs. */
export function cliBundleStaleReason(dir: string, repoRoot: string): string | undefined;

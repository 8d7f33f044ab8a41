/**
 * The production build: each service's `src/main.ts` bundled with esbuild into one ESM file
 * (`dist/<service>.mjs`) that plain `node` runs. From source, every service process carries tsx's
 * loader and compiles its TypeScript at start-up; the bundle starts with neither (issue 10: idle
 * RSS). Bundles are local build artifacts: they may refer to this checkout's node_modules.
 *
 * plugctl's client commands are bundled too (`dist/plugctl/`, one file per command loaded on
 * demand), which `bin/plugctl.mjs` runs while it is current: `plugctl status` starts in ~0.17 s
 * instead of ~1 s through tsx, and `addvolume --wait` returns in ~0.25 s, most of it the volume's
 * own time to `Ready`.
 */
import { realpathSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { BuildOptions, Message, Metafile, OutputFile, PluginBuild } from 'esbuild';
import { changedInputReason, cliBundleStaleReason } from '../bin/cli-bundle.mjs';
import { StackError } from './errors.js';

export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
/** Where `pnpm build` writes: `<repo>/dist/<entry>.mjs` and `dist/meta.json`. */
export const DEFAULT_BUNDLE_DIR = join(REPO_ROOT, 'dist');
const META_FILE = 'meta.json';

/** What is bundled: the four services (kube-sim stays on tsx: it reads fixtures beside its source). */
export const BUNDLE_ENTRIES = [
  'spec-watcher',
  'attachment-orchestrator',
  'node-mounter',
  'domain-updater',
] as const;
export type BundleEntry = (typeof BUNDLE_ENTRIES)[number];

/** The bundle of `entry` in `outDir`. */
export function bundlePath(entry: BundleEntry, outDir: string = DEFAULT_BUNDLE_DIR): string {
  return join(outDir, `${entry}.mjs`);
}

/** plugctl's bundle: `main.mjs` and its chunks, and the files it was built from (`meta.json`). */
export const CLI_BUNDLE_DIR = 'plugctl';

/** The folder of plugctl's bundle in `outDir`. */
export function cliBundleDir(outDir: string = DEFAULT_BUNDLE_DIR): string {
  return join(outDir, CLI_BUNDLE_DIR);
}

function entrySource(entry: BundleEntry): string {
  return join(REPO_ROOT, 'services', entry, 'src', 'main.ts');
}

/**
 * Dependencies some modules `require()` at run time (CommonJS inside an ESM bundle needs a real
 * `require`), and pino's worker files: a transport (`LOG_PRETTY=true`) starts a worker thread from
 * a file path, which a bundle does not contain, so pino is told where the installed ones are.
 */
function banner(): string {
  const telemetry = createRequire(join(REPO_ROOT, 'packages', 'telemetry', 'package.json'));
  const pino = createRequire(telemetry.resolve('pino'));
  const overrides: Record<string, string> = {};
  const tryResolve = (key: string, req: NodeJS.Require, id: string): void => {
    try {
      overrides[key] = req.resolve(id);
    } catch {
      // not installed: pino then fails loudly at start-up, only when a transport is asked for
    }
  };
  tryResolve('pino-worker', pino, 'pino/lib/worker.js');
  tryResolve(
    'thread-stream-worker',
    createRequire(pino.resolve('thread-stream')),
    'thread-stream/lib/worker.js',
  );
  tryResolve('pino-pretty', telemetry, 'pino-pretty');
  return [
    "import { createRequire as __pluglineCreateRequire } from 'node:module';",
    'const require = __pluglineCreateRequire(import.meta.url);',
    `globalThis.__bundlerPathsOverrides = ${JSON.stringify(overrides)};`,
  ].join('\n');
}

/**
 * Packages left out of the bundles and imported from where they are installed: koffi finds its
 * native binary beside its own files. Resolved from the service that depends on it, so the import
 * is an absolute path into this checkout's node_modules (pnpm does not hoist it to the root).
 */
const EXTERNAL_PACKAGES: Readonly<Record<string, string>> = { koffi: 'node-mounter' };

function externalPackages(): { name: string; setup: (build: PluginBuild) => void } {
  return {
    name: 'plugline-external-packages',
    setup(build) {
      const filter = new RegExp(`^(${Object.keys(EXTERNAL_PACKAGES).join('|')})$`);
      build.onResolve({ filter }, (args) => {
        const service = EXTERNAL_PACKAGES[args.path]!;
        const req = createRequire(join(REPO_ROOT, 'services', service, 'package.json'));
        return { path: pathToFileURL(realpathSync(req.resolve(args.path))).href, external: true };
      });
    },
  };
}

/**
 * `plugctl up` stays out of the CLI bundle: it finds the services, kube-sim and its own launcher
 * beside its source files, and a long-running command gains nothing from a faster start. The
 * launcher runs it from source; this stub only answers if the bundle is started by hand.
 */
function upFromSourceOnly(): { name: string; setup: (build: PluginBuild) => void } {
  const namespace = 'plugline-up-from-source';
  return {
    name: namespace,
    setup(build) {
      build.onResolve({ filter: /^\.\/commands\/up\.js$/ }, () => ({ path: 'up', namespace }));
      build.onLoad({ filter: /.*/, namespace }, () => ({
        contents: [
          "import { CliError } from './errors.js';",
          'export async function upCommand() {',
          "  throw new CliError('plugctl up runs from the sources: start it with packages/cli/bin/plugctl.mjs up');",
          '}',
        ].join('\n'),
        resolveDir: join(REPO_ROOT, 'packages', 'cli', 'src'),
        loader: 'ts',
      }));
    },
  };
}

interface Meta {
  /** Every file a bundle was built from, relative to the repository root. */
  inputs: string[];
  entries: string[];
}

/** What `bin/plugctl.mjs` checks: the CLI bundle is current while no input is newer than it. */
interface CliMeta {
  /** Every file the bundle was built from (and this build script), relative to the repository root. */
  inputs: string[];
}

export interface BuildResult {
  outDir: string;
  files: string[];
  warnings: string[];
}

/**
 * Bundles every entry into `outDir`. Each file is written beside its place and renamed into it,
 * so a service starting while another `plugctl up` builds never reads half a bundle.
 */
export async function buildBundles(outDir: string = DEFAULT_BUNDLE_DIR): Promise<BuildResult> {
  const dir = resolve(outDir);
  const [services, cli] = await Promise.all([buildServices(dir), buildCli(dir)]);
  return {
    outDir: dir,
    files: [...services.files, ...cli.files],
    warnings: [...services.warnings, ...cli.warnings],
  };
}

/** Runs esbuild with what every bundle here shares; the files come back unwritten. */
async function bundle(
  options: BuildOptions,
): Promise<{ outputFiles: OutputFile[]; metafile: Metafile; warnings: Message[] }> {
  // Loaded only when building: running the bundles does not need esbuild.
  const esbuild = await import('esbuild');
  const result = await esbuild
    .build({
      absWorkingDir: REPO_ROOT,
      outExtension: { '.js': '.mjs' },
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: `node${process.versions.node.split('.')[0]}`,
      sourcemap: 'linked',
      legalComments: 'none',
      banner: { js: banner() },
      metafile: true,
      write: false,
      logLevel: 'silent',
      ...options,
    })
    .catch((err: unknown) => {
      throw new StackError(`the build failed: ${String(err)}`, { cause: err });
    });
  const { outputFiles, metafile, warnings } = result;
  if (outputFiles === undefined || metafile === undefined) {
    throw new StackError('the build returned no files (esbuild was asked for them)');
  }
  return { outputFiles, metafile, warnings };
}

/** Writes each file beside its place and renames it into it; resolves with the paths. */
async function writeOutputs(outputs: readonly { path: string; contents: Uint8Array }[]) {
  const files: string[] = [];
  for (const out of outputs) {
    const tmp = `${out.path}.${process.pid}.tmp`;
    await mkdir(dirname(out.path), { recursive: true });
    await writeFile(tmp, out.contents);
    await rename(tmp, out.path);
    files.push(out.path);
  }
  return files;
}

function warningsOf(result: { warnings: Message[] }): string[] {
  return result.warnings.map((w) => {
    const where = w.location === null ? '' : `${w.location.file}:${w.location.line}: `;
    return `${where}${w.text}`;
  });
}

async function buildServices(dir: string): Promise<Omit<BuildResult, 'outDir'>> {
  const result = await bundle({
    entryPoints: Object.fromEntries(BUNDLE_ENTRIES.map((e) => [e, entrySource(e)])),
    outdir: dir,
    // Shared modules stay inside each bundle: one file per service, nothing else to ship.
    splitting: false,
    plugins: [externalPackages()],
  });
  await mkdir(dir, { recursive: true });
  const files = await writeOutputs(result.outputFiles);
  const meta: Meta = {
    inputs: Object.keys(result.metafile.inputs).sort(),
    entries: [...BUNDLE_ENTRIES],
  };
  // Written last: a build interrupted before it leaves no meta, so the next check rebuilds.
  await writeFile(join(dir, META_FILE), JSON.stringify(meta), 'utf8');
  return { files, warnings: warningsOf(result) };
}

/**
 * plugctl's client commands: `main.mjs` with a chunk per command (each loaded on demand, as from
 * source), then `meta.json`, which `bin/plugctl.mjs` reads to tell a current bundle. Files of
 * earlier builds are removed once the new ones are in place and they are a minute old.
 */
async function buildCli(dir: string): Promise<Omit<BuildResult, 'outDir'>> {
  const out = cliBundleDir(dir);
  const result = await bundle({
    entryPoints: { main: join(REPO_ROOT, 'packages', 'cli', 'src', 'main.ts') },
    outdir: out,
    splitting: true,
    chunkNames: 'chunk-[hash]',
    entryNames: '[name]',
    plugins: [upFromSourceOnly(), externalPackages()],
  });
  await mkdir(out, { recursive: true });
  // The entry last (then the meta): a plugctl starting meanwhile finds every chunk it imports.
  const main = join(out, 'main.mjs');
  const files = await writeOutputs([
    ...result.outputFiles.filter((f) => f.path !== main),
    ...result.outputFiles.filter((f) => f.path === main),
  ]);
  const meta: CliMeta = {
    inputs: [
      ...Object.keys(result.metafile.inputs).filter((i) => !i.includes(':')),
      relative(REPO_ROOT, fileURLToPath(import.meta.url)),
    ].sort(),
  };
  await writeFile(join(out, META_FILE), JSON.stringify(meta), 'utf8');
  await removeOldChunks(out, new Set([...files.map((f) => basename(f)), META_FILE]));
  return { files, warnings: warningsOf(result) };
}

/**
 * A plugctl imports a command's chunk within milliseconds of its start; chunks of earlier builds
 * are removed once they are older than this, not at once, so one that just started still finds its.
 */
const OLD_CHUNK_GRACE_MS = 60_000;

async function removeOldChunks(dir: string, current: ReadonlySet<string>): Promise<void> {
  for (const name of await readdir(dir)) {
    if (current.has(name)) continue;
    const changed = await mtimeMs(join(dir, name));
    if (changed !== undefined && Date.now() - changed > OLD_CHUNK_GRACE_MS) {
      await rm(join(dir, name), { force: true });
    }
  }
}

async function mtimeMs(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).mtimeMs;
  } catch {
    return undefined;
  }
}

/**
 * Why the bundles in `outDir` must be (re)built, or undefined when they are current: one is
 * missing, or a file it was built from (source, dependency, this build script) changed since.
 */
export async function staleReason(
  outDir: string = DEFAULT_BUNDLE_DIR,
): Promise<string | undefined> {
  const dir = resolve(outDir);
  let meta: Meta;
  try {
    meta = JSON.parse(await readFile(join(dir, META_FILE), 'utf8')) as Meta;
  } catch {
    return `no build in ${relative(process.cwd(), dir) || '.'}`;
  }
  let oldest = Number.POSITIVE_INFINITY;
  for (const entry of BUNDLE_ENTRIES) {
    const built = await mtimeMs(bundlePath(entry, dir));
    if (built === undefined || !meta.entries.includes(entry)) return `${entry} is not built`;
    oldest = Math.min(oldest, built);
  }
  const inputs = [...meta.inputs, relative(REPO_ROOT, fileURLToPath(import.meta.url))];
  const changed = changedInputReason(inputs, REPO_ROOT, oldest);
  if (changed !== undefined) return changed;
  const cli = cliBundleStaleReason(cliBundleDir(dir), REPO_ROOT);
  return cli === undefined ? undefined : `plugctl: ${cli}`;
}

/** Builds the bundles unless they are current; resolves with what it did, for the user. */
export async function ensureBundles(
  outDir: string = DEFAULT_BUNDLE_DIR,
): Promise<{ built: boolean; reason?: string; warnings: string[] }> {
  const reason = await staleReason(outDir);
  if (reason === undefined) return { built: false, warnings: [] };
  const { warnings } = await buildBundles(outDir);
  return { built: true, reason, warnings };
}

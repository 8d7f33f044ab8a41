/** plugctl's command dispatch and error reporting. */
import { ConfigError, PluglineError } from '@plugline/contracts';
import { CliError, ExitCode } from './errors.js';
import type { Io } from './io.js';

export const USAGE = `plugctl: hot-plug volumes into running VMs (virtctl's addvolume/removevolume), follow them, and run
the whole system on one machine. Also a kubectl plugin: kubectl plugline <command>.

Usage:
  plugctl <command> [flags]

Commands:
  addvolume VMI --volume-name=NAME    add a volume (a DataVolume or PVC) to a running VM
  removevolume VMI --volume-name=NAME remove a hotplugged volume
  status VMI                          the VMI's volumes: phase, target, node, attachment pod
  events [VMI]                        the event stream (--follow, -o json)
  up                                  start the embedded default (NATS, kube-sim, the services)

Use "plugctl <command> --help" for a command's flags.
`;

type Command = (argv: readonly string[], io: Io) => Promise<number>;

// Loaded on demand: a command pays only for the clients it uses (start-up time matters in a CLI).
const COMMANDS: Readonly<Record<string, () => Promise<Command>>> = {
  addvolume: async () => (await import('./commands/addvolume.js')).addvolumeCommand,
  removevolume: async () => (await import('./commands/removevolume.js')).removevolumeCommand,
  status: async () => (await import('./commands/status.js')).statusCommand,
  events: async () => (await import('./commands/events.js')).eventsCommand,
  up: async () => (await import('./commands/up.js')).upCommand,
};

/** Runs plugctl with `argv` (without the program name); resolves with the exit code. */
export async function run(argv: readonly string[], io: Io): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    io.out(USAGE);
    return name === undefined ? ExitCode.Error : ExitCode.Ok;
  }
  const load = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (load === undefined) {
    io.err(`Error: unknown command "${name}" for "plugctl"\nRun 'plugctl --help' for usage.\n`);
    return ExitCode.Error;
  }
  try {
    const command = await load();
    return await command(rest, io);
  } catch (err) {
    if (err instanceof CliError) {
      io.err(`${err.message}\n`);
      return err.exitCode;
    }
    if (err instanceof ConfigError || err instanceof PluglineError) {
      io.err(`error: ${err.message}\n`);
      return ExitCode.Error;
    }
    io.err(`error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return ExitCode.Error;
  }
}

/**
 * The command line front end: global flags, help, version, strict flag checking, and errors → exit codes.
 *
 * Steps of `main(argv)`:
 *  1. take the global flags out of argv, wherever they stand (`soci-ts --root R index list` and
 *     `soci-ts index list --root R` mean the same);
 *  2. `--version` prints the version; `--help`/`-h` prints the help of the command it follows;
 *  3. find the command named by argv and refuse flags it does not declare (a usage error, exit 2);
 *  4. run it with citty; map what it throws to an exit code: 0 success, 1 failure, 2 usage error.
 *
 * What this module imports up front is all `--version` loads: citty (usage, parsing) and the command context
 * (config, logger) are imported when help is shown or a command runs, each command's file when it runs.
 */
import type { ArgsDef, CommandDef } from "citty";
import pkg from "../../package.json" with { type: "json" };
import { ConfigError, errorMessage, InvalidArgumentError } from "../util/errors.ts";
import { rootCommand } from "./commands.ts";
import type { GlobalFlags } from "./context.ts";
import { writeOut } from "./output.ts";
import { LOG_LEVELS } from "../config/defaults.ts";

export const VERSION: string = pkg.version;

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** A usage error: wrong flags, missing arguments, unknown commands. Exit code 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** The global flags, documented once for every command's help. */
export const GLOBAL_FLAGS_HELP = `GLOBAL OPTIONS (before or after the command)

  --config FILE        Config file (default $SOCI_TS_CONFIG or /etc/soci-ts/config.toml)
  --root DIR           State root (default $SOCI_TS_ROOT or /var/lib/soci-ts)
  --log-level LEVEL    error, warn, info, debug or trace (default from config: info)
  --log-format FORMAT  text or json (json for daemons)
  --debug              Debug logs, with one line per FUSE and registry request
  -h, --help           Show help
  --version            Show the version`;

const VALUE_FLAGS = new Set(["--config", "--root", "--log-level", "--log-format"]);

/**
 * Split argv into global flags and the rest.
 * @throws UsageError when a global flag lacks its value or has a bad one
 */
export function extractGlobalFlags(argv: string[]): { flags: GlobalFlags; rest: string[] } {
  const flags: GlobalFlags = { debug: false };
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--") {
      rest.push(...argv.slice(i));
      break;
    }
    if (arg === "--debug") {
      flags.debug = true;
      continue;
    }
    const eq = arg.indexOf("=");
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    if (!VALUE_FLAGS.has(name)) {
      rest.push(arg);
      continue;
    }
    let value: string | undefined;
    if (eq > 0) {
      value = arg.slice(eq + 1);
    } else {
      value = argv[++i];
      if (value === undefined || value.startsWith("--")) throw new UsageError(`Option "${name}" needs a value`);
    }
    switch (name) {
      case "--config":
        flags.config = value;
        break;
      case "--root":
        flags.root = value;
        break;
      case "--log-level": {
        const level = LOG_LEVELS.find((l) => l === value);
        if (level === undefined) {
          throw new UsageError(`Option "--log-level" must be one of ${LOG_LEVELS.join(", ")}, got "${value}"`);
        }
        flags.logLevel = level;
        break;
      }
      case "--log-format":
        if (value !== "text" && value !== "json")
          throw new UsageError(`Option "--log-format" must be text or json, got "${value}"`);
        flags.logFormat = value;
        break;
    }
  }
  return { flags, rest };
}

async function resolve<T>(value: T | Promise<T> | (() => T) | (() => Promise<T>) | undefined): Promise<T | undefined> {
  return typeof value === "function" ? await (value as () => T | Promise<T>)() : await value;
}

interface Resolved {
  /** The command chain, root first. */
  chain: CommandDef<ArgsDef>[];
  /** argv after the last command name. */
  args: string[];
}

/** Walk subcommands as far as argv names them. */
async function resolveChain(argv: string[]): Promise<Resolved> {
  const chain: CommandDef<ArgsDef>[] = [rootCommand];
  let cmd: CommandDef<ArgsDef> = rootCommand;
  let args = argv;
  for (;;) {
    const subs = await resolve(cmd.subCommands);
    if (!subs || Object.keys(subs).length === 0) break;
    const idx = args.findIndex((a) => !a.startsWith("-"));
    if (idx < 0) break;
    const name = args[idx]!;
    const sub = (await resolve(subs[name])) as CommandDef<ArgsDef> | undefined;
    if (!sub) {
      const names = Object.keys(subs).join(", ");
      throw new UsageError(
        `Unknown command "${name}"${chain.length > 1 ? ` for "${commandPath(chain)}"` : ""} (commands: ${names})`,
      );
    }
    chain.push(sub);
    cmd = sub;
    args = args.slice(idx + 1);
  }
  return { chain, args };
}

function commandPath(chain: CommandDef<ArgsDef>[]): string {
  return chain
    .map((c) => (typeof c.meta === "object" && c.meta && "name" in c.meta ? (c.meta.name as string) : ""))
    .filter(Boolean)
    .join(" ");
}

function stripAnsi(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: ESC starts the ANSI colour sequences this removes
  return text.replace(/\x1b\[[0-9;]*m/g, "");
}

function kebab(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** Refuse options the command does not declare, and values given to boolean flags. */
async function checkFlags(cmd: CommandDef<ArgsDef>, args: string[], path: string): Promise<void> {
  const defs = (await resolve(cmd.args)) ?? {};
  const known = new Map<string, "boolean" | "value">();
  for (const [name, def] of Object.entries(defs)) {
    if (def.type === "positional") continue;
    const kind = def.type === "boolean" ? "boolean" : "value";
    const alias = (def as { alias?: string | string[] }).alias;
    const aliases = alias === undefined ? [] : Array.isArray(alias) ? alias : [alias];
    for (const n of [name, kebab(name), ...aliases]) {
      known.set(n.length === 1 ? `-${n}` : `--${n}`, kind);
    }
    if (kind === "boolean") known.set(`--no-${kebab(name)}`, "boolean");
  }
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") break;
    if (!arg.startsWith("-") || arg === "-") continue;
    const name = arg.includes("=") ? arg.slice(0, arg.indexOf("=")) : arg;
    const kind = known.get(name);
    if (kind === undefined) throw new UsageError(`Unknown option "${name}" for "${path}"`);
    if (kind === "value" && !arg.includes("=")) {
      const next = args[i + 1];
      if (next === undefined) throw new UsageError(`Option "${name}" needs a value`);
      i++;
    }
  }
}

async function usage(chain: CommandDef<ArgsDef>[]): Promise<string> {
  const cmd = chain[chain.length - 1]!;
  const parent = chain.length > 1 ? chain[chain.length - 2] : undefined;
  const [{ renderUsage }, { fstatSync }] = await Promise.all([import("citty"), import("node:fs")]);
  let text = await renderUsage(cmd, parent);
  // Colours only on a terminal. fstat rather than node:tty's isatty, which costs ~12 ms to load (node:fs ~3 ms):
  // a character device is a terminal, or /dev/null, where colour codes do no harm.
  if (!fstatSync(1).isCharacterDevice()) text = stripAnsi(text);
  return `${text}\n\n${GLOBAL_FLAGS_HELP}\n`;
}

/**
 * Run the CLI on argv (without the executable and script names) and return the exit code.
 */
export async function main(argv: string[]): Promise<number> {
  let chain: CommandDef<ArgsDef>[] = [rootCommand];
  let flags: GlobalFlags = { debug: false };
  try {
    // 1. Global flags, wherever they stand (stored in the context once a command runs: step 4).
    const extracted = extractGlobalFlags(argv);
    flags = extracted.flags;
    const rest = extracted.rest;

    // 2. Version and help.
    if (rest.length === 1 && (rest[0] === "--version" || rest[0] === "-v")) {
      await writeOut(`soci-ts ${VERSION}\n`);
      return EXIT_OK;
    }
    const helpAt = rest.findIndex((a) => a === "--help" || a === "-h");
    const resolved = await resolveChain(helpAt >= 0 ? rest.slice(0, helpAt) : rest);
    chain = resolved.chain;
    const leaf = chain[chain.length - 1]!;
    if (helpAt >= 0 || (leaf.run === undefined && resolved.args.length === 0)) {
      await writeOut(await usage(chain));
      return helpAt >= 0 || chain.length === 1 ? EXIT_OK : EXIT_USAGE;
    }

    // 3. Strict flags for the command named.
    await checkFlags(leaf, resolved.args, commandPath(chain) || "soci-ts");

    // 4. Run it, with the global flags in its context.
    const [{ runCommand }, { setGlobalFlags }] = await Promise.all([import("citty"), import("./context.ts")]);
    setGlobalFlags(flags);
    await runCommand(rootCommand, { rawArgs: rest });
    return EXIT_OK;
  } catch (err) {
    return report(err, chain, flags);
  }
}

async function report(err: unknown, chain: CommandDef<ArgsDef>[], flags: GlobalFlags): Promise<number> {
  const isCitty = err instanceof Error && err.name === "CLIError";
  const isUsage = err instanceof UsageError || err instanceof InvalidArgumentError || isCitty;
  const msg = stripAnsi(errorMessage(err));
  if (isUsage) {
    process.stderr.write(`soci-ts: ${msg}\nRun "${commandPath(chain)} --help" for usage.\n`);
    return EXIT_USAGE;
  }
  const debug = flags.debug;
  let logged = false;
  if (!(err instanceof ConfigError)) {
    try {
      const context = await import("./context.ts");
      // The failure may come before step 4 stored the flags: the logger still honours --log-format and --log-level.
      if (context.getGlobalFlags() !== flags) context.setGlobalFlags(flags);
      context.cliContext().logger.error(msg);
      logged = true;
    } catch {
      // the context itself failed (bad config): fall through to plain stderr
    }
  }
  if (!logged) process.stderr.write(`soci-ts: ${msg}\n`);
  if (debug && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
  return EXIT_FAILURE;
}

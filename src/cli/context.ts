/**
 * What every command gets: the effective configuration, the state root, the logger, and the global flags.
 *
 * Global flags (`--config`, `--root`, `--log-level`, `--log-format`, `--debug`) are accepted before or after the
 * subcommand: run.ts takes them out of argv before citty parses the rest, and stores them here.
 */
import { closeSync, constants, existsSync, fstatSync, openSync, readSync, statSync } from "node:fs";
import { DEFAULT_CONFIG_PATH, DEFAULT_ROOT, type LogLevel } from "../config/defaults.ts";
import { defaultConfig, parseConfig } from "../config/load.ts";
import type { Config } from "../config/schema.ts";
import { ConfigError, fsErrorReason, InvalidArgumentError } from "../util/errors.ts";
import { type CliLogger, createLogger, type LogFormat } from "./logger.ts";

export interface GlobalFlags {
  config?: string;
  root?: string;
  logLevel?: LogLevel;
  logFormat?: LogFormat;
  debug: boolean;
}

export interface CliContext {
  config: Config;
  /** Where the config came from ("" when only defaults are in force). */
  configPath: string;
  /** State root: content store, span cache, mounts. */
  root: string;
  logger: CliLogger;
  flags: GlobalFlags;
}

let globalFlags: GlobalFlags = { debug: false };
let cached: CliContext | undefined;

export function setGlobalFlags(flags: GlobalFlags): void {
  globalFlags = flags;
  cached = undefined;
}

export function getGlobalFlags(): GlobalFlags {
  return globalFlags;
}

/**
 * Build the context once per process: config from `--config`, else $SOCI_TS_CONFIG, else
 * /etc/soci-ts/config.toml when it exists, else the defaults; `--log-level`/`--debug` override the file.
 * @throws ConfigError when a named config file is missing or invalid
 */
export function cliContext(): CliContext {
  if (cached) return cached;
  const flags = globalFlags;
  const named = flags.config ?? process.env.SOCI_TS_CONFIG;
  let config = defaultConfig();
  let configPath = "";
  if (named !== undefined && named !== "") {
    config = parseConfig(readConfigFile(named), named);
    configPath = named;
  } else if (existsSync(DEFAULT_CONFIG_PATH)) {
    config = parseConfig(readConfigFile(DEFAULT_CONFIG_PATH), DEFAULT_CONFIG_PATH);
    configPath = DEFAULT_CONFIG_PATH;
  }
  if (flags.debug) config.debug = true;
  if (flags.logLevel) {
    config.logLevel = flags.logLevel;
  } else if (flags.debug) {
    config.logLevel = "debug";
  }
  const root = flags.root ?? (process.env.SOCI_TS_ROOT || DEFAULT_ROOT);
  const logger = createLogger({ level: config.logLevel, format: flags.logFormat ?? "text" });
  cached = { config, configPath, root, logger, flags };
  return cached;
}

/** Largest config file read (1 MiB): a config is a few kilobytes; anything bigger is not one. */
export const CONFIG_MAX_BYTES = 1024 * 1024;

/**
 * The text of a config file: a regular file (symlinks followed) or a character device (`/dev/null` for no
 * settings) of at most CONFIG_MAX_BYTES. Never blocks (on a FIFO, a terminal), never reads more than
 * CONFIG_MAX_BYTES + 1 bytes (`/dev/zero` is refused as too big).
 * @throws ConfigError "Cannot read config file "<path>": <reason>" (the reason in words, without Node's message)
 */
export function readConfigFile(path: string): string {
  const fail = (why: string) => new ConfigError(`Cannot read config file "${path}": ${why}`, "");
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO without a writer would wait (it is refused below), and so would reading a tty.
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (err) {
    throw fail(fsErrorReason(err));
  }
  try {
    const st = fstatSync(fd);
    if (st.isDirectory()) throw fail("is a directory");
    if (!st.isFile() && !st.isCharacterDevice()) throw fail("not a regular file");
    if (st.size > CONFIG_MAX_BYTES) throw fail(`${st.size} bytes, over the limit of ${CONFIG_MAX_BYTES}`);
    // The size can change under us (or be 0, as in /proc): read at most one byte past the limit.
    const buf = new Uint8Array(CONFIG_MAX_BYTES + 1);
    let n = 0;
    for (;;) {
      let got: number;
      try {
        got = readSync(fd, buf, n, buf.length - n, null);
      } catch (err) {
        throw fail(fsErrorReason(err));
      }
      if (got === 0) break;
      n += got;
      if (n > CONFIG_MAX_BYTES) throw fail(`over the limit of ${CONFIG_MAX_BYTES} bytes`);
    }
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(buf.subarray(0, n));
    } catch {
      throw fail("not UTF-8 text");
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * The state root, checked: it must be a directory when it exists (it is created when it does not).
 * @throws InvalidArgumentError naming the root and where it came from (`--root` or $SOCI_TS_ROOT)
 */
export function usableRoot(ctx: CliContext): string {
  const from = ctx.flags.root !== undefined ? "--root" : process.env.SOCI_TS_ROOT ? "$SOCI_TS_ROOT" : "the default";
  const fail = (why: string) => new InvalidArgumentError(`Cannot use state root "${ctx.root}" (${from}): ${why}`);
  if (ctx.root === "") throw fail("empty path");
  let isDir: boolean;
  try {
    isDir = statSync(ctx.root).isDirectory();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return ctx.root;
    throw fail((err as NodeJS.ErrnoException).code === "ENOTDIR" ? "a parent is not a directory" : fsErrorReason(err));
  }
  if (!isDir) throw fail("not a directory");
  return ctx.root;
}

/**
 * What every command gets: the effective configuration, the state root, the logger, and the global flags.
 *
 * Global flags (`--config`, `--root`, `--log-level`, `--log-format`, `--debug`) are accepted before or after the
 * subcommand: run.ts takes them out of argv before citty parses the rest, and stores them here.
 */
import { existsSync, readFileSync } from "node:fs";
import { DEFAULT_CONFIG_PATH, DEFAULT_ROOT } from "../config/defaults.ts";
import { defaultConfig, parseConfig } from "../config/load.ts";
import type { Config } from "../config/schema.ts";
import { ConfigError } from "../util/errors.ts";
import { type CliLogger, createLogger, type LogFormat } from "./logger.ts";

export interface GlobalFlags {
  config?: string;
  root?: string;
  logLevel?: string;
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
    if (!existsSync(named)) throw new ConfigError(`Cannot read config file "${named}": no such file`, "");
    config = parseConfig(readFileSync(named, "utf8"), named);
    configPath = named;
  } else if (existsSync(DEFAULT_CONFIG_PATH)) {
    config = parseConfig(readFileSync(DEFAULT_CONFIG_PATH, "utf8"), DEFAULT_CONFIG_PATH);
    configPath = DEFAULT_CONFIG_PATH;
  }
  if (flags.debug) config.debug = true;
  if (flags.logLevel) {
    config.logLevel = flags.logLevel;
  } else if (flags.debug) {
    config.logLevel = "debug";
  }
  const root = flags.root ?? process.env.SOCI_TS_ROOT ?? DEFAULT_ROOT;
  const logger = createLogger({ level: config.logLevel, format: flags.logFormat ?? "text" });
  cached = { config, configPath, root, logger, flags };
  return cached;
}

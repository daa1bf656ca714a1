/**
 * The CLI's and daemon's logger: consola for people (text on stderr, with progress on a TTY), or one JSON object
 * per line for daemons (`--log-format json`). Implements util/log's Logger so every area can take it.
 *
 * consola is loaded when the first line at or above the level is logged, not before: importing it builds the
 * default consola instance, and with it Node's `process.stdout` and `process.stderr` streams (about 20 ms of
 * CPU at start, more than the rest of a command like `index list` costs). It is loaded with Bun's synchronous
 * `require`, because logging is synchronous.
 *
 * JSON lines are written here, not through consola: consola takes an object argument with a `message` for a log
 * object of its own (the message moves into its args, the rest is not passed on) and folds a message logged again
 * within a second into "(repeated N times)" when only the fields differ, so the fields were lost. consola's JSON
 * reporter is left for what logs through `consola` directly.
 */
import type { ConsolaInstance, LogObject } from "consola";
import type { LogLevel } from "../config/defaults.ts";
import type { LogFields, Logger } from "../util/log.ts";

export type LogFormat = "text" | "json";

/** consola levels: 0 error, 1 warn, 3 info, 4 debug, 5 trace. */
const LEVELS: Record<LogLevel, number> = { error: 0, warn: 1, info: 3, debug: 4, trace: 5 };

/** The logger of the CLI; `consola` is the instance behind it, created on first access. */
export interface CliLogger extends Logger {
  readonly consola: ConsolaInstance;
}

/** A logger at `level` (error, warn, info, debug or trace) writing `format` to stderr. */
export function createLogger(opts: { level: LogLevel; format: LogFormat }): CliLogger {
  const level = LEVELS[opts.level];
  let instance: ConsolaInstance | undefined;
  const consola = (): ConsolaInstance => {
    if (instance) return instance;
    const { createConsola } = require("consola") as typeof import("consola");
    // Leave `reporters` out for text: consola takes an explicit `undefined` as "no reporters" and prints nothing.
    instance = createConsola({
      level,
      stdout: process.stderr,
      stderr: process.stderr,
      ...(opts.format === "json" ? { reporters: [{ log: writeJson }] } : {}),
    });
    return instance;
  };
  const emit = (kind: "error" | "warn" | "info" | "debug", msg: string, fields?: LogFields) => {
    if (LEVELS[kind] > level) return; // what consola would drop, without loading it
    if (opts.format === "json") writeJsonLine(kind, msg, fields);
    else if (fields && Object.keys(fields).length > 0) consola()[kind](`${msg} ${formatFields(fields)}`);
    else consola()[kind](msg);
  };
  return {
    get consola() {
      return consola();
    },
    debugEnabled: level >= 4,
    error: (m, f) => emit("error", m, f),
    warn: (m, f) => emit("warn", m, f),
    info: (m, f) => emit("info", m, f),
    debug: (m, f) => emit("debug", m, f),
  };
}

/** One JSON line: time, level, msg, then the fields (which cannot replace those three). */
function writeJsonLine(level: string, msg: string, fields?: LogFields): void {
  const line: Record<string, unknown> = { time: new Date().toISOString(), level, msg };
  for (const [k, v] of Object.entries(fields ?? {})) if (!(k in line)) line[k] = v;
  process.stderr.write(`${JSON.stringify(line, (_k, v) => (v instanceof Error ? v.message : v))}\n`);
}

/** consola's reporter for what is logged through `consola` directly (its args joined as the message). */
function writeJson(obj: LogObject): void {
  writeJsonLine(obj.type, obj.args.map((a) => (a instanceof Error ? a.message : String(a))).join(" "));
}

function formatFields(fields: LogFields): string {
  return Object.entries(fields)
    .map(([k, v]) => `${k}=${typeof v === "string" && !/\s/.test(v) ? v : JSON.stringify(v)}`)
    .join(" ");
}

/**
 * The logger every area takes as an option. Structured: a message plus optional fields (layer digest, span,
 * path…), so the daemon can print JSON lines (`--log-format json`) and people can read text lines.
 * The CLI and service build one from consola (src/cli/logger.ts); libraries default to `silentLogger`.
 */
export type LogFields = Record<string, unknown>;

export interface Logger {
  error(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  debug(msg: string, fields?: LogFields): void;
  /** True when debug lines are printed (guards building expensive wire-log lines). */
  readonly debugEnabled: boolean;
}

function nop(): void {}

/** A logger that drops everything (the default for library code and tests). */
export const silentLogger: Logger = { error: nop, warn: nop, info: nop, debug: nop, debugEnabled: false };

/** A logger that collects lines in memory, for tests that assert on what was logged. */
export class MemoryLogger implements Logger {
  readonly lines: Array<{ level: string; msg: string; fields?: LogFields }> = [];
  readonly debugEnabled = true;
  error(msg: string, fields?: LogFields): void {
    this.lines.push({ level: "error", msg, fields });
  }
  warn(msg: string, fields?: LogFields): void {
    this.lines.push({ level: "warn", msg, fields });
  }
  info(msg: string, fields?: LogFields): void {
    this.lines.push({ level: "info", msg, fields });
  }
  debug(msg: string, fields?: LogFields): void {
    this.lines.push({ level: "debug", msg, fields });
  }
}

/**
 * Loading and printing configuration. Pure: text in, `Config` out (the CLI reads the file).
 *
 * Loading starts from the defaults and overlays what the TOML sets; every key is checked against the schema, so
 * an unknown key, a wrong type or a bad value fails with a ConfigError that names the key as written in TOML
 * (e.g. `background_fetch.fetch_period_msec`).
 */
import { parse, TomlError } from "smol-toml";
import { ConfigError } from "../util/errors.ts";
import { type FieldSpec, HOST_FIELDS, MIRROR_FIELDS, SCHEMA, type SectionSpec } from "./defaults.ts";
import type { Config, HostConfig, MirrorConfig } from "./schema.ts";

type Table = Record<string, unknown>;

/** The configuration with every default. */
export function defaultConfig(): Config {
  const out: Table = {};
  for (const section of SCHEMA) {
    const target = ensurePath(out, section.ts);
    // A list's default is a fresh empty one: configs never share it.
    for (const f of section.fields) target[f.ts] = f.kind === "tables" ? [] : f.default;
  }
  ensurePath(out, "resolver").host = {};
  // Built by walking SCHEMA, the table `Config` is computed from (schema.ts): the one place the tree is typed.
  // test/config/schema.test.ts checks that it has exactly the keys of the type, at the same paths.
  return out as unknown as Config;
}

/**
 * Parse TOML text into a full configuration (defaults filled in).
 * @param source where the text came from (a file path), named in error messages
 * @throws ConfigError naming the key and the file (or the line, for TOML syntax errors), e.g.
 *   `Cannot load config key "http.MaxRetries" from "/etc/soci-ts/config.toml": 1000000000 is over its maximum 100`
 */
export function parseConfig(text: string, source?: string): Config {
  const from = source === undefined ? "" : ` "${source}"`;
  let doc: Table;
  try {
    doc = parse(text) as Table;
  } catch (err) {
    if (err instanceof TomlError) {
      // One line: smol-toml's message, the line number and that line's text (which names the key), without
      // the caret drawing that follows in its message (hence no `cause`).
      const reason = err.message.split("\n")[0]!.replace(/^Invalid TOML document: /, "");
      const lineText = (text.split("\n")[err.line - 1] ?? "").trim();
      const shown = lineText.length > 80 ? `${lineText.slice(0, 77)}...` : lineText;
      throw new ConfigError(`Cannot parse config${from}: ${reason} (line ${err.line}: ${JSON.stringify(shown)})`, "");
    }
    throw err;
  }
  const config = defaultConfig() as unknown as Table;
  applyTable(config, doc, "", keyError(source));
  return config as unknown as Config;
}

/** Makes the ConfigError of one key: `Cannot load config key "<dotted>"[ from "<source>"]: <why>`. */
type KeyError = (dotted: string, why: string) => ConfigError;

function keyError(source: string | undefined): KeyError {
  const from = source === undefined ? "" : ` from "${source}"`;
  return (dotted, why) => new ConfigError(`Cannot load config key "${dotted}"${from}: ${why}`, dotted);
}

const sectionsByToml = new Map<string, SectionSpec>(SCHEMA.map((s) => [s.toml, s]));
/** Table names that only group other tables, e.g. "pull_modes". */
const groupTables = new Set<string>();
for (const s of SCHEMA) {
  const parts = s.toml.split(".");
  for (let i = 1; i < parts.length; i++) groupTables.add(parts.slice(0, i).join("."));
}

// biome-ignore lint/complexity/useMaxParams: module-private helper
function applyTable(config: Table, table: Table, prefix: string, bad: KeyError): void {
  const section = sectionsByToml.get(prefix);
  for (const [key, value] of Object.entries(table)) {
    const dotted = prefix === "" ? key : `${prefix}.${key}`;
    const field = section?.fields.find((f) => f.toml === key);
    if (field) {
      ensurePath(config, section!.ts)[field.ts] = checkValue(field, value, dotted, bad);
    } else if (dotted === "resolver" && isTable(value)) {
      applyResolver(config, value, bad);
    } else if ((sectionsByToml.has(dotted) || groupTables.has(dotted)) && isTable(value)) {
      applyTable(config, value, dotted, bad);
    } else if (sectionsByToml.has(dotted) || groupTables.has(dotted)) {
      throw bad(dotted, "expected a table");
    } else {
      throw bad(dotted, "unknown key");
    }
  }
}

function applyResolver(config: Table, resolver: Table, bad: KeyError): void {
  const resolverTable = ensurePath(config, "resolver");
  resolverTable.host ??= {};
  const hosts = resolverTable.host as Record<string, HostConfig>;
  for (const [key, value] of Object.entries(resolver)) {
    if (key !== "host") throw bad(`resolver.${key}`, "unknown key");
    if (!isTable(value)) throw bad("resolver.host", "expected a table");
    for (const [host, hostTable] of Object.entries(value)) {
      const at = `resolver.host."${host}"`;
      if (!isTable(hostTable)) throw bad(at, "expected a table");
      hosts[host] = parseHost(hostTable, at, bad);
    }
  }
}

function parseHost(table: Table, at: string, bad: KeyError): HostConfig {
  const host: Table = { mirrors: [] };
  for (const f of HOST_FIELDS) host[f.ts] = f.default;
  for (const [key, value] of Object.entries(table)) {
    const dotted = `${at}.${key}`;
    if (key === "mirrors") {
      if (!Array.isArray(value)) throw bad(dotted, "expected an array of tables");
      host.mirrors = value.map((m, i) => parseMirror(m, `${dotted}[${i}]`, bad));
      continue;
    }
    const field = HOST_FIELDS.find((f) => f.toml === key);
    if (!field) throw bad(dotted, "unknown key");
    host[field.ts] = checkValue(field, value, dotted, bad);
  }
  return host as unknown as HostConfig;
}

function parseMirror(value: unknown, at: string, bad: KeyError): MirrorConfig {
  if (!isTable(value)) throw bad(at, "expected a table");
  const mirror: Table = {};
  for (const f of MIRROR_FIELDS) mirror[f.ts] = f.default;
  for (const [key, v] of Object.entries(value)) {
    const field = MIRROR_FIELDS.find((f) => f.toml === key);
    if (!field) throw bad(`${at}.${key}`, "unknown key");
    mirror[field.ts] = checkValue(field, v, `${at}.${key}`, bad);
  }
  if (mirror.host === "") throw bad(`${at}.host`, "a mirror needs a host");
  return mirror as unknown as MirrorConfig;
}

// biome-ignore lint/complexity/useMaxParams: module-private helper
function checkValue(field: FieldSpec, value: unknown, dotted: string, badKey: KeyError): unknown {
  const bad = (why: string) => badKey(dotted, why);
  switch (field.kind) {
    case "bool":
      if (typeof value !== "boolean") throw bad(`expected true or false, got ${describe(value)}`);
      return value;
    case "int": {
      const n = typeof value === "bigint" ? Number(value) : value;
      if (typeof n !== "number" || !Number.isSafeInteger(n)) throw bad(`expected an integer, got ${describe(value)}`);
      if (n < field.min) throw bad(`${n} is under its minimum ${field.min}`);
      if (n > field.max) throw bad(`${n} is over its maximum ${field.max}`);
      return n;
    }
    case "string":
      if (typeof value !== "string") throw bad(`expected a string, got ${describe(value)}`);
      if (field.pattern && !field.pattern.re.test(value))
        throw bad(`expected ${field.pattern.expected}, got ${shown(value)}`);
      return value;
    case "enum":
      if (typeof value === "string" && field.refused?.[value] !== undefined) throw bad(field.refused[value]);
      if (typeof value !== "string" || !field.values.includes(value)) {
        throw bad(`expected one of ${field.values.map((v) => `"${v}"`).join(", ")}, got ${describe(value)}`);
      }
      return value;
    case "tables":
      if (!Array.isArray(value)) throw bad(`expected an array of tables, got ${describe(value)}`);
      return value.map((entry, i) => checkEntry(field.fields, entry, `${dotted}[${i}]`, badKey));
  }
}

/** One entry of a list of tables: a table with each of `fields` (all required), checked. */
// biome-ignore lint/complexity/useMaxParams: module-private helper
function checkEntry(fields: readonly FieldSpec[], entry: unknown, at: string, bad: KeyError): Table {
  if (!isTable(entry)) throw bad(at, `expected a table, got ${describe(entry)}`);
  const out: Table = {};
  for (const [key, v] of Object.entries(entry)) {
    const field = fields.find((f) => f.toml === key);
    if (!field) throw bad(`${at}.${key}`, `unknown key (expected ${fields.map((f) => `"${f.toml}"`).join(", ")})`);
    out[field.ts] = checkValue(field, v, `${at}.${key}`, bad);
  }
  for (const f of fields) if (!(f.ts in out)) throw bad(`${at}.${f.toml}`, "missing (every entry needs it)");
  return out;
}

/** A string value as an error message quotes it: JSON-escaped (one line whatever it holds), at most 80 characters. */
function shown(value: string): string {
  return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
}

function describe(value: unknown): string {
  if (typeof value === "string") return `"${value}"`;
  if (Array.isArray(value)) return "an array";
  if (isTable(value)) return "a table";
  return String(value);
}

function isTable(value: unknown): value is Table {
  return typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Date);
}

function ensurePath(root: Table, dotted: string): Table {
  let node = root;
  if (dotted === "") return node;
  for (const part of dotted.split(".")) {
    node[part] ??= {};
    node = node[part] as Table;
  }
  return node;
}

function getPath(root: Table, dotted: string): Table {
  let node = root;
  if (dotted === "") return node;
  for (const part of dotted.split(".")) node = node[part] as Table;
  return node;
}

/**
 * The configuration as TOML, with a comment per key giving its meaning and default. With the defaults this is
 * `soci-ts config default`; with a loaded config, `soci-ts config dump`.
 */
export function renderToml(config: Config = defaultConfig()): string {
  const root = config as unknown as Table;
  const lines: string[] = ["# soci-ts configuration. Every key is optional; shown here with its value.", ""];
  for (const section of SCHEMA) {
    if (section.toml !== "") lines.push(`# ${section.doc}`, `[${section.toml}]`);
    const values = getPath(root, section.ts);
    for (const f of section.fields) lines.push(...renderField(f, values[f.ts]));
    lines.push("");
  }
  lines.push(
    '# Per-registry settings: [resolver.host."<host>"] with plain_http, ca_file, username, password, and',
    '# mirrors = [{ host = "mirror:5000", insecure = false, request_timeout_sec = 0 }] tried before the origin.',
  );
  for (const [host, hc] of Object.entries(config.resolver.host)) {
    lines.push(`[resolver.host.${JSON.stringify(host)}]`);
    const values = hc as unknown as Table;
    for (const f of HOST_FIELDS) lines.push(...renderField(f, values[f.ts]));
    const mirrors = hc.mirrors.map(
      (m) =>
        `{ host = ${JSON.stringify(m.host)}, insecure = ${m.insecure}, request_timeout_sec = ${m.requestTimeoutSec} }`,
    );
    lines.push(`mirrors = [${mirrors.join(", ")}]`, "");
  }
  return `${lines.join("\n").trimEnd()}\n`;
}

function renderField(f: FieldSpec, value: unknown): string[] {
  const dflt = tomlValue(f.default);
  const val = f.kind === "tables" ? tomlTables(f.fields, value as Table[]) : tomlValue(value);
  const range = f.kind === "int" ? `; ${f.min} to ${f.max}` : "";
  return [`# ${f.doc} (default ${dflt}${range})`, `${f.toml} = ${val}`];
}

/** A scalar (or the empty list) as TOML writes it. */
function tomlValue(v: unknown): string {
  if (Array.isArray(v) && v.length === 0) return "[]";
  return typeof v === "string" ? JSON.stringify(v) : String(v);
}

/** A list of tables as one inline TOML array: `[{ a = 1, b = "x" }, …]`, keys in the order of `fields`. */
function tomlTables(fields: readonly FieldSpec[], entries: readonly Table[]): string {
  const one = (e: Table) => `{ ${fields.map((f) => `${f.toml} = ${tomlValue(e[f.ts])}`).join(", ")} }`;
  return `[${entries.map(one).join(", ")}]`;
}

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
    for (const f of section.fields) target[f.ts] = f.default;
  }
  ensurePath(out, "resolver").host = {};
  return out as unknown as Config;
}

/**
 * Parse TOML text into a full configuration (defaults filled in).
 * @param source where the text came from, for error messages
 * @throws ConfigError naming the key (or the line, for TOML syntax errors)
 */
export function parseConfig(text: string, source = "config"): Config {
  let doc: Table;
  try {
    doc = parse(text) as Table;
  } catch (err) {
    if (err instanceof TomlError) {
      throw new ConfigError(`Cannot parse ${source}: ${err.message.split("\n")[0]} (line ${err.line})`, "", { cause: err });
    }
    throw err;
  }
  const config = defaultConfig() as unknown as Table;
  applyTable(config, doc, "");
  return config as unknown as Config;
}

const sectionsByToml = new Map<string, SectionSpec>(SCHEMA.map((s) => [s.toml, s]));
/** Table names that only group other tables, e.g. "pull_modes". */
const groupTables = new Set<string>();
for (const s of SCHEMA) {
  const parts = s.toml.split(".");
  for (let i = 1; i < parts.length; i++) groupTables.add(parts.slice(0, i).join("."));
}

function applyTable(config: Table, table: Table, prefix: string): void {
  const section = sectionsByToml.get(prefix);
  for (const [key, value] of Object.entries(table)) {
    const dotted = prefix === "" ? key : `${prefix}.${key}`;
    const field = section?.fields.find((f) => f.toml === key);
    if (field) {
      ensurePath(config, section!.ts)[field.ts] = checkValue(field, value, dotted);
    } else if (dotted === "resolver" && isTable(value)) {
      applyResolver(config, value);
    } else if ((sectionsByToml.has(dotted) || groupTables.has(dotted)) && isTable(value)) {
      applyTable(config, value, dotted);
    } else if (sectionsByToml.has(dotted) || groupTables.has(dotted)) {
      throw new ConfigError(`Cannot load config key "${dotted}": expected a table`, dotted);
    } else {
      throw new ConfigError(`Cannot load config key "${dotted}": unknown key`, dotted);
    }
  }
}

function applyResolver(config: Table, resolver: Table): void {
  const hosts = (ensurePath(config, "resolver").host ??= {}) as Record<string, HostConfig>;
  for (const [key, value] of Object.entries(resolver)) {
    if (key !== "host") throw new ConfigError(`Cannot load config key "resolver.${key}": unknown key`, `resolver.${key}`);
    if (!isTable(value)) throw new ConfigError(`Cannot load config key "resolver.host": expected a table`, "resolver.host");
    for (const [host, hostTable] of Object.entries(value)) {
      const at = `resolver.host."${host}"`;
      if (!isTable(hostTable)) throw new ConfigError(`Cannot load config key "${at}": expected a table`, at);
      hosts[host] = parseHost(hostTable, at);
    }
  }
}

function parseHost(table: Table, at: string): HostConfig {
  const host: Table = { mirrors: [] };
  for (const f of HOST_FIELDS) host[f.ts] = f.default;
  for (const [key, value] of Object.entries(table)) {
    const dotted = `${at}.${key}`;
    if (key === "mirrors") {
      if (!Array.isArray(value)) throw new ConfigError(`Cannot load config key "${dotted}": expected an array of tables`, dotted);
      host.mirrors = value.map((m, i) => parseMirror(m, `${dotted}[${i}]`));
      continue;
    }
    const field = HOST_FIELDS.find((f) => f.toml === key);
    if (!field) throw new ConfigError(`Cannot load config key "${dotted}": unknown key`, dotted);
    host[field.ts] = checkValue(field, value, dotted);
  }
  return host as unknown as HostConfig;
}

function parseMirror(value: unknown, at: string): MirrorConfig {
  if (!isTable(value)) throw new ConfigError(`Cannot load config key "${at}": expected a table`, at);
  const mirror: Table = {};
  for (const f of MIRROR_FIELDS) mirror[f.ts] = f.default;
  for (const [key, v] of Object.entries(value)) {
    const field = MIRROR_FIELDS.find((f) => f.toml === key);
    if (!field) throw new ConfigError(`Cannot load config key "${at}.${key}": unknown key`, `${at}.${key}`);
    mirror[field.ts] = checkValue(field, v, `${at}.${key}`);
  }
  if (mirror.host === "") throw new ConfigError(`Cannot load config key "${at}.host": a mirror needs a host`, `${at}.host`);
  return mirror as unknown as MirrorConfig;
}

function checkValue(field: FieldSpec, value: unknown, dotted: string): unknown {
  const bad = (why: string) => new ConfigError(`Cannot load config key "${dotted}": ${why}`, dotted);
  switch (field.kind) {
    case "bool":
      if (typeof value !== "boolean") throw bad(`expected true or false, got ${describe(value)}`);
      return value;
    case "int": {
      const n = typeof value === "bigint" ? Number(value) : value;
      if (typeof n !== "number" || !Number.isSafeInteger(n)) throw bad(`expected an integer, got ${describe(value)}`);
      if (field.min !== undefined && n < field.min) throw bad(`must be at least ${field.min}, got ${n}`);
      return n;
    }
    case "string":
      if (typeof value !== "string") throw bad(`expected a string, got ${describe(value)}`);
      return value;
    case "enum":
      if (typeof value !== "string" || !field.values!.includes(value)) {
        throw bad(`expected one of ${field.values!.map((v) => `"${v}"`).join(", ")}, got ${describe(value)}`);
      }
      return value;
  }
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
  for (const part of dotted.split(".")) node = (node[part] ??= {}) as Table;
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
    "# Per-registry settings: [resolver.host.\"<host>\"] with plain_http, ca_file, username, password, and",
    "# mirrors = [{ host = \"mirror:5000\", insecure = false, request_timeout_sec = 0 }] tried before the origin.",
  );
  for (const [host, hc] of Object.entries(config.resolver.host)) {
    lines.push(`[resolver.host.${JSON.stringify(host)}]`);
    const values = hc as unknown as Table;
    for (const f of HOST_FIELDS) lines.push(...renderField(f, values[f.ts]));
    const mirrors = hc.mirrors.map(
      (m) => `{ host = ${JSON.stringify(m.host)}, insecure = ${m.insecure}, request_timeout_sec = ${m.requestTimeoutSec} }`,
    );
    lines.push(`mirrors = [${mirrors.join(", ")}]`, "");
  }
  return lines.join("\n").trimEnd() + "\n";
}

function renderField(f: FieldSpec, value: unknown): string[] {
  const dflt = f.kind === "string" || f.kind === "enum" ? JSON.stringify(f.default) : String(f.default);
  const val = typeof value === "string" ? JSON.stringify(value) : String(value);
  return [`# ${f.doc} (default ${dflt})`, `${f.toml} = ${val}`];
}

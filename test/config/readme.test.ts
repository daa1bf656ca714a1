/**
 * What README.md says about the configuration holds: every `[table] key` it names is a key of SCHEMA (a value
 * given with it loads), every bare `key = value` it gives loads in the one table that has the key, every soci-ts
 * config file it shows (a TOML block starting `# /etc/soci-ts/config.toml`) loads, and the defaults it quotes
 * (`` `key` (default X) ``) are SCHEMA's.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { HOST_FIELDS, SCHEMA, type SectionSpec } from "../../src/config/defaults.ts";
import { parseConfig } from "../../src/config/load.ts";

const README = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
const sections: readonly SectionSpec[] = SCHEMA;

/** The TOML of `key = value` in `table`, loaded (throws the loader's ConfigError). */
function load(table: string, key: string, value: string): void {
  parseConfig(`${table ? `[${table}]\n` : ""}${key} = ${value}\n`, "README.md");
}

describe("README.md on the configuration", () => {
  test("every `[table] key` it names exists, and loads with the value it gives", () => {
    const refs = [...README.matchAll(/`\[([^\]`]+)\]\s+([A-Za-z_]+)(?:\s*=\s*([^`]+))?`/g)];
    expect(refs.length).toBeGreaterThan(10);
    for (const [text, table, key, value] of refs) {
      if (table!.startsWith("resolver.host.")) {
        expect([text, key === "mirrors" || HOST_FIELDS.some((f) => f.toml === key)]).toEqual([text, true]);
        continue;
      }
      const field = sections.find((s) => s.toml === table)?.fields.find((f) => f.toml === key);
      expect([text, field?.toml]).toEqual([text, key]);
      if (value !== undefined) expect(() => load(table!, key!, value.trim())).not.toThrow();
    }
  });

  test("every bare `key = value` of a soci-ts key loads in its table", () => {
    let found = 0;
    for (const [text, key, value] of README.matchAll(/`([a-z_]+) = ([^`]+)`/g)) {
      const tables = sections.filter((s) => s.fields.some((f) => f.toml === key));
      if (tables.length === 0) continue; // containerd's or podman's key, not ours
      found++;
      expect([text, tables.length]).toEqual([text, 1]);
      expect(() => load(tables[0]!.toml, key!, value!)).not.toThrow();
    }
    expect(found).toBeGreaterThan(1);
  });

  test("every soci-ts config file it shows loads", () => {
    const blocks = [...README.matchAll(/```toml\n(# \/etc\/soci-ts\/config\.toml\n[\s\S]*?)```/g)].map((m) => m[1]!);
    expect(blocks.length).toBeGreaterThan(1);
    for (const block of blocks) expect(() => parseConfig(block, "README.md")).not.toThrow();
  });

  test("the defaults it quotes are SCHEMA's", () => {
    const quoted = [...README.matchAll(/`(?:\[([^\]`]+)\]\s+)?([a-z_]+)` \(default `?([^`)]+)`?\)/g)];
    expect(quoted.length).toBeGreaterThan(1);
    for (const [text, table, key, dflt] of quoted) {
      const fields = sections.filter((s) => table === undefined || s.toml === table).flatMap((s) => s.fields);
      const field = fields.find((f) => f.toml === key);
      expect([text, String(field?.default)]).toEqual([text, dflt!]);
    }
  });
});

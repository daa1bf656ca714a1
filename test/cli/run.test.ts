import { describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig } from "../../src/config/load.ts";
import { extractGlobalFlags, UsageError } from "../../src/cli/run.ts";
import { runCli } from "../_harness/cli.ts";
import type { ArgsDef, CommandDef } from "citty";
import { rootCommand } from "../../src/cli/commands.ts";
import pkg from "../../package.json" with { type: "json" };

describe("extractGlobalFlags()", () => {
  test("takes global flags wherever they stand", () => {
    const a = extractGlobalFlags(["--root", "R", "index", "list", "--json"]);
    const b = extractGlobalFlags(["index", "list", "--root=R", "--json"]);
    expect(a).toEqual(b);
    expect(a.flags.root).toBe("R");
    expect(a.rest).toEqual(["index", "list", "--json"]);
  });
  test("refuses a missing or bad value", () => {
    expect(() => extractGlobalFlags(["--root"])).toThrow(UsageError);
    expect(() => extractGlobalFlags(["--log-level", "loud"])).toThrow(UsageError);
    expect(() => extractGlobalFlags(["--log-format=xml"])).toThrow(UsageError);
  });
  test("leaves everything after -- alone", () => {
    expect(extractGlobalFlags(["x", "--", "--root", "R"]).rest).toEqual(["x", "--", "--root", "R"]);
  });
});

describe("soci-ts CLI", () => {
  test("--version prints the package version", () => {
    const r = runCli(["--version"]);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(`soci-ts ${pkg.version}`);
  });

  test("the hidden fd-holder command is runnable but not listed", () => {
    expect(runCli(["--help"]).stdout).not.toContain("fd-holder");
    const r = runCli(["fd-holder", "--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("--orphan-timeout-sec");
  });

  test("--help works on the root and on every command, with the global options; a noun's lists its verbs", async () => {
    const tree = await commandTree();
    expect(tree.length).toBeGreaterThan(3);
    for (const { path, subs } of tree) {
      const r = runCli([...path, "--help"]);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("USAGE");
      expect(r.stdout).toContain("--log-format");
      for (const [name, description] of subs) {
        expect(r.stdout).toContain(name);
        expect(r.stdout).toContain(description);
      }
    }
    const r = runCli(["--root", "/x", "config", "default", "-h"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("USAGE");
  }, 120_000); // One process per command (about 30), one after another: seconds each on a loaded machine.

  test("the tree's verb descriptions are those of the command files (<noun>_<verb>.ts)", async () => {
    const verbs = (await commandTree()).filter((c) => c.subs.length === 0);
    expect(verbs.length).toBeGreaterThan(10);
    for (const { path, cmd } of verbs) {
      const file = `../../src/cli/${path.join("_").replaceAll("-", "_")}.ts`;
      const loaded = ((await import(file)) as { default: CommandDef<ArgsDef> }).default;
      expect({ path, meta: cmd.meta }).toEqual({ path, meta: loaded.meta });
    }
  });

  test("usage errors exit 2 and name the problem", () => {
    const unknownCmd = runCli(["frobnicate"]);
    expect(unknownCmd.code).toBe(2);
    expect(unknownCmd.stderr).toContain('Unknown command "frobnicate"');
    const unknownFlag = runCli(["config", "dump", "--frob"]);
    expect(unknownFlag.code).toBe(2);
    expect(unknownFlag.stderr).toContain('Unknown option "--frob"');
    expect(runCli(["--log-level", "loud", "config", "dump"]).code).toBe(2);
  });

  test("config default prints TOML that parses back", () => {
    const r = runCli(["config", "default"]);
    expect(r.code).toBe(0);
    expect(() => parseConfig(r.stdout)).not.toThrow();
    expect(r.stdout).toContain("[background_fetch]");
  });

  test("config dump shows the file's values, from --config or SOCI_TS_CONFIG, before or after the command", () => {
    const dir = mkdtempSync(join(tmpdir(), "soci-ts-cli-"));
    const file = join(dir, "config.toml");
    writeFileSync(file, "[index]\nspan_size = 1048576\n");
    const a = runCli(["--config", file, "config", "dump", "--json"]);
    const b = runCli(["config", "dump", "--json", "--config", file]);
    const c = runCli(["config", "dump", "--json"], { env: { SOCI_TS_CONFIG: file } });
    for (const r of [a, b, c]) {
      expect(r.code).toBe(0);
      const dump = JSON.parse(r.stdout);
      expect(dump.config.index.spanSize).toBe(1048576);
      expect(dump.configPath).toBe(file);
    }
    const withRoot = JSON.parse(runCli(["config", "dump", "--json", "--root", dir]).stdout);
    expect(withRoot.root).toBe(dir);
  });

  test("config dump never prints a configured password, as TOML or JSON", () => {
    const dir = mkdtempSync(join(tmpdir(), "soci-ts-cli-"));
    const file = join(dir, "config.toml");
    writeFileSync(file, '[resolver.host."registry.example"]\nusername = "alice"\npassword = "hunter2-secret"\n');
    const toml = runCli(["--config", file, "config", "dump"]);
    const json = runCli(["--config", file, "config", "dump", "--json"]);
    for (const r of [toml, json]) {
      expect(r.code).toBe(0);
      expect(r.stdout).not.toContain("hunter2-secret");
      expect(r.stdout).toContain("<redacted>");
      expect(r.stdout).toContain("alice");
    }
  });

  test("a failing command exits 1 with its error on stderr, as text or as a JSON line", () => {
    const root = mkdtempSync(join(tmpdir(), "soci-ts-cli-"));
    const digest = `sha256:${"0".repeat(64)}`;
    const text = runCli(["--root", root, "index", "info", digest]);
    expect(text.code).toBe(1);
    expect(text.stderr).toContain(`Cannot find SOCI index "${digest}"`);
    const json = runCli(["--root", root, "--log-format", "json", "index", "info", digest]);
    expect(json.code).toBe(1);
    const line = JSON.parse(json.stderr.trim().split("\n").pop()!);
    expect(line.level).toBe("error");
    expect(line.msg).toContain(digest);
  });

  test("a bad config file fails with exit 1 and names the key", () => {
    const dir = mkdtempSync(join(tmpdir(), "soci-ts-cli-"));
    const file = join(dir, "config.toml");
    writeFileSync(file, "[fuse]\nattr_timeout = true\n");
    const r = runCli(["--config", file, "config", "dump"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("fuse.attr_timeout");
    const missing = runCli(["--config", join(dir, "nope.toml"), "config", "dump"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("nope.toml");
  });
});

/** Every command of the tree, root first, with the names and descriptions of its subcommands. */
async function commandTree(): Promise<
  Array<{ path: string[]; cmd: CommandDef<ArgsDef>; subs: Array<[string, string]> }>
> {
  const out: Array<{ path: string[]; cmd: CommandDef<ArgsDef>; subs: Array<[string, string]> }> = [];
  async function walk(cmd: CommandDef<ArgsDef>, path: string[]): Promise<void> {
    const entry = { path, cmd, subs: [] as Array<[string, string]> };
    out.push(entry);
    const subs = typeof cmd.subCommands === "function" ? await cmd.subCommands() : await cmd.subCommands;
    for (const [name, sub] of Object.entries(subs ?? {})) {
      const def = (
        typeof sub === "function" ? await (sub as () => Promise<CommandDef<ArgsDef>>)() : await sub
      ) as CommandDef<ArgsDef>;
      const meta = def.meta as { description?: string; hidden?: boolean } | undefined;
      // A hidden command (fd-holder, started by serve) is left out of its parent's help listing.
      if (!meta?.hidden) entry.subs.push([name, String(meta?.description)]);
      await walk(def, [...path, name]);
    }
  }
  await walk(rootCommand, []);
  return out;
}

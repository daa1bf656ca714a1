/** `soci-ts mount` removes its work dir (<root>/mounts/<pid>) when it fails before mounting anything. */
import { afterAll, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCli } from "../_harness/cli.ts";

const dir = mkdtempSync(join(tmpdir(), "soci-cli-mount-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test("a layer file system that cannot be opened (span cache dir under a file) leaves no work dir", () => {
  const root = join(dir, "root");
  const mp = join(dir, "mnt");
  mkdirSync(mp);
  writeFileSync(join(dir, "file"), "");
  const config = join(dir, "config.toml");
  writeFileSync(config, `[span_cache]\ndir = "${join(dir, "file", "cache")}"\n`);
  const r = runCli(["--root", root, "--config", config, "mount", "127.0.0.1:1/app:v1", mp]);
  expect(r.code).toBe(1);
  expect(existsSync(join(root, "mounts")) ? readdirSync(join(root, "mounts")) : []).toEqual([]);
});

test("a missing [resolver.host] ca_file leaves no work dir either", () => {
  const root = join(dir, "root2");
  const mp = join(dir, "mnt2");
  mkdirSync(mp);
  const config = join(dir, "config2.toml");
  writeFileSync(config, `[resolver.host."127.0.0.1:1"]\nca_file = "${join(dir, "no-such-ca.pem")}"\n`);
  const r = runCli(["--root", root, "--config", config, "mount", "127.0.0.1:1/app:v1", mp]);
  expect(r.code).toBe(1);
  expect(r.stderr).toContain(`Cannot read CA file "${join(dir, "no-such-ca.pem")}" for "127.0.0.1:1"`);
  expect(existsSync(join(root, "mounts")) ? readdirSync(join(root, "mounts")) : []).toEqual([]);
});

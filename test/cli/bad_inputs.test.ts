/**
 * Hostile inputs to the CLI: each is refused with one line naming the file, flag or key and what is wrong,
 * exit 1 (failure) or 2 (usage), never a hang or a raw Node error (ENOTDIR, EISDIR, ...).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type CliResult, runCli } from "../_harness/cli.ts";
import { compressLayer, writeImage, writeTar } from "../soci/_layers.ts";

let dir: string;
let file: string;
let image: string;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "soci-cli-bad-"));
  file = join(dir, "a-file");
  writeFileSync(file, "not a directory\n");
  await writeImage(join(dir, "img"), "v1", [compressLayer(writeTar([{ name: "etc/hello", data: "hi\n" }]), "gzip")]);
  image = `oci:${join(dir, "img")}:v1`;
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Bounded: a hang shows as code -1 (killed at the timeout), not as a stuck test. */
const cli = (args: string[], env: Record<string, string> = {}) => runCli(args, { env, timeoutMs: 30_000 });

/** Exit `code`, stderr holds `text` in its one line (beside citty's "Run ... --help" hint for usage errors). */
function expectRefused(r: CliResult, code: 1 | 2, text: string): void {
  expect(r.stderr).toContain(text);
  expect(r.code).toBe(code);
  const lines = r.stderr.split("\n").filter((l) => l.trim() !== "" && !l.startsWith('Run "'));
  expect(lines).toHaveLength(1);
  expect(r.stderr).not.toMatch(/\bE[A-Z]{3,}: /);
}

describe("config files that are not config files", () => {
  test("an endless device (SOCI_TS_CONFIG=/dev/zero) is refused at once, as too big", () => {
    expectRefused(
      cli(["config", "dump"], { SOCI_TS_CONFIG: "/dev/zero" }),
      1,
      'Cannot read config file "/dev/zero": over the limit of 1048576 bytes',
    );
    // /dev/null stays the empty config
    const empty = cli(["config", "dump", "--json"], { SOCI_TS_CONFIG: "/dev/null" });
    expect(empty.code).toBe(0);
    expect(JSON.parse(empty.stdout).configPath).toBe("/dev/null");
  });

  test("a FIFO without a writer is refused, not waited on", () => {
    const fifo = join(dir, "fifo");
    expect(spawnSync("mkfifo", [fifo]).status).toBe(0);
    expectRefused(
      cli(["--config", fifo, "config", "dump"]),
      1,
      `Cannot read config file "${fifo}": not a regular file`,
    );
  });

  test("a file over 1 MiB is refused", () => {
    const big = join(dir, "big.toml");
    writeFileSync(big, "#".repeat(2 << 20));
    expectRefused(
      cli(["--config", big, "config", "dump"]),
      1,
      `Cannot read config file "${big}": 2097152 bytes, over the limit of 1048576`,
    );
  });

  test("a directory names the path", () => {
    expectRefused(cli(["--config", dir, "config", "dump"]), 1, `Cannot read config file "${dir}": is a directory`);
  });

  test("a value past its key's bounds names the key, the file and the bound", () => {
    const c = join(dir, "retries.toml");
    writeFileSync(c, "[http]\nMaxRetries = 1e9\n");
    expectRefused(
      cli(["--config", c, "config", "dump"]),
      1,
      `Cannot load config key "http.MaxRetries" from "${c}": 1000000000 is over its maximum 100`,
    );
    writeFileSync(c, "[http]\nMaxRetries = 99999999999999999999\n");
    expectRefused(
      cli(["--config", c, "config", "dump"]),
      1,
      `Cannot parse config "${c}": integer value cannot be represented losslessly (line 2: "MaxRetries = 99999999999999999999")`,
    );
  });
});

describe("paths that are files where directories belong", () => {
  test("index create oci:FILE says the layout is not a directory", () => {
    expectRefused(
      cli(["--root", join(dir, "root"), "index", "create", `oci:${file}`]),
      1,
      `Cannot open OCI layout "${file}": not a directory`,
    );
    expectRefused(
      cli(["--root", join(dir, "root"), "index", "create", `oci:${file}/sub:v1`]),
      1,
      `Cannot open OCI layout "${file}/sub": not a directory`,
    );
    mkdirSync(join(dir, "odd", "index.json"), { recursive: true });
    expectRefused(
      cli(["--root", join(dir, "root"), "index", "create", `oci:${join(dir, "odd")}`]),
      1,
      `Cannot open OCI layout "${join(dir, "odd")}": index.json is a directory`,
    );
  });

  test("a --root that is a file is refused by every command that uses it, naming it and the flag", () => {
    const refused = `Cannot use state root "${file}" (--root): not a directory`;
    for (const args of [
      ["index", "list"],
      ["index", "create", image, "--min-layer-size", "0"],
      ["index", "rebuild-db"],
      ["index", "info", `sha256:${"0".repeat(64)}`],
      ["index", "rm", `sha256:${"0".repeat(64)}`],
      ["ztoc", "list"],
      ["convert", image, `oci:${join(dir, "out")}:v1`],
      ["mount", "localhost:1/x:y", dir],
    ]) {
      expectRefused(cli(["--root", file, ...args]), 2, refused);
    }
    expectRefused(
      cli(["index", "list"], { SOCI_TS_ROOT: join(file, "below") }),
      2,
      `Cannot use state root "${join(file, "below")}" ($SOCI_TS_ROOT): a parent is not a directory`,
    );
    expectRefused(cli(["--root", "", "index", "list"]), 2, 'Cannot use state root "" (--root): empty path');
    // an empty $SOCI_TS_ROOT is unset (the default), not the current directory
    expect(JSON.parse(cli(["config", "dump", "--json"], { SOCI_TS_ROOT: "" }).stdout).root).toBe("/var/lib/soci-ts");
    // config dump still shows it (it uses no state)
    expect(cli(["--root", file, "config", "dump"]).code).toBe(0);
  }, 60_000);
});

describe("numeric flags", () => {
  const root = () => join(dir, "root-flags");

  test("sizes are bounded and echoed as typed", () => {
    for (const [flag, value, range] of [
      ["--span-size", "99999999999999999999", "from 4KiB to 1GiB"],
      ["--span-size", "1", "from 4KiB to 1GiB"],
      ["--span-size", "2GiB", "from 4KiB to 1GiB"],
      ["--min-layer-size", "99999999999999999999", "from 0 to 1TiB"],
      ["--min-layer-size", "2048G", "from 0 to 1TiB"],
    ] as const) {
      for (const cmd of [
        ["index", "create", image],
        ["convert", image, `oci:${join(dir, "out")}:v1`],
      ]) {
        expectRefused(
          cli(["--root", root(), ...cmd, flag, value]),
          2,
          `Option "${flag}" must be a size ${range}, got "${value}"`,
        );
      }
    }
    // the bounds themselves are accepted
    const ok = cli(["--root", root(), "index", "create", image, "--min-layer-size", "0", "--span-size", "4KiB"]);
    expect(ok.stderr).toBe("");
    expect(ok.code).toBe(0);
  }, 60_000);

  test("mount --readahead-spans is bounded and echoed as typed", () => {
    for (const value of ["99999999999999999999", "1e3", "257", "-1", "0x10"]) {
      expectRefused(
        cli(["--root", root(), "mount", "localhost:1/x:y", dir, "--readahead-spans", value]),
        2,
        `Option --readahead-spans "${value}" is not an integer from 0 to 256`,
      );
    }
  }, 60_000);
});

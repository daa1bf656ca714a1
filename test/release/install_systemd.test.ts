/**
 * `release/install.sh --systemd` into a DESTDIR (a root of its own, as an image build or a package's staging tree
 * uses): the unit (ExecStart at the binary installed, --config at the config dir) and a default config.toml are
 * installed, an existing config is kept, and the unit is enabled with `systemctl --root=DESTDIR enable`. There is
 * no systemd on the test machines, so `systemctl` is a fake on PATH that records its arguments (fault-injection
 * style: a stand-in for a system tool absent here). The release served (file://) is the repository's unit and,
 * as the binary, a two-line script that runs soci-ts from source: what install.sh does with it (check its sum,
 * install it, run `--version` and `config default`) is the same as with a compiled one (release.test.ts installs
 * that).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { BUN, MAIN, REPO } from "../_harness/cli.ts";

const work = mkdtempSync(join(tmpdir(), "soci-ts-install-systemd-"));
const release = join(work, "release");
const fakeBin = join(work, "bin");
const calls = join(work, "systemctl.calls");
const UNIT = readFileSync(join(REPO, "release/soci-ts.service"), "utf8");
const ARCH = process.arch === "arm64" ? "arm64" : "x64";

beforeAll(() => {
  mkdirSync(release);
  const name = `soci-ts-linux-${ARCH}`;
  writeFileSync(join(release, name), `#!/bin/sh\nexec ${BUN} ${MAIN} "$@"\n`);
  chmodSync(join(release, name), 0o755);
  const sum = createHash("sha256")
    .update(readFileSync(join(release, name)))
    .digest("hex");
  writeFileSync(join(release, "SHA256SUMS"), `${sum}  ${name}\n`);
  copyFileSync(join(REPO, "release/soci-ts.service"), join(release, "soci-ts.service"));
  mkdirSync(fakeBin);
  writeFileSync(join(fakeBin, "systemctl"), `#!/bin/sh\necho "$*" >> ${calls}\n`);
  chmodSync(join(fakeBin, "systemctl"), 0o755);
});

afterAll(() => rmSync(work, { recursive: true, force: true }));

function install(destdir: string, env: Record<string, string> = {}) {
  return spawnSync("sh", [join(REPO, "release/install.sh"), "--systemd", `file://${release}`], {
    env: { PATH: `${fakeBin}:${process.env.PATH ?? ""}`, DESTDIR: destdir, ...env },
    encoding: "utf8",
    timeout: 120_000,
  });
}

const systemctlCalls = () => (existsSync(calls) ? readFileSync(calls, "utf8").trim().split("\n") : []);

describe("install.sh --systemd with DESTDIR", () => {
  test("installs the unit, the binary and a default config under DESTDIR, and enables the unit there", () => {
    const dest = join(work, "root1");
    rmSync(calls, { force: true });
    const r = install(dest);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    // The unit as released: its paths are the target's defaults, which the install used.
    expect(readFileSync(join(dest, "etc/systemd/system/soci-ts.service"), "utf8")).toBe(UNIT);
    expect(UNIT).toContain("ExecStart=/usr/local/bin/soci-ts --config /etc/soci-ts/config.toml");
    expect(existsSync(join(dest, "usr/local/bin/soci-ts"))).toBe(true);
    const defaults = spawnSync(BUN, [MAIN, "config", "default"], { encoding: "utf8" });
    expect(defaults.status).toBe(0);
    expect(readFileSync(join(dest, "etc/soci-ts/config.toml"), "utf8")).toBe(defaults.stdout);
    expect(systemctlCalls()).toEqual([`--root=${dest} enable soci-ts.service`]);
    expect(r.stdout).toContain(`Enabled soci-ts.service under ${dest}`);
  }, 60_000);

  test("an existing config is kept; PREFIX and CONFIG_DIR go into the unit", () => {
    const dest = join(work, "root2");
    mkdirSync(join(dest, "etc/soci-alt"), { recursive: true });
    writeFileSync(join(dest, "etc/soci-alt/config.toml"), "# the operator's own\n");
    rmSync(calls, { force: true });
    const r = install(dest, { PREFIX: "/opt/soci", CONFIG_DIR: "/etc/soci-alt" });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("Kept the existing");
    expect(readFileSync(join(dest, "etc/soci-alt/config.toml"), "utf8")).toBe("# the operator's own\n");
    expect(existsSync(join(dest, "opt/soci/bin/soci-ts"))).toBe(true);
    const unit = readFileSync(join(dest, "etc/systemd/system/soci-ts.service"), "utf8");
    expect(unit).toContain(
      "ExecStart=/opt/soci/bin/soci-ts --config /etc/soci-alt/config.toml --log-format json serve",
    );
    expect(unit.replace("/opt/soci/bin/", "/usr/local/bin/").replace("/etc/soci-alt/", "/etc/soci-ts/")).toBe(UNIT);
    expect(systemctlCalls()).toEqual([`--root=${dest} enable soci-ts.service`]);
  }, 60_000);

  test("a second install keeps the config it wrote the first time, and enables again", () => {
    const dest = join(work, "root3");
    expect(install(dest).status).toBe(0);
    writeFileSync(join(dest, "etc/soci-ts/config.toml"), "# edited\n");
    rmSync(calls, { force: true });
    const r = install(dest);
    expect(r.status).toBe(0);
    expect(readFileSync(join(dest, "etc/soci-ts/config.toml"), "utf8")).toBe("# edited\n");
    expect(systemctlCalls()).toEqual([`--root=${dest} enable soci-ts.service`]);
  }, 60_000);
});

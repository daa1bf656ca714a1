/**
 * .ci/install-packages, the installer `.ci/run` and `npm run demo` share: which packages it takes for missing
 * (dpkg's own answer), whether it updates apt's lists first (only when they lack a missing package), the exact
 * commands it would run (--dry-run), what it tells a non-root user to run, and its usage errors. Nothing is
 * installed: the packages missing here are made up, or known to apt and not installed.
 */
import { describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { needs } from "../_harness/env.ts";

const SCRIPT = join(import.meta.dir, "..", "..", ".ci", "install-packages");
const run = needs("install-packages", "tool:bash", "tool:dpkg-query", "tool:apt-cache", "tool:setpriv");
/** Group "demo": what `npm run demo` needs (registry, image tools, containerd and runc, openssl for TLS). */
const DEMO = ["docker-registry", "skopeo", "umoci", "debootstrap", "containerd", "runc", "openssl"];
/** A name no Debian release has. */
const MADE_UP = "soci-ts-test-no-such-package";
const INSTALL =
  "would run: DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300";

function script(args: string[], opts: { asNobody?: boolean; env?: Record<string, string> } = {}) {
  const argv = ["bash", SCRIPT, ...args];
  const nobody = opts.asNobody && process.getuid?.() === 0;
  const r = spawnSync(
    nobody ? "setpriv" : argv[0]!,
    nobody ? ["--reuid=65534", "--regid=65534", "--clear-groups", ...argv] : argv.slice(1),
    { encoding: "utf8", env: { ...process.env, ...opts.env }, timeout: 60_000 },
  );
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const installed = (p: string) =>
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's --showformat field, not a template
  spawnSync("dpkg-query", ["-W", "-f=${Status}", p], { encoding: "utf8" }).stdout === "install ok installed";
/** Those of `ps` apt's lists have a candidate for (one apt-cache run: each may take seconds). */
function known(ps: string[]): string[] {
  const out = spawnSync("apt-cache", ["policy", ...ps], { encoding: "utf8" }).stdout;
  return ps.filter((p) => new RegExp(`^${p}:\\n(?:  .*\\n)*?  Candidate: [^(]`, "m").test(out));
}

/** dpkg-query and apt-cache take a second or more each on a busy machine. */
const TIMEOUT_MS = 60_000;

describe.skipIf(!run)(".ci/install-packages", () => {
  test(
    "--list: the demo's packages, all among CI's, none twice",
    () => {
      const demo = script(["--list", "demo"]).stdout.trim().split("\n");
      const ci = script(["--list", "ci"]).stdout.trim().split("\n");
      expect(demo).toEqual(DEMO);
      for (const p of [...demo, "podman", "fuse3", "pigz", "libcap2-bin", "busybox-static"])
        expect([p, ci.includes(p)]).toEqual([p, true]);
      expect(new Set(ci).size).toBe(ci.length);
    },
    TIMEOUT_MS,
  );

  test(
    "--dry-run demo: missing are exactly the packages dpkg does not have installed",
    () => {
      const r = script(["--dry-run", "demo"]);
      expect(r.code).toBe(0);
      const missing = DEMO.filter((p) => !installed(p));
      if (missing.length === 0) expect(r.stdout).toBe("install-packages: nothing to install\n");
      else expect(r.stdout).toContain(`install-packages: missing ${missing.join(" ")}\n${""}`);
    },
    TIMEOUT_MS,
  );

  test(
    "a package apt's lists lack: apt-get update first, then one install of every missing package",
    () => {
      const r = script(["--dry-run", "skopeo", MADE_UP, "demo", MADE_UP]);
      expect(r.code).toBe(0);
      const missing = ["skopeo", MADE_UP, ...DEMO.filter((p) => p !== "skopeo")].filter((p) => !installed(p));
      expect(r.stdout).toBe(
        `install-packages: missing ${missing.join(" ")}\nwould run: apt-get update -qq\n${INSTALL} ${missing.join(" ")}\n`,
      );
    },
    TIMEOUT_MS,
  );

  test(
    "packages apt's lists know: no apt-get update",
    () => {
      const candidates = known(["hello", "sl", "cowsay", "figlet", "fortune-mod"].filter((p) => !installed(p)));
      if (candidates.length === 0) {
        console.warn("install-packages: apt's lists know none of the candidate packages here; case not checked");
        return;
      }
      const r = script(["--dry-run", ...candidates]);
      expect(r.stdout).toBe(`install-packages: missing ${candidates.join(" ")}\n${INSTALL} ${candidates.join(" ")}\n`);
    },
    TIMEOUT_MS,
  );

  test(
    "not root: nothing installed, the commands to run as root, exit 1",
    () => {
      if (process.getuid?.() !== 0 && !installed("skopeo")) return; // would print more than the made-up one
      const r = script(["skopeo", MADE_UP], { asNobody: true });
      expect(r.code).toBe(1);
      expect(r.stdout).toBe("");
      expect(r.stderr).toBe(
        `install-packages: Cannot install ${MADE_UP}: not root. Run as root:\n  apt-get update\n  apt-get install -y --no-install-recommends ${MADE_UP}\n`,
      );
    },
    TIMEOUT_MS,
  );

  test(
    "not a Debian system: says so, exit 1",
    () => {
      const r = spawnSync("/bin/bash", [SCRIPT, "demo"], { encoding: "utf8", env: { PATH: "/nonexistent" } });
      expect(r.status).toBe(1);
      expect(r.stderr).toContain("not a Debian system (no dpkg-query or apt-get)");
    },
    TIMEOUT_MS,
  );

  test(
    "usage errors exit 2",
    () => {
      for (const args of [[], ["--dry-run"], ["--bogus", "demo"], ["--list", "nosuchgroup"]]) {
        const r = script(args);
        expect([args, r.code]).toEqual([args, 2]);
        expect(r.stderr).toContain("usage: bash .ci/install-packages");
      }
    },
    TIMEOUT_MS,
  );
});

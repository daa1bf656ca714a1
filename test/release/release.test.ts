/**
 * The release: `bun build --compile` binaries and release/install.sh, exercised as a user would: the binary is run
 * from a directory outside the repository, and the installer from a file:// and an http:// URL into a temp prefix.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import {
  appendFileSync,
  copyFileSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  closeSync,
  rmSync,
  existsSync,
  mkdirSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pkg from "../../package.json" with { type: "json" };
import { BUN, REPO } from "../_harness/cli.ts";
import { Rand } from "../_harness/rand.ts";
import { compressLayer, writeImage, writeTar } from "../soci/_layers.ts";
import { sha256Digest } from "../../src/util/digest.ts";
import { INFLATE_THREAD_MIN_LAYER_BYTES } from "../../src/soci/builder.ts";
import { buildZtoc } from "../../src/ztoc/builder.ts";

const work = mkdtempSync(join(tmpdir(), "soci-ts-release-"));
const dist = join(work, "dist");
const outside = join(work, "elsewhere");

/** ELF e_machine of a file: 0x3e x86-64, 0xb7 aarch64. */
function elfMachine(path: string): number {
  const fd = openSync(path, "r");
  const buf = Buffer.alloc(20);
  readSync(fd, buf, 0, 20, 0);
  closeSync(fd);
  expect(buf.subarray(0, 4).toString("latin1")).toBe("\x7fELF");
  return buf.readUInt16LE(18);
}

function sh(script: string, args: string[], env: Record<string, string>) {
  return spawnSync("sh", [script, ...args], {
    env: { PATH: process.env.PATH ?? "", ...env },
    encoding: "utf8",
    timeout: 120_000,
  });
}

beforeAll(() => {
  const r = spawnSync(BUN, ["run", join(REPO, "release/build.ts"), "--out", dist], {
    encoding: "utf8",
    timeout: 300_000,
  });
  if (r.status !== 0) throw new Error(`release build failed: ${r.stderr}${r.stdout}`);
  mkdirSync(outside);
}, 300_000);

afterAll(() => rmSync(work, { recursive: true, force: true }));

/** A liveness bound for checking the binaries' sums (reading ~300 MB, no clock): 15.5 s at load 19. */
const SUMS_LIMIT_MS = 120_000;

describe("npm run release", () => {
  test(
    "builds x64 and arm64 binaries with their sums",
    () => {
      const sums = readFileSync(join(dist, "SHA256SUMS"), "utf8");
      for (const name of ["soci-ts-linux-x64", "soci-ts-linux-arm64"]) expect(sums).toContain(`  ${name}\n`);
      expect(elfMachine(join(dist, "soci-ts-linux-x64"))).toBe(0x3e);
      expect(elfMachine(join(dist, "soci-ts-linux-arm64"))).toBe(0xb7);
      if (existsSync(join(dist, "soci-ts-linux-arm64-musl")))
        expect(elfMachine(join(dist, "soci-ts-linux-arm64-musl"))).toBe(0xb7);
      const check = spawnSync("sha256sum", ["-c", "SHA256SUMS"], { cwd: dist, encoding: "utf8" });
      expect(check.status).toBe(0);
    },
    SUMS_LIMIT_MS,
  );

  test("the x64 binary runs from outside the repository", () => {
    const bin = join(outside, "soci-ts");
    copyFileSync(join(dist, "soci-ts-linux-x64"), bin);
    spawnSync("chmod", ["+x", bin]);
    const version = spawnSync(bin, ["--version"], { cwd: outside, encoding: "utf8", env: { PATH: "/usr/bin:/bin" } });
    expect(version.status).toBe(0);
    expect(version.stdout.trim()).toBe(`soci-ts ${pkg.version}`);
    const help = spawnSync(bin, ["config", "--help"], {
      cwd: outside,
      encoding: "utf8",
      env: { PATH: "/usr/bin:/bin" },
    });
    expect(help.status).toBe(0);
    expect(help.stdout).toContain("default");
    const bad = spawnSync(bin, ["nope"], { cwd: outside, encoding: "utf8" });
    expect(bad.status).toBe(2);
  });
});

describe("the compiled binary's inflate thread", () => {
  test("index create of a gzip layer big enough for the inflate thread gives the zTOC the library builds", async () => {
    // One 17 MiB gzip layer (random bytes compress to about their size), over INFLATE_THREAD_MIN_LAYER_BYTES.
    const layer = compressLayer(
      writeTar([{ name: "big.bin", data: new Rand("release inflate thread").bytes(17 << 20) }]),
      "gzip",
    );
    expect(layer.blob.length).toBeGreaterThanOrEqual(INFLATE_THREAD_MIN_LAYER_BYTES);
    const img = join(work, "img");
    await writeImage(img, "v1", [layer]);
    const bin = join(outside, "soci-ts-index");
    copyFileSync(join(dist, "soci-ts-linux-x64"), bin);
    spawnSync("chmod", ["+x", bin]);
    const root = join(work, "root");
    // The span size named on both sides (the config's default is not the library's).
    const spanSizeBytes = 1 << 20;
    const created = spawnSync(
      bin,
      [
        "--root",
        root,
        "index",
        "create",
        `oci:${img}:v1`,
        "--min-layer-size",
        "0",
        "--span-size",
        String(spanSizeBytes),
      ],
      { cwd: outside, encoding: "utf8", timeout: 120_000 },
    );
    expect(created.stderr).toBe("");
    expect(created.status).toBe(0);
    const listed = spawnSync(bin, ["--root", root, "ztoc", "list", "--quiet"], { cwd: outside, encoding: "utf8" });
    // The config's default build tool identifier is the zTOC builder's default.
    const expected = await buildZtoc(new Blob([layer.blob as Uint8Array<ArrayBuffer>]).stream(), {
      algorithm: "gzip",
      spanSizeBytes,
    });
    expect(listed.stdout.trim()).toBe(sha256Digest(expected.bytes));
  }, 180_000);
});

describe("release/install.sh", () => {
  test("installs from a file:// URL into $PREFIX", () => {
    const prefix = join(work, "prefix-file");
    const r = sh(join(dist, "install.sh"), [`file://${dist}`], { PREFIX: prefix });
    expect(r.stderr + r.stdout).toContain("Installed soci-ts");
    expect(r.status).toBe(0);
    const v = spawnSync(join(prefix, "bin", "soci-ts"), ["--version"], { encoding: "utf8" });
    expect(v.stdout.trim()).toBe(`soci-ts ${pkg.version}`);
  });

  test("installs from an http:// URL given in SOCI_TS_BASE_URL, piped to sh", async () => {
    const server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch(req) {
        const name = new URL(req.url).pathname.split("/").pop()!;
        const file = join(dist, name);
        return existsSync(file) ? new Response(Bun.file(file)) : new Response("not found", { status: 404 });
      },
    });
    try {
      const prefix = join(work, "prefix-http");
      const base = `http://127.0.0.1:${server.port}/release`;
      const proc = Bun.spawn(["sh", "-c", `curl -fsSL ${base}/install.sh | sh`], {
        env: { PATH: process.env.PATH ?? "", PREFIX: prefix, SOCI_TS_BASE_URL: base },
        stdout: "pipe",
        stderr: "pipe",
      });
      const code = await proc.exited;
      expect(code).toBe(0);
      expect(existsSync(join(prefix, "bin", "soci-ts"))).toBe(true);
    } finally {
      server.stop(true);
    }
  });

  test("refuses a binary whose checksum does not match, installing nothing", () => {
    const bad = join(work, "tampered");
    mkdirSync(bad);
    for (const f of ["SHA256SUMS", "install.sh", "soci-ts-linux-x64", "soci-ts-linux-arm64"])
      copyFileSync(join(dist, f), join(bad, f));
    appendFileSync(join(bad, "soci-ts-linux-x64"), "tampered");
    appendFileSync(join(bad, "soci-ts-linux-arm64"), "tampered");
    const prefix = join(work, "prefix-bad");
    const r = sh(join(bad, "install.sh"), [`file://${bad}`], { PREFIX: prefix });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("checksum mismatch");
    expect(existsSync(join(prefix, "bin", "soci-ts"))).toBe(false);
  });

  test("says what is missing without a release URL", () => {
    const r = sh(join(REPO, "release/install.sh"), [], { PREFIX: join(work, "prefix-none") });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("no release URL");
  });
});

/**
 * The index, ztoc and convert commands as users run them (a child process), on generated images in OCI
 * layouts: no registry needed (the registry flows are in test/e2e/index_python.test.ts).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ImageIndex, Manifest } from "../../src/oci/types.ts";
import { SOCI_INDEX_V1_ARTIFACT_TYPE, SOCI_INDEX_V2_ARTIFACT_TYPE } from "../../src/soci/index.ts";
import { runCli } from "../_harness/cli.ts";
import { compressLayer, generateEntries, regularFiles, writeImage, writeTar } from "../soci/_layers.ts";

let dir: string;
let root: string;
let image: string;
let files: Map<string, Uint8Array>;
let smallLayerDigest: string;
const cli = (...args: string[]) => runCli(["--root", root, ...args], { timeoutMs: 120_000 });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "soci-cli-index-"));
  root = join(dir, "root");
  const entries = generateEntries("cli-big", 80);
  files = regularFiles(entries);
  const big = compressLayer(writeTar(entries), "gzip");
  const small = compressLayer(writeTar([{ name: "etc/hello", data: "hi\n" }]), "gzip");
  const { manifest } = await writeImage(join(dir, "img"), "v1", [big, small]);
  smallLayerDigest = manifest.layers[1]!.digest;
  image = `oci:${join(dir, "img")}:v1`;
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/**
 * A liveness bound for the tests that run a dozen CLI processes one after another (each one starts Bun and indexes
 * or reads a generated image): nothing waits on a clock. One took 18.7 s at load 19 on two cores and ran past the
 * 20 s default with a busy loop beside it.
 */
const COMMANDS_LIMIT_MS = 120_000;

describe("soci-ts index", () => {
  test("create with the default minimum layer size refuses an image of small layers (exit 1)", () => {
    const r = cli("index", "create", image);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
  });

  test("bad flags are usage errors (exit 2) naming the option", () => {
    const r = cli("index", "create", image, "--span-size", "lots");
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Option "--span-size" must be a size in bytes');
    expect(cli("index", "create", image, "--platform", "linux").code).toBe(2);
    expect(cli("index", "create").code).not.toBe(0);
  });

  test(
    "create --min-layer-size 0 indexes every layer; list, info, ztoc list/info/get-file, rm, rebuild-db",
    () => {
      // create
      const created = cli("index", "create", image, "--min-layer-size", "0", "--span-size", "64KiB", "--json");
      expect(created.code).toBe(0);
      const [c] = JSON.parse(created.stdout);
      expect(c.ztocs).toHaveLength(2);
      expect(c.ztocs[1].layerDigest).toBe(smallLayerDigest);
      expect(c.platform).toBe("linux/amd64");
      // again: kept; --force rebuilds the same bytes
      expect(cli("index", "create", image, "--min-layer-size", "0", "--span-size", "64KiB").stdout).toStartWith(
        "kept existing index",
      );
      expect(cli("index", "create", image, "--min-layer-size", "0", "--span-size", "65536", "-f").stdout).toStartWith(
        `created index ${c.indexDigest}`,
      );

      // list / info
      const list = JSON.parse(cli("index", "list", "--json").stdout);
      expect(list).toHaveLength(1);
      expect(list[0]).toMatchObject({
        indexDigest: c.indexDigest,
        imageRef: image,
        version: "v1",
        manifestDigest: c.manifestDigest,
      });
      expect(cli("index", "list", "-q").stdout.trim()).toBe(c.indexDigest);
      expect(cli("index", "list").stdout).toContain("DIGEST");
      const info = JSON.parse(cli("index", "info", c.indexDigest).stdout) as Manifest;
      expect(info.config.mediaType).toBe(SOCI_INDEX_V1_ARTIFACT_TYPE);
      expect(info.subject?.digest).toBe(c.manifestDigest);
      expect(cli("index", "info", `sha256:${"0".repeat(64)}`).code).toBe(1);

      // ztoc list / info / get-file
      const ztocs = JSON.parse(cli("ztoc", "list", "--json").stdout) as Array<{ digest: string; layerDigest: string }>;
      expect(ztocs.map((z) => z.digest)).toEqual(c.ztocs.map((z: { digest: string }) => z.digest));
      const zi = JSON.parse(cli("ztoc", "info", ztocs[0]!.digest, "--json").stdout);
      expect(Object.keys(zi)).toEqual([
        "version",
        "build_tool",
        "size",
        "span_size",
        "num_spans",
        "num_files",
        "num_multi_span_files",
        "files",
      ]);
      expect(zi.version).toBe("0.9");
      expect(zi.span_size).toBe(65536);
      const [name, want] = [...files].find(([, d]) => d.length > 100_000)!;
      const out = join(dir, "out.bin");
      const got = cli("ztoc", "get-file", ztocs[0]!.digest, name, "-o", out, "--stats");
      expect(got.code).toBe(0);
      expect(Buffer.compare(readFileSync(out), want)).toBe(0);
      expect(got.stderr).toMatch(/^fetched \d+ bytes of \d+ \(spans \d+-\d+ of \d+\) for \d+ bytes of /);
      const toStdout = cli("ztoc", "get-file", ztocs[1]!.digest, "etc/hello");
      expect(toStdout.stdout).toBe("hi\n");
      expect(cli("ztoc", "get-file", ztocs[1]!.digest, "etc/nope").code).toBe(1);

      // rebuild-db restores the record from the blobs
      rmSync(join(root, "index-db"), { recursive: true });
      expect(cli("index", "list", "-q").stdout).toBe("");
      expect(cli("index", "rebuild-db").stdout).toBe("rebuilt 1 index records\n");
      expect(cli("index", "list", "-q").stdout.trim()).toBe(c.indexDigest);

      // rm removes the index and its zTOCs
      expect(cli("index", "rm", c.indexDigest).stdout).toBe(`removed ${c.indexDigest} (2 zTOCs)\n`);
      expect(cli("index", "list", "-q").stdout).toBe("");
      expect(cli("ztoc", "info", ztocs[0]!.digest).code).toBe(1);
      expect(cli("index", "rm", c.indexDigest).code).toBe(1);
    },
    COMMANDS_LIMIT_MS,
  );

  test("convert writes a SOCI-enabled image into an OCI layout", () => {
    const dst = `oci:${join(dir, "converted")}:soci`;
    const r = cli("convert", image, dst, "--min-layer-size", "0", "--json");
    expect(r.code).toBe(0);
    const res = JSON.parse(r.stdout);
    const layoutIndex = JSON.parse(readFileSync(join(dir, "converted", "index.json"), "utf8")) as ImageIndex;
    expect(layoutIndex.manifests[0]!.digest).toBe(res.indexDigest);
    const ix = JSON.parse(
      readFileSync(join(dir, "converted", "blobs", "sha256", res.indexDigest.slice(7)), "utf8"),
    ) as ImageIndex;
    expect(ix.manifests.map((d) => d.artifactType ?? "image")).toEqual(["image", SOCI_INDEX_V2_ARTIFACT_TYPE]);
    expect(cli("convert", image, `oci:${join(dir, "untagged")}`).code).toBe(2);
    // the v2 index is recorded locally under the converted manifest
    const list = JSON.parse(cli("index", "list", "--ref", dst, "--json").stdout);
    expect(list.map((x: { version: string; manifestDigest: string }) => [x.version, x.manifestDigest])).toEqual([
      ["v2", res.images[0].manifestDigest],
    ]);
  });

  test(
    "create without --span-size builds 256 KiB spans; --span-size 4MiB (for AWS SOCI readers) is kept",
    () => {
      const own = join(dir, "root-span-default");
      const spanOf = (args: string[]) => {
        const created = runCli(["--root", own, "index", "create", image, "--min-layer-size", "0", ...args, "--json"], {
          timeoutMs: 120_000,
        });
        expect(created.stderr).toBe("");
        expect(created.code).toBe(0);
        const [c] = JSON.parse(created.stdout);
        const zi = JSON.parse(runCli(["--root", own, "ztoc", "info", c.ztocs[0].digest, "--json"]).stdout);
        return zi.span_size;
      };
      expect(spanOf([])).toBe(256 * 1024);
      expect(spanOf(["--span-size", "4MiB", "--force"])).toBe(4 * 1024 * 1024);
    },
    COMMANDS_LIMIT_MS,
  );

  test("a temporary blob that a killed writer left is removed by the next command; a live writer's is kept", () => {
    const r = join(dir, "root-tmp");
    const blobs = join(r, "content", "blobs", "sha256");
    mkdirSync(blobs, { recursive: true });
    // `.tmp-<pid namespace>-<pid>-<start time>-<random>`: a writer that has exited, and this (live) process
    const ns = /\d+/.exec(readlinkSync("/proc/self/ns/pid"))![0];
    const deadPid = spawnSync("true").pid;
    const stat = readFileSync("/proc/self/stat", "utf8");
    const myStart = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
    const dead = join(blobs, `.tmp-${ns}-${deadPid}-1-0011223344556677`);
    const live = join(blobs, `.tmp-${ns}-${process.pid}-${myStart}-8899aabbccddeeff`);
    writeFileSync(dead, "half a blob");
    writeFileSync(live, "half a blob");
    const listed = runCli(["--root", r, "index", "list", "-q"]);
    expect(listed.code).toBe(0);
    expect(existsSync(dead)).toBe(false);
    expect(existsSync(live)).toBe(true);
    // rebuild-db sweeps as well, and keeps what a live writer is writing
    writeFileSync(dead, "half a blob");
    expect(runCli(["--root", r, "index", "rebuild-db"]).code).toBe(0);
    expect(existsSync(dead)).toBe(false);
    expect(existsSync(live)).toBe(true);
  });
});

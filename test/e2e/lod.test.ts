/**
 * Load order documents end to end, on the real Distribution registry and the kernel's FUSE and overlayfs: a
 * busybox image with an app layer of large files of which the workload reads only a small header each.
 *  - `mount --record-lod web` records the workload's first reads; `lod info` lists the files it touched in
 *    order, and only the headers of the large files;
 *  - `lod push` publishes it as a referrer of the image; from a cold root with background fetching off,
 *    `mount --lod web` finds it in the registry, prefetches its spans (the mount up before they are in), and the
 *    workload then runs with no registry request at all, its output unchanged, and fetches a small part of
 *    the app layer (a file-level prefetch of the same files would fetch all of them);
 *  - without `--lod`, a `[lod] replay` rule matching the reference chooses the document; one the image lacks,
 *    and a missing or corrupt LOD named by the flag, are ignored with one log line and the mount works;
 *  - `mount --lod ""` replays none, whatever the rules say (one log line), and the mount works;
 *  - `lod export --soci-prefetch` stores an index whose prefetch artifacts `mount` accepts: with
 *    `--wait-prefetch`, their spans are fetched before the mount is up.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { busyboxLayer, HOST_PLATFORM } from "../_harness/busybox_image.ts";
import { runCli } from "../_harness/cli.ts";
import { needs } from "../_harness/env.ts";
import { until as untilAsync } from "../_harness/liveness.ts";
import { Rand } from "../_harness/rand.ts";
import { type AccessLogEntry, pushImage, startRegistry, type TestRegistry } from "../_harness/registry.ts";
import { startMount, until } from "./_mount_helpers.ts";

const run = needs("LOD e2e", "root", "fuse", "tool:docker-registry", "tool:mount", "tool:chroot", "tool:busybox");
const MINUTES = 60_000;
const BIG_FILES = 6;
const BIG_BYTES = 2 << 20;
const WORKLOAD = [
  "busybox cat /app/conf.txt",
  ...Array.from({ length: 4 }, (_, i) => `busybox head -c 4096 /data/big${i} | busybox md5sum`),
].join("; ");
/** A second workload of the same image: the headers of the two big files the first one leaves alone. */
const WORKLOAD_B = [4, 5].map((i) => `busybox head -c 4096 /data/big${i} | busybox md5sum`).join("; ");

describe.skipIf(!run)("load order documents", () => {
  let reg: TestRegistry;
  let tmp: string;
  let ref: string;
  let cfg: string;
  let appLayer: string;
  let appLayerSize: number;
  let expected: string;

  const workload = (mnt: string, script = WORKLOAD) => {
    const r = spawnSync("chroot", [mnt, "/bin/sh", "-c", script], { encoding: "utf8", timeout: 5 * MINUTES });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    return r.stdout;
  };
  const layerState = (mnt: string, digest: string) =>
    JSON.parse(readFileSync(join(mnt, ".soci-ts", `${digest}.json`), "utf8")) as { fetchedSize: number; size: number };
  const blobGets = (log: AccessLogEntry[]) => log.filter((e) => e.method === "GET" && e.path.includes("/blobs/"));
  /** Blob requests a mount run with `--log-level debug` logged (one line each, once its answer's headers came). */
  const loggedBlobGets = (stderr: string) => stderr.split("\n").filter((l) => /http GET \S+\/blobs\//.test(l)).length;
  /**
   * The layers a stored document names spans of: a replay is over when each of them logged its own. (Asked
   * before the mount starts: a synchronous command run meanwhile would stall the mount's log pipe.)
   */
  const lodLayers = (root: string, name: string): string[] => {
    const r = runCli(["--root", root, "lod", "info", name, "--json"]);
    if (r.code !== 0) throw new Error(`lod info ${name} failed (${r.code}): ${r.stderr}`);
    const doc = JSON.parse(r.stdout);
    return doc.layers
      .filter((l: { ranges: unknown[] }) => l.ranges.length > 0)
      .map((l: { digest: string }) => l.digest);
  };
  /**
   * Waits until every layer of `layers` logged its replay done: the app layer's may end before the busybox
   * layer's, whose last requests a workload started then would be charged with.
   */
  const replayDone = async (m: { stderr(): string }, layers: string[], what: string): Promise<void> => {
    expect([what, layers.length > 0]).toEqual([what, true]);
    for (const layer of layers) {
      const replayed = new RegExp(`Load order document replayed layer=${layer}`);
      await until(() => replayed.test(m.stderr()), `the replay of ${what} in layer ${layer}`);
    }
  };
  /**
   * The registry's access log from `from` on, once it holds every blob request the mount logged so far: the
   * registry writes a request's line when its handler returns, which may be after the mount has the whole answer
   * (and has logged its replay done), so a workload started at once could be charged with the replay's last lines.
   */
  const caughtUp = async (from: number, m: { stderr(): string }, what: string): Promise<void> => {
    const sent = loggedBlobGets(m.stderr());
    expect([what, sent > 0]).toEqual([what, true]); // the replay fetched its spans
    await untilAsync(10_000, `the registry's log of ${what}'s ${sent} blob requests`, async () => {
      return blobGets((await reg.accessLog()).slice(from)).length >= sent;
    });
  };

  beforeAll(async () => {
    reg = await startRegistry({ accessLog: true });
    tmp = mkdtempSync(join(tmpdir(), "soci-e2e-lod-"));
    const rand = new Rand("lod-e2e");
    const app: Record<string, Uint8Array | string> = { "app/conf.txt": "name=demo\n" };
    for (let i = 0; i < BIG_FILES; i++) app[`data/big${i}`] = rand.bytes(BIG_BYTES);
    const img = await pushImage(reg, "test/lod", "v1", { layers: [busyboxLayer(), app], platform: HOST_PLATFORM });
    appLayer = img.layers[1]!.descriptor.digest;
    appLayerSize = img.layers[1]!.descriptor.size;
    ref = `${reg.host}/test/lod:v1`;
    const publisher = join(tmp, "publisher");
    for (const args of [
      ["index", "create", ref, "--minLayerSize", "0", "--spanSize", "256KiB"],
      ["index", "push", ref],
    ]) {
      const r = runCli(["--root", publisher, ...args], { timeoutMs: 5 * MINUTES });
      if (r.code !== 0) throw new Error(`${args.join(" ")} failed: ${r.stderr}`);
    }
    cfg = join(tmp, "config.toml");
    writeFileSync(cfg, "[background_fetch]\ndisable = true\n");
    expected = [
      "name=demo\n",
      ...Array.from({ length: 4 }, (_, i) => {
        const md5 = createHash("md5")
          .update((app[`data/big${i}`] as Uint8Array).subarray(0, 4096))
          .digest("hex");
        return `${md5}  -\n`;
      }),
    ].join("");
  }, 10 * MINUTES);

  afterAll(async () => {
    await reg?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  test(
    "record, push, replay from a cold root: the workload's reads need no registry request",
    async () => {
      // 1. Record.
      const recRoot = join(tmp, "rec");
      const mnt = join(tmp, "mnt-rec");
      mkdirSync(mnt);
      const rec = await startMount([
        "--root",
        recRoot,
        "--config",
        cfg,
        "mount",
        ref,
        mnt,
        "--record-lod",
        "web",
        "--record-quiet",
        "0",
      ]);
      expect(workload(mnt)).toBe(expected);
      // Opening a file starts fetching it whole in the background (fetch on open): wait for it.
      await until(() => layerState(mnt, appLayer).fetchedSize >= 4 * BIG_BYTES, "the fetch on open").catch(() => {});
      const recordedFetch = layerState(mnt, appLayer).fetchedSize;
      const stopped = await rec.stop();
      expect(stopped.code).toBe(0);
      expect(stopped.stderr).toContain("Recorded load order document web");

      // 2. What it says: the files in first-touch order, only headers of the big files.
      const info = runCli(["--root", recRoot, "lod", "info", "web", "--json"]);
      expect(info.code).toBe(0);
      const doc = JSON.parse(info.stdout);
      expect(doc.image.reference).toBe(ref);
      const app = doc.layers.find((l: { digest: string }) => l.digest === appLayer);
      const files: string[] = [...new Set<string>(app.ranges.map((r: { path: string }) => r.path))];
      expect(files).toEqual(["app/conf.txt", "data/big0", "data/big1", "data/big2", "data/big3"]);
      const bytes = app.ranges.reduce((n: number, r: { length: number }) => n + r.length, 0);
      console.log(`LOD of the app layer: ${app.ranges.length} ranges, ${bytes} bytes of ${4 * BIG_BYTES}`);
      expect(bytes).toBeLessThan(4 * 256 * 1024);
      const bin = doc.layers.find((l: { digest: string }) => l.digest !== appLayer);
      expect(bin.ranges[0].path).toBe("bin/busybox");
      const listed = runCli(["--root", recRoot, "lod", "list"]);
      expect(listed.stdout).toContain("web");
      expect(listed.stdout).toContain(ref);

      // 3. Publish it next to the image.
      const pushed = runCli(["--root", recRoot, "lod", "push", "web", ref]);
      expect(pushed.stderr).toBe("");
      expect(pushed.stdout).toContain("pushed load order document web");
      expect(runCli(["--root", recRoot, "lod", "push", "web", ref]).stdout).toContain("already present");

      // 4. Replay from a cold root: the LOD comes from the registry; the mount is up at once, its spans
      //    following in the background. Once replayed, the workload needs no registry request.
      const coldRoot = join(tmp, "cold");
      const mnt2 = join(tmp, "mnt-cold");
      mkdirSync(mnt2);
      const webLayers = lodLayers(recRoot, "web");
      const start = (await reg.accessLog()).length;
      const replay = await startMount([
        "--root",
        coldRoot,
        "--log-level",
        "debug",
        "--config",
        cfg,
        "mount",
        ref,
        mnt2,
        "--lod",
        "web",
      ]);
      try {
        expect(replay.stderr()).toContain("Load order document found");
        await replayDone(replay, webLayers, "the LOD");
        await caughtUp(start, replay, "the replay");
        const before = (await reg.accessLog()).length;
        expect(workload(mnt2)).toBe(expected);
        const during = blobGets((await reg.accessLog()).slice(before));
        expect(during.map((e) => e.path)).toEqual([]);
        const replayFetch = layerState(mnt2, appLayer).fetchedSize;
        console.log(
          `app layer fetched (of ${appLayerSize} bytes): recording (fetch on open, whole files) ${recordedFetch}, replay with the LOD ${replayFetch}`,
        );
        // The spans holding the headers (256 KiB spans; a header and the kernel's read-ahead sit in one or two).
        expect(replayFetch).toBeLessThanOrEqual(2 * 4 * 2 * 256 * 1024);
        // (How much of the opened files the recording run fetched depends on how far its background fetch-on-open
        // got before the unmount: printed above, not asserted.)
      } finally {
        expect((await replay.stop()).code).toBe(0);
      }

      // 4b. Without --lod, the first [lod] replay rule matching the reference chooses the document; a rule naming
      //     one the image lacks is ignored with one log line.
      const host = ref.slice(0, ref.indexOf("/"));
      const rulesCfg = join(tmp, "rules.toml");
      const rule = (image: string, workload: string) => `{ image = "${image}", workload = "${workload}" }`;
      writeFileSync(
        rulesCfg,
        `[background_fetch]\ndisable = true\n[lod]\nreplay = [${rule(`${host}/other/*`, "nope")}, ${rule(`${host}/test/lod:*`, "web")}]\n`,
      );
      const byRule = await startMount(["--root", coldRoot, "--config", rulesCfg, "mount", ref, mnt2]);
      expect(workload(mnt2)).toBe(expected);
      const r = await byRule.stop();
      expect(r.code).toBe(0);
      expect(r.stderr).toContain(`Load order document found workload=web by="rule ${host}/test/lod:*"`);
      writeFileSync(rulesCfg, `[lod]\nreplay = [${rule("**", "batch")}]\n`);
      const missingByRule = await startMount(["--root", coldRoot, "--config", rulesCfg, "mount", ref, mnt2]);
      expect(workload(mnt2)).toBe(expected);
      const mr = await missingByRule.stop();
      expect(mr.code).toBe(0);
      expect(mr.stderr.split("\n").filter((l) => l.includes("Load order document ignored"))).toEqual([
        expect.stringContaining('workload=batch by="rule **"'),
      ]);

      // 5. A missing and a corrupt LOD are ignored with a log line.
      const missing = await startMount(["--root", coldRoot, "--config", cfg, "mount", ref, mnt2, "--lod", "batch"]);
      expect(workload(mnt2)).toBe(expected);
      const m = await missing.stop();
      expect(m.stderr).toContain("Load order document ignored");
      expect(m.stderr).toContain("workload=batch");
      expect(m.stderr).toContain("no load order document");
      const stored = JSON.parse(runCli(["--root", coldRoot, "lod", "list", "--json"]).stdout);
      expect(stored.map((r: { workload: string }) => r.workload)).toEqual(["web"]);
      const blob = join(coldRoot, "content/blobs/sha256", stored[0].lodDigest.slice(7));
      writeFileSync(blob, "{not json");
      const corrupt = await startMount(["--root", coldRoot, "--config", cfg, "mount", ref, mnt2, "--lod", "web"]);
      expect(workload(mnt2)).toBe(expected);
      const c = await corrupt.stop();
      expect(c.code).toBe(0);
      expect(c.stderr).toContain("Load order document ignored");
      expect(c.stderr).toContain("Cannot read blob");
      expect(readFileSync("/proc/mounts", "utf8")).not.toContain(tmp);
    },
    20 * MINUTES,
  );

  test(
    "two workloads of one image side by side: each chosen by flag or by rule replays its own reads",
    async () => {
      const root = join(tmp, "two");
      const mnt = join(tmp, "mnt-two");
      mkdirSync(mnt);
      // 1. Record both into one local store.
      for (const [name, script] of [
        ["heads-a", WORKLOAD],
        ["heads-b", WORKLOAD_B],
      ] as const) {
        const rec = await startMount(["--root", root, "--config", cfg, "mount", ref, mnt, "--record-lod", name]);
        workload(mnt, script);
        const stopped = await rec.stop();
        expect(stopped.stderr).toContain(`Recorded load order document ${name}`);
      }
      const stored = JSON.parse(runCli(["--root", root, "lod", "list", "--json"]).stdout) as Array<{
        workload: string;
        image: { reference?: string };
      }>;
      expect(stored.map((r) => r.workload).sort()).toEqual(["heads-a", "heads-b"]);
      const filesOf = (name: string) => {
        const doc = JSON.parse(runCli(["--root", root, "lod", "info", name, "--json"]).stdout);
        const app = doc.layers.find((l: { digest: string }) => l.digest === appLayer);
        return [...new Set<string>(app.ranges.map((r: { path: string }) => r.path))];
      };
      expect(filesOf("heads-a")).toEqual(["app/conf.txt", "data/big0", "data/big1", "data/big2", "data/big3"]);
      expect(filesOf("heads-b")).toEqual(["data/big4", "data/big5"]);

      // 2. Each replayed from a cold span cache, chosen by flag, then by rule: its workload then asks nothing.
      const host = ref.slice(0, ref.indexOf("/"));
      const rulesCfg = join(tmp, "two-rules.toml");
      writeFileSync(
        rulesCfg,
        `[background_fetch]\ndisable = true\n[lod]\nreplay = [{ image = "${host}/test/lod:*", workload = "heads-a" }]\n`,
      );
      for (const [how, args, name, script] of [
        ["flag", ["--config", cfg, "mount", ref, mnt, "--lod", "heads-b"], "heads-b", WORKLOAD_B],
        ["rule", ["--config", rulesCfg, "mount", ref, mnt], "heads-a", WORKLOAD],
        ["flag over rule", ["--config", rulesCfg, "mount", ref, mnt, "--lod", "heads-b"], "heads-b", WORKLOAD_B],
      ] as const) {
        rmSync(join(root, "spancache"), { recursive: true, force: true });
        const layers = lodLayers(root, name);
        const start = (await reg.accessLog()).length;
        const m = await startMount(["--root", root, "--log-level", "debug", ...args]);
        try {
          await replayDone(m, layers, `${name} (${how})`);
          expect([how, m.stderr().includes(`Load order document found workload=${name}`)]).toEqual([how, true]);
          await caughtUp(start, m, `the replay of ${name} (${how})`);
          const before = (await reg.accessLog()).length;
          workload(mnt, script);
          expect([how, blobGets((await reg.accessLog()).slice(before)).map((e) => e.path)]).toEqual([how, []]);
        } finally {
          expect((await m.stop()).code).toBe(0);
        }
      }
      expect(readFileSync("/proc/mounts", "utf8")).not.toContain(tmp);
    },
    10 * MINUTES,
  );

  test(
    'mount --lod "" replays no document, though a [lod] replay rule matches the image',
    async () => {
      const rulesCfg = join(tmp, "rules-none.toml");
      writeFileSync(
        rulesCfg,
        '[background_fetch]\ndisable = true\n[lod]\nreplay = [{ image = "**", workload = "web" }]\n',
      );
      const mnt = join(tmp, "mnt-none");
      mkdirSync(mnt);
      const m = await startMount(["--root", join(tmp, "none"), "--config", rulesCfg, "mount", ref, mnt, "--lod", ""]);
      let r: { code: number; stderr: string };
      try {
        expect(workload(mnt)).toBe(expected);
      } finally {
        r = await m.stop();
      }
      expect(r.code).toBe(0);
      // The rule is not consulted: no document looked for, found or ignored; one line says why.
      expect(r.stderr.split("\n").filter((l) => l.includes("oad order document"))).toEqual([
        expect.stringContaining('No load order document replayed: --lod ""'),
      ]);
      expect(readFileSync("/proc/mounts", "utf8")).not.toContain(tmp);
    },
    10 * MINUTES,
  );

  test(
    "lod export --soci-prefetch stores prefetch artifacts that mount --wait-prefetch fetches before it is up",
    async () => {
      const root = join(tmp, "rec");
      const out = runCli(["--root", root, "lod", "export", "web", "--soci-prefetch", "--json"], {
        timeoutMs: 5 * MINUTES,
      });
      expect(out.stderr).toBe("");
      expect(out.code).toBe(0);
      const exported = JSON.parse(out.stdout);
      expect(exported.artifacts.map((a: { layerDigest: string }) => a.layerDigest)).toContain(appLayer);
      // `index info` shows the artifacts in the new index.
      const index = JSON.parse(runCli(["--root", root, "index", "info", exported.indexDigest]).stdout);
      expect(
        index.layers.filter(
          (l: { mediaType: string }) => l.mediaType === "application/vnd.amazon.soci.prefetch.v1+json",
        ),
      ).toHaveLength(exported.artifacts.length);
      // A cold cache, then a mount that finds that index in the local store.
      rmSync(join(root, "spancache"), { recursive: true, force: true });
      const mnt = join(tmp, "mnt-export");
      mkdirSync(mnt);
      const m = await startMount(["--root", root, "--config", cfg, "mount", ref, mnt, "--wait-prefetch"]);
      try {
        // Before any read of file data (--wait-prefetch: up once they are in): the artifact's spans are in.
        expect(layerState(mnt, appLayer).fetchedSize).toBeGreaterThan(0);
        expect(workload(mnt)).toBe(expected);
      } finally {
        expect((await m.stop()).code).toBe(0);
      }
      expect(readFileSync("/proc/mounts", "utf8")).not.toContain(tmp);
    },
    10 * MINUTES,
  );
});

/**
 * soci-ts and the real AWS SOCI 0.4.1 (Debian trixie's soci-snapshotter, test/_harness/aws_soci.ts) read each
 * other's indexes, and build the same zTOCs. One world for every case (test/_harness/snapshotter_env.ts): the
 * Distribution registry over TLS under a made-up name, a private containerd 1.6 whose `soci` proxy plugin is
 * served by soci-ts's `serve` or by AWS's soci-snapshotter-grpc in turn, all in a private namespace. Images:
 * the python image (test/_harness/python_image.ts) under two names, and four "edge" layers made by GNU tar,
 * gzip and pigz (_interop_layers.ts).
 *  0. Publishers: AWS's `soci create` (+ `soci push`) indexes e2e/aws-py and e2e/edges; `soci-ts index
 *     create` (+ `index push`, its own defaults otherwise) indexes e2e/ts-py. Then the publisher's containerd
 *     images and AWS's local store are dropped: nodes start fresh.
 *  c. With AWS's build tool identifier, span size and minimum layer size, `soci-ts index create` builds zTOCs
 *     byte-identical to AWS's (the registry's copy of AWS's against ours): both python layers and the edge
 *     layers (gzip and uncompressed). Two differences of AWS 0.4.1 are pinned, each down to the field:
 *      - a layer of two gzip members: 0.4.1 stops making checkpoints at the first member's end (0.14.0 goes
 *        on, as soci-ts does), so its zTOC equals ours with the later checkpoints dropped and the last span
 *        running to the end of the layer (`asFirstMemberOnly`);
 *      - `soci create` writes mtimes in its local time zone: built with TZ=Europe/Paris, AWS's zTOCs differ
 *        from ours (UTC, like AWS's built in UTC) in `mod_time` strings only, which name the same instants.
 *  a. `soci-ts mount` finds AWS's index in the registry: the edge image's tree equals `tar -x` of its layers;
 *     python runs in a chroot of the python mount while a small part of it was fetched. `soci-ts serve`
 *     takes the AWS-indexed python image lazily (pulled by AWS's `soci image rpull`) and `ctr run` prints the
 *     script's output.
 *  b. AWS's snapshotter takes the soci-ts-indexed python image lazily (`soci image rpull`) and runs it; the
 *     registry served soci-ts's zTOCs and only ranges of the layers.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Manifest } from "../../src/oci/types.ts";
import { parseReference } from "../../src/registry/reference.ts";
import { ArtifactStore } from "../../src/soci/artifact_store.ts";
import { decodeZtoc } from "../../src/ztoc/codec.ts";
import { parseModTime } from "../../src/layerfs/metadata.ts";
import {
  AWS_SOCI_LIB,
  AWS_SOCI_NEEDS,
  AWS_SOCI_VERSION,
  type AwsSoci,
  type AwsSociSnapshotter,
  ensureAwsSoci,
  sociCli,
  startAwsSociSnapshotter,
} from "../_harness/aws_soci.ts";
import { HOST_PLATFORM } from "../_harness/busybox_image.ts";
import { BUN, MAIN } from "../_harness/cli.ts";
import { needs } from "../_harness/env.ts";
import type { NsProcess } from "../_harness/namespace.ts";
import { waitFor } from "../_harness/ports.ts";
import {
  ensurePythonImage,
  PYTHON_IMAGE_NEEDS,
  PYTHON_LAYER2_FILES,
  pushPythonImage,
} from "../_harness/python_image.ts";
import { type AccessLogEntry, type PushedImage, pushImage } from "../_harness/registry.ts";
import { SNAPSHOTTER_ENV_BASE_NEEDS, type SnapshotterEnv, startSnapshotterEnv } from "../_harness/snapshotter_env.ts";
import { asFirstMemberOnly, buildEdgeLayers, ztocDifferences } from "./_interop_layers.ts";
import { applyLayers, describeTree, layoutManifest } from "./_mount_helpers.ts";

const run = needs(
  "AWS SOCI interop",
  ...SNAPSHOTTER_ENV_BASE_NEEDS,
  ...AWS_SOCI_NEEDS,
  ...PYTHON_IMAGE_NEEDS,
  "tool:tar",
  "tool:gzip",
  "tool:pigz",
  "tool:setcap",
  "tool:setfattr",
  "tool:getfattr",
  "tool:mknod",
  "tool:chroot",
);
const MINUTES = 60_000;
/** What AWS SOCI 0.4.1's `soci create` writes into zTOCs and indexes. */
const AWS_BUILD_TOOL = "AWS SOCI CLI v0.1";
const PY_SPAN = 1 << 20;
const EDGE_SPAN = 64 << 10;
const HELLO_PY = `${PYTHON_LAYER2_FILES.added["opt/soci-test/hello.py"]!.match(/'(.*)'/)![1]!}\n`;
const PUBLISHER = "publisher";

/** layer digest → zTOC digest, from `soci create`'s "layer L -> ztoc Z" lines. */
function awsZtocs(stdout: string): Map<string, string> {
  return new Map(
    [...stdout.matchAll(/^layer (sha256:[0-9a-f]{64}) -> ztoc (sha256:[0-9a-f]{64})$/gm)].map((m) => [m[1]!, m[2]!]),
  );
}

/** layer digest → zTOC digest, from `soci-ts index create --json`. */
function tsZtocs(stdout: string): Map<string, string> {
  const created = JSON.parse(stdout) as Array<{ ztocs: Array<{ digest: string; layerDigest: string }> }>;
  return new Map(created.flatMap((c) => c.ztocs.map((z) => [z.layerDigest, z.digest] as [string, string])));
}

/** What the registry served from `repo`'s blobs among `entries`: the GETs of `digests`. */
function blobGets(entries: AccessLogEntry[], repo: string, digests: string[]): AccessLogEntry[] {
  return entries.filter(
    (a) =>
      a.method === "GET" &&
      digests.some((d) => a.path === `/v2/${repo}/blobs/${d}` || a.path.startsWith(`/v2/${repo}/blobs/${d}?`)),
  );
}

describe.skipIf(!run)(`soci-ts and AWS SOCI ${AWS_SOCI_VERSION} read each other's indexes`, () => {
  let env: SnapshotterEnv | undefined;
  let soci: AwsSoci;
  let dir: string;
  let layout: string;
  let pyManifest: Manifest;
  let edges: PushedImage;
  /** Per edge layer, where its gzip members start. */
  let edgeMembers: number[][] = [];
  /** References inside the namespace. */
  const ref = { awsPy: "", tsPy: "", edges: "" };
  /** Config of soci-ts on the nodes and of its publisher (its own defaults, background fetch off). */
  let config: string;
  /** The same, with AWS's build tool identifier. */
  let awsIdConfig: string;
  /** AWS's zTOCs (layer → zTOC) per image, as `soci create` printed them. */
  const aws = { py: new Map<string, string>(), edges: new Map<string, string>() };
  /** AWS's zTOCs of the edge layers built in Paris time (layer → bytes). */
  const awsParisEdges = new Map<string, Uint8Array>();
  /** soci-ts's zTOCs of e2e/ts-py (layer → zTOC). */
  let tsPyZtocs = new Map<string, string>();
  let serve: NsProcess | undefined;
  let awsSnapshotter: AwsSociSnapshotter | undefined;
  const mounts: NsProcess[] = [];

  /** `soci-ts ARGS` inside the namespace (the made-up registry name resolves there), checked. */
  const cli = async (args: string[], timeoutMs = 5 * MINUTES) => {
    const r = await env!.ns.run([BUN, MAIN, ...args], { env: env!.env, timeoutMs });
    if (r.code !== 0) throw new Error(`Cannot run "soci-ts ${args.join(" ")}": exit ${r.code}\n${r.stderr}`);
    return r;
  };
  const ctr = (args: string[], opts: { namespace?: string } = {}) =>
    env!.containerd.ctr(args, { timeoutMs: 5 * MINUTES, ...opts });
  /** Path of `p` (inside the namespace) as this process sees it. */
  const inside = (p: string) => `/proc/${env!.ns.pid}/root${p}`;
  /** `soci-ts mount REF DIR` inside the namespace, resolved once it printed "Mounted". */
  const startMount = async (image: string, name: string) => {
    const mnt = join(dir, name);
    mkdirSync(mnt);
    const log = join(dir, `${name}.log`);
    const root = join(dir, `${name}-root`);
    const p = await env!.ns.spawn([BUN, MAIN, "--root", root, "--config", config, "mount", image, mnt], log, {
      env: env!.env,
    });
    mounts.push(p);
    let code: number | undefined;
    void p.exited.then((c) => (code = c));
    await waitFor(
      `soci-ts mount of ${image}`,
      async () => {
        if (code !== undefined) throw new Error(`soci-ts mount exited with ${code}:\n${readFileSync(log, "utf8")}`);
        return readFileSync(log, "utf8").includes("Mounted ");
      },
      2 * MINUTES,
    );
    return { mnt, log: () => readFileSync(log, "utf8"), proc: p };
  };
  /** Each lazy layer's state file of a soci-ts mount: fetched and total bytes. */
  const fetchedOf = (mnt: string) => {
    let fetched = 0;
    let size = 0;
    for (const f of readdirSync(inside(join(mnt, ".soci-ts")))) {
      const s = JSON.parse(readFileSync(inside(join(mnt, ".soci-ts", f)), "utf8"));
      expect([f, s.error]).toEqual([f, undefined]);
      fetched += s.fetchedSize;
      size += s.size;
    }
    return { fetched, size };
  };

  beforeAll(async () => {
    [soci, layout] = await Promise.all([ensureAwsSoci(), ensurePythonImage()]);
    pyManifest = layoutManifest(layout);
    env = await startSnapshotterEnv({ privateDirs: [AWS_SOCI_LIB] });
    dir = join(env.dir, "interop");
    mkdirSync(dir);
    const base = [
      `[resolver.host."${env.registryHost}"]`,
      `ca_file = "${env.env.SSL_CERT_FILE}"`,
      "[background_fetch]",
      "disable = true",
      "",
    ];
    config = join(dir, "config.toml");
    writeFileSync(config, base.join("\n"));
    awsIdConfig = join(dir, "aws-id.toml");
    writeFileSync(awsIdConfig, [...base, "[index]", `build_tool_identifier = "${AWS_BUILD_TOOL}"`, ""].join("\n"));

    // Images: python twice (one per publisher: a registry keeps one v1 fallback tag per repository and
    // manifest, and each snapshotter must find the other tool's index alone), the edge layers once.
    await Promise.all(
      ["e2e/aws-py", "e2e/ts-py"].map((repository) => pushPythonImage(env!.registry.host, { repository, tag: "v1" })),
    );
    const edgeLayers = buildEdgeLayers(join(dir, "edges"));
    edgeMembers = edgeLayers.map((l) => l.members);
    edges = await pushImage(env.registry, "e2e/edges", "v1", {
      client: env.client,
      platform: HOST_PLATFORM,
      prebuiltLayers: edgeLayers,
    });
    ref.awsPy = `${env.registryHost}/e2e/aws-py:v1`;
    ref.tsPy = `${env.registryHost}/e2e/ts-py:v1`;
    ref.edges = `${env.registryHost}/e2e/edges:v1`;

    // 0. AWS's publisher: pull into containerd, index, push; then drop everything it has locally. `soci
    // create` writes mtimes in its local time zone: UTC, as soci-ts always does (the edge image is indexed in
    // Paris time first, kept aside; `soci push` pushes the newest index).
    const lib = env.privateDirs[AWS_SOCI_LIB]!;
    const awsCreate = async (image: string, span: number, tz: string) =>
      awsZtocs(
        (
          await sociCli(env!, soci, ["create", "--min-layer-size", "0", "--span-size", String(span), image], {
            namespace: PUBLISHER,
            env: { TZ: tz },
          })
        ).stdout,
      );
    for (const [image, span, into] of [
      [ref.awsPy, PY_SPAN, aws.py],
      [ref.edges, EDGE_SPAN, aws.edges],
    ] as const) {
      await ctr(["image", "pull", image], { namespace: PUBLISHER });
      if (image === ref.edges) {
        for (const [l, z] of await awsCreate(image, span, "Europe/Paris"))
          awsParisEdges.set(l, new Uint8Array(readFileSync(join(lib, "content/blobs/sha256", z.slice(7)))));
      }
      for (const [l, z] of await awsCreate(image, span, "UTC")) into.set(l, z);
      await sociCli(env, soci, ["push", image], { namespace: PUBLISHER });
      await ctr(["image", "rm", "--sync", image], { namespace: PUBLISHER });
    }
    for (const e of readdirSync(lib)) rmSync(join(lib, e), { recursive: true, force: true });
    // soci-ts's publisher, its own defaults but for the sizes.
    const publisher = join(dir, "ts-publisher");
    const created = await cli([
      "--root",
      publisher,
      "--config",
      config,
      "index",
      "create",
      ref.tsPy,
      "--min-layer-size",
      "0",
      "--span-size",
      String(PY_SPAN),
      "--json",
    ]);
    tsPyZtocs = tsZtocs(created.stdout);
    await cli(["--root", publisher, "--config", config, "index", "push", ref.tsPy]);
  }, 10 * MINUTES);

  afterAll(async () => {
    for (const m of mounts) await m.stop("SIGINT", 20_000).catch(() => {});
    await serve?.stop("SIGTERM", 20_000).catch(() => {});
    await awsSnapshotter?.stop().catch(() => {});
    await env?.stop();
  });

  test(
    "with AWS's build tool identifier and sizes, soci-ts builds zTOCs byte-identical to AWS's",
    async () => {
      const e = env!;
      const root = join(dir, "ts-aws-id");
      const build = async (image: string, span: number) =>
        tsZtocs(
          (
            await cli([
              "--root",
              root,
              "--config",
              awsIdConfig,
              "index",
              "create",
              image,
              "--min-layer-size",
              "0",
              "--span-size",
              String(span),
              "--json",
            ])
          ).stdout,
        );
      const store = new ArtifactStore(root);
      const tsEdges = await build(ref.edges, EDGE_SPAN);
      const cases = [
        {
          image: ref.awsPy,
          repo: "e2e/aws-py",
          layers: pyManifest.layers,
          theirs: aws.py,
          ours: await build(ref.awsPy, PY_SPAN),
        },
        {
          image: ref.edges,
          repo: "e2e/edges",
          layers: edges.manifest.layers,
          theirs: aws.edges,
          ours: tsEdges,
          members: edgeMembers,
        },
      ];
      let compared = 0;
      let firstMemberOnly = 0;
      for (const c of cases) {
        // The same layers get a zTOC from both tools.
        expect([c.image, [...c.ours.keys()].sort()]).toEqual([c.image, [...c.theirs.keys()].sort()]);
        for (const layer of c.layers) {
          const theirs = c.theirs.get(layer.digest);
          if (theirs === undefined) {
            console.log(`${c.image}: layer ${layer.digest} (${layer.mediaType}) is indexed by neither tool`);
            continue;
          }
          const awsBytes = await e.client.getBlob(parseReference(`${e.registry.host}/${c.repo}:v1`), theirs);
          const ourDigest = c.ours.get(layer.digest)!;
          const ourBytes = await store.getBlob(ourDigest);
          const i = c.layers.indexOf(layer);
          const what = `${c.image} layer ${i + 1} (${layer.mediaType}, ${layer.size} bytes)`;
          const members = c.members?.[i] ?? [0];
          if (members.length > 1) {
            // Several gzip members: AWS 0.4.1 has checkpoints in the first one only (see asFirstMemberOnly).
            const cut = asFirstMemberOnly(ourBytes, edges.layers[i]!.blob, members[1]!);
            expect([what, ztocDifferences(awsBytes, cut)]).toEqual([what, []]);
            expect([what, ourDigest === theirs]).toEqual([what, false]);
            firstMemberOnly++;
            continue;
          }
          expect([what, ztocDifferences(awsBytes, ourBytes)]).toEqual([what, []]);
          expect([what, ourDigest]).toEqual([what, theirs]);
          expect(Buffer.from(ourBytes).equals(Buffer.from(awsBytes))).toBe(true);
          compared++;
        }
      }
      // Both python layers, and the edge layers but the one of two gzip members.
      expect([compared, firstMemberOnly]).toEqual([5, 1]);
      console.log(
        `${compared} zTOCs byte-identical to AWS SOCI ${soci.debVersion}'s; ${firstMemberOnly} (two gzip members) identical to ours cut to the first member`,
      );
      // Built in another time zone, AWS's zTOCs differ in their mod_time strings only, which name the same
      // instants: "2023-11-14T23:13:20.5+01:00" for our "2023-11-14T22:13:20.5Z".
      expect(awsParisEdges.size).toBe(aws.edges.size);
      let zoned = 0;
      for (const [layer, paris] of awsParisEdges) {
        const i = edges.manifest.layers.findIndex((l) => l.digest === layer);
        const ours = await store.getBlob(tsEdges.get(layer)!);
        const members = edgeMembers[i]!;
        const like041 = members.length > 1 ? asFirstMemberOnly(ours, edges.layers[i]!.blob, members[1]!) : ours;
        for (const d of ztocDifferences(like041, paris, Infinity)) {
          const m = /^toc\[\d+\] .* modTime: "(.*)" vs "(.*)"$/.exec(d);
          const sameInstant = m !== null && parseModTime(m[1]!) === parseModTime(m[2]!);
          expect([d, sameInstant && m[1]!.endsWith("Z") && /[+-]\d\d:\d\d$/.test(m[2]!)]).toEqual([d, true]);
          zoned++;
        }
      }
      expect(zoned).toBeGreaterThan(20);
      // The edge layers hold what they are meant to: every entry type, and PAX records of every kind.
      const types = new Set<string>();
      const records = new Set<string>();
      for (const d of tsEdges.values()) {
        const ztoc = decodeZtoc(await store.getBlob(d));
        for (const f of ztoc.toc) {
          types.add(f.type);
          for (const x of f.xattrs) records.add(x.key);
        }
      }
      expect([...types].sort()).toEqual(["block", "char", "dir", "fifo", "hardlink", "reg", "symlink"]);
      for (const k of ["path", "linkpath", "mtime", "SCHILY.xattr.security.capability", "SCHILY.xattr.user.bin"])
        expect([k, records.has(k)]).toEqual([k, true]);
    },
    5 * MINUTES,
  );

  test(
    "soci-ts mount reads AWS's index: the edge tree equals tar -x of its layers; python runs lazily",
    async () => {
      const e = env!;
      // The edge image, every file read and compared.
      const before = (await e.registry.accessLog()).length;
      const m = await startMount(ref.edges, "mnt-edges");
      expect(m.log()).toContain("index: v1");
      const expected = join(dir, "edges-expected");
      const fakeLayout = join(dir, "edges-layout");
      mkdirSync(join(fakeLayout, "blobs", "sha256"), { recursive: true });
      for (const l of edges.layers)
        writeFileSync(join(fakeLayout, "blobs", "sha256", l.descriptor.digest.slice(7)), l.blob);
      mkdirSync(expected);
      applyLayers(fakeLayout, edges.manifest, expected);
      const [got, want] = await Promise.all([
        describeTree(inside(m.mnt), { skip: (r) => r === ".soci-ts" }),
        describeTree(expected),
      ]);
      const diffs: string[] = [];
      for (const k of new Set([...want.entries.keys(), ...got.entries.keys()])) {
        const [w, g] = [JSON.stringify(want.entries.get(k)), JSON.stringify(got.entries.get(k))];
        if (w !== g) diffs.push(`${k}: want ${w} got ${g}`);
      }
      expect(diffs).toEqual([]);
      expect(got.hardlinks).toEqual(want.hardlinks);
      expect(want.entries.size).toBeGreaterThan(25);
      // AWS's zTOCs came from the registry.
      const served = (await e.registry.accessLog()).slice(before);
      for (const z of aws.edges.values())
        expect([z, blobGets(served, "e2e/edges", [z]).some((a) => a.status === 200)]).toEqual([z, true]);

      // Python: a script runs in a chroot of the mount; the layers were fetched in small part.
      const py = await startMount(ref.awsPy, "mnt-py");
      expect(py.log()).toContain("index: v1");
      const r = await e.ns.run(["chroot", py.mnt, "python3", "/opt/soci-test/hello.py"], { timeoutMs: 2 * MINUTES });
      expect([r.code, r.stdout, r.stderr]).toEqual([0, HELLO_PY, ""]);
      const f = fetchedOf(py.mnt);
      console.log(
        `soci-ts mount, AWS's index: python fetched ${f.fetched} of ${f.size} bytes (${((f.fetched / f.size) * 100).toFixed(1)}%)`,
      );
      expect(f.size).toBe(pyManifest.layers.reduce((n, l) => n + l.size, 0));
      expect(f.fetched / f.size).toBeLessThan(0.25);

      for (const p of [m, py]) expect(await p.proc.stop("SIGINT", 20_000)).toBe(0);
      mounts.length = 0;
      expect(e.ns.mounts().filter((x) => x.mountPoint.startsWith(dir))).toEqual([]);
    },
    5 * MINUTES,
  );

  test(
    "soci-ts serve takes the AWS-indexed image lazily (soci image rpull) and ctr run prints its output",
    async () => {
      const e = env!;
      const root = join(dir, "serve-root");
      const log = join(dir, "serve.log");
      serve = await e.ns.spawn([BUN, MAIN, "--root", root, "--config", config, "serve", "--address", e.socket], log, {
        env: e.env,
      });
      await e.snapshotterReachable(60_000);
      const before = (await e.registry.accessLog()).length;
      await sociCli(e, soci, ["image", "rpull", ref.awsPy], { timeoutMs: 5 * MINUTES });
      const r = await ctr([
        "run",
        "--snapshotter",
        "soci",
        "--rm",
        ref.awsPy,
        "py-aws-index",
        "python3",
        "/opt/soci-test/hello.py",
      ]);
      expect(r.stdout).toBe(HELLO_PY);
      const serveLog = readFileSync(log, "utf8");
      expect(serveLog.match(/Prepared layer remotely/g)?.length).toBe(pyManifest.layers.length);
      // AWS's zTOCs were fetched; the layers came by ranges, a small part of them.
      const served = (await e.registry.accessLog()).slice(before);
      for (const z of aws.py.values())
        expect([z, blobGets(served, "e2e/aws-py", [z]).some((a) => a.status === 200)]).toEqual([z, true]);
      const layerGets = blobGets(
        served,
        "e2e/aws-py",
        pyManifest.layers.map((l) => l.digest),
      );
      const sent = layerGets.reduce((n, a) => n + a.bytes, 0);
      const total = pyManifest.layers.reduce((n, l) => n + l.size, 0);
      console.log(`soci-ts serve, AWS's index: the registry sent ${sent} of ${total} layer bytes`);
      expect(layerGets.filter((a) => a.status !== 206)).toEqual([]);
      expect(sent).toBeGreaterThan(0);
      expect(sent).toBeLessThan(total * 0.3);

      // containerd's GC removes the snapshots; serve stops; the next snapshotter starts from nothing.
      await ctr(["image", "rm", "--sync", ref.awsPy]);
      expect(await serve.stop("SIGTERM", 20_000)).toBe(0);
      serve = undefined;
      expect(e.ns.newMounts()).toEqual([]);
    },
    5 * MINUTES,
  );

  test(
    "AWS's snapshotter takes the soci-ts-indexed image lazily and runs it, fetching only ranges",
    async () => {
      const e = env!;
      awsSnapshotter = await startAwsSociSnapshotter(e, soci);
      const s = awsSnapshotter;
      const before = (await e.registry.accessLog()).length;
      await sociCli(e, soci, ["image", "rpull", ref.tsPy], { timeoutMs: 5 * MINUTES });
      const r = await ctr([
        "run",
        "--snapshotter",
        "soci",
        "--rm",
        ref.tsPy,
        "py-ts-index",
        "python3",
        "/opt/soci-test/hello.py",
      ]);
      expect(r.stdout).toBe(HELLO_PY);
      // One FUSE mount of AWS's per layer: both layers were taken remotely.
      const fuse = e.ns
        .newMounts()
        .map((m) => [m.fsType.split(".")[0], m.source, m.mountPoint.startsWith(`${s.root}/snapshotter/snapshots/`)]);
      expect(fuse).toEqual(pyManifest.layers.map(() => ["fuse", "soci", true]));
      const served = (await e.registry.accessLog()).slice(before);
      expect(tsPyZtocs.size).toBe(pyManifest.layers.length);
      for (const z of tsPyZtocs.values())
        expect([z, blobGets(served, "e2e/ts-py", [z]).some((a) => a.status === 200)]).toEqual([z, true]);
      const layerGets = blobGets(
        served,
        "e2e/ts-py",
        pyManifest.layers.map((l) => l.digest),
      );
      const sent = layerGets.reduce((n, a) => n + a.bytes, 0);
      const total = pyManifest.layers.reduce((n, l) => n + l.size, 0);
      console.log(
        `AWS SOCI ${soci.debVersion}, soci-ts's index: the registry sent ${sent} of ${total} layer bytes in ${layerGets.length} requests`,
      );
      expect(layerGets.length).toBeGreaterThan(0);
      expect(layerGets.filter((a) => a.status !== 206)).toEqual([]);
      expect(sent).toBeLessThan(total * 0.3);

      await ctr(["image", "rm", "--sync", ref.tsPy]);
      expect(await s.stop()).toBe(0);
      awsSnapshotter = undefined;
      expect(e.ns.newMounts()).toEqual([]);
    },
    5 * MINUTES,
  );
});

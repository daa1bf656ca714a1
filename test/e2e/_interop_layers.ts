/**
 * Helpers of the AWS SOCI interoperability suite (aws_interop.test.ts):
 *  - `buildEdgeLayers`: four layers made by the tools publishers use (GNU tar in pax, gnu and ustar formats,
 *    gzip, pigz), holding what a zTOC must describe exactly: PAX records (xattrs, binary file capabilities,
 *    sub-second and pre-1970 mtimes, long names and link targets), GNU long-name headers, hard and symbolic
 *    links, devices, a FIFO, setuid/setgid/sticky modes, numeric owners without names, UTF-8 names,
 *    whiteouts; compressed as gzip -n, as a gzip with FEXTRA/FNAME/FCOMMENT header fields, as two
 *    concatenated gzip members (gzip, then pigz --independent), and not at all;
 *  - `ztocDifferences`: which fields of two zTOCs differ, to say exactly why two builders disagree.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import { MediaType } from "../../src/oci/media_types.ts";
import { decodeZtoc, encodeZtoc } from "../../src/ztoc/codec.ts";
import type { Ztoc } from "../../src/ztoc/types.ts";
import { decodeGzipZinfo, encodeGzipZinfo } from "../../src/ztoc/zinfo_gzip.ts";
import { sha256Digest } from "../../src/util/digest.ts";
import { Rand } from "../_harness/rand.ts";
import type { PrebuiltLayer } from "../_harness/registry.ts";

/** A layer's tar stream: what `buildEdgeLayers` stages and how it is archived and compressed. */
interface EdgeLayerSpec {
  /** Stages the layer's files under `dir`. */
  stage(dir: string): void;
  /** GNU tar `--format`. */
  format: "pax" | "gnu" | "ustar";
  /** Compression of the tar stream: the blob, and where each of its gzip members starts (none: not gzip). */
  compress: (tar: Uint8Array) => { blob: Uint8Array; members: number[] };
}

/** All mtimes not set on purpose: 2023-11-14T22:13:20.5Z (a PAX mtime with a fraction). */
const MTIME = "@1700000000.5";

const sh = (cmd: string, args: string[], opts: { cwd?: string; input?: Uint8Array } = {}): Uint8Array => {
  const r = spawnSync(cmd, args, { cwd: opts.cwd, input: opts.input, maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`Cannot build an edge layer: ${cmd} failed: ${r.stderr}`);
  return new Uint8Array(r.stdout);
};

/** A text of `n` bytes: numbered lines, compressible as source code is. */
function text(seed: string, n: number): string {
  const r = new Rand(seed);
  const words = ["span", "checkpoint", "layer", "zTOC", "inflate", "window", "digest", "offset", "tar", "gzip"];
  let s = "";
  for (let i = 0; s.length < n; i++)
    s += `${i}: ${words[r.int(words.length)]} ${words[r.int(words.length)]} ${r.u32()}\n`;
  return s.slice(0, n);
}

/** Sets every mtime under `dir` (symlinks themselves included) to MTIME. */
function touchAll(dir: string): void {
  sh("find", [dir, "-exec", "touch", "-h", "-d", MTIME, "{}", "+"]);
}

/** `file` → `content` with mode; parents made. */
function put(dir: string, file: string, content: string | Uint8Array, mode = 0o644): void {
  const p = join(dir, file);
  mkdirSync(join(p, ".."), { recursive: true });
  writeFileSync(p, content, { mode });
  spawnSync("chmod", [mode.toString(8), p]);
}

const LONG_DIR = `long/${"directory-name-".repeat(5)}`;
const LONG_FILE = `${LONG_DIR}/${"file-name-".repeat(6)}.txt`;

const LAYERS: EdgeLayerSpec[] = [
  {
    // Layer 1: pax with xattrs, everything a root file system holds; gzip -n -6.
    format: "pax",
    stage(d) {
      put(d, "bin/tool", new Rand("tool").bytes(8 << 10), 0o4755);
      put(d, "bin/tool-sgid", text("sgid", 3000), 0o2755);
      spawnSync("ln", [join(d, "bin/tool"), join(d, "bin/tool-hardlink")]);
      put(d, "data/random.bin", new Rand("random").bytes(1536 << 10)); // stored deflate blocks
      put(d, "data/text.txt", text("text", 1536 << 10));
      put(d, "data/empty", "");
      put(d, "data/cap", "a file with capabilities\n", 0o755);
      sh("setcap", ["cap_net_raw+ep", join(d, "data/cap")]);
      sh("setfattr", ["-n", "user.bin", "-v", "0x00ff80", join(d, "data/cap")]);
      sh("setfattr", ["-n", "user.soci", "-v", "interop", join(d, "data/text.txt")]);
      mkdirSync(join(d, "dev"));
      sh("mknod", ["-m", "666", join(d, "dev/null"), "c", "1", "3"]);
      sh("mknod", ["-m", "660", join(d, "dev/loop7"), "b", "7", "7"]);
      mkdirSync(join(d, "run"));
      sh("mkfifo", ["-m", "600", join(d, "run/fifo")]);
      put(d, "tmp/old.txt", "removed by the opaque tmp/ of layer 2\n");
      spawnSync("chmod", ["1777", join(d, "tmp")]);
      put(d, "home/user/notes.txt", text("notes", 5000), 0o600);
      sh("chown", ["-R", "1234:5678", join(d, "home/user")]);
      put(d, LONG_FILE, "a path longer than 100 bytes (a PAX path record)\n");
      symlinkSync(`/${LONG_FILE}`, join(d, "long-target-link"));
      put(d, "usr/lib/libx.so.1", text("libx", 20_000));
      symlinkSync("usr/lib", join(d, "lib"));
      put(d, "données/été.txt", "UTF-8 names\n");
      put(d, "times/old", "before 1970\n");
      put(d, "times/future", "after 2100\n");
      touchAll(d);
      sh("touch", ["-d", "1969-07-20T20:17:40Z", join(d, "times/old")]);
      sh("touch", ["-d", "2200-01-01T00:00:00.000000001Z", join(d, "times/future")]);
    },
    compress: (tar) => ({ blob: sh("gzip", ["-n", "-6", "-c"], { input: tar }), members: [0] }),
  },
  {
    // Layer 2: gnu format (././@LongLink headers), whiteouts; a gzip header with FEXTRA, FNAME and FCOMMENT.
    format: "gnu",
    stage(d) {
      put(d, `gnu/${"a-long-gnu-name-".repeat(8)}`, text("gnu", 70_000));
      put(d, "data/.wh.empty", "");
      put(d, "tmp/.wh..wh..opq", "");
      put(d, "tmp/new.txt", "the only file of tmp/ now\n");
      put(d, "data/text.txt", text("text v2", 300_000)); // replaces layer 1's (and drops its xattr)
      touchAll(d);
    },
    compress: (tar) => ({ blob: withHeaderFields(new Uint8Array(gzipSync(tar, { level: 9 }))), members: [0] }),
  },
  {
    // Layer 3: ustar; two gzip members: gzip -n -1 of the first part, pigz --independent of the rest.
    format: "ustar",
    stage(d) {
      put(d, "ustar/first.txt", text("first", 200_000));
      put(d, "ustar/random.bin", new Rand("ustar").bytes(300 << 10));
      put(d, "ustar/last.txt", text("last", 400_000));
      touchAll(d);
    },
    compress: (tar) => {
      const cut = 250_001; // inside ustar/random.bin's data: not on a block or file boundary
      const a = sh("gzip", ["-n", "-1", "-c"], { input: tar.subarray(0, cut) });
      const b = sh("pigz", ["-n", "-9", "--independent", "-b", "32", "-c"], { input: tar.subarray(cut) });
      const out = new Uint8Array(a.length + b.length);
      out.set(a);
      out.set(b, a.length);
      return { blob: out, members: [0, a.length] };
    },
  },
  {
    // Layer 4: pax, not compressed.
    format: "pax",
    stage(d) {
      put(d, "plain/readme.txt", text("plain", 150_000));
      put(d, "plain/random.bin", new Rand("plain").bytes(100 << 10), 0o755);
      touchAll(d);
    },
    compress: (tar) => ({ blob: tar, members: [] }),
  },
];

/** Adds FEXTRA (a 4-byte subfield), FNAME and FCOMMENT to a gzip member whose header is the minimal 10 bytes. */
function withHeaderFields(gz: Uint8Array): Uint8Array {
  if (gz[3] !== 0) throw new Error("Cannot add gzip header fields: the member already has flags");
  const enc = new TextEncoder();
  const extra = new Uint8Array([0x53, 0x54, 4, 0, 1, 2, 3, 4]); // subfield "ST", length 4
  const fields = [new Uint8Array([extra.length, 0]), extra, enc.encode("layer.tar\0"), enc.encode("made by a test\0")];
  const head = new Uint8Array(gz.subarray(0, 10));
  head[3] = 0x04 | 0x08 | 0x10; // FEXTRA | FNAME | FCOMMENT
  const parts = [head, ...fields, gz.subarray(10)];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** An edge layer: a `PrebuiltLayer` and the compressed offsets where its gzip members start (empty: not gzip). */
export interface EdgeLayer extends PrebuiltLayer {
  members: number[];
}

/**
 * Stages, archives (GNU tar, names sorted, xattrs kept, no atime/ctime records) and compresses the four
 * edge layers under `dir` (as root: devices, owners, capabilities). The tar streams differ between runs only
 * by nothing: every mtime is set.
 */
export function buildEdgeLayers(dir: string): EdgeLayer[] {
  return LAYERS.map((spec, i) => {
    const stage = join(dir, `stage-${i}`);
    mkdirSync(stage, { recursive: true });
    spec.stage(stage);
    const tar = sh(
      "tar",
      [
        `--format=${spec.format}`,
        "--sort=name",
        ...(spec.format === "pax" ? ["--xattrs", "--xattrs-include=*", "--pax-option=delete=atime,delete=ctime"] : []),
        "-C",
        stage,
        "-cf",
        "-",
        ...readdirSorted(stage),
      ],
      {},
    );
    const { blob, members } = spec.compress(tar);
    const gz = members.length > 0;
    if (gz && !Buffer.from(gunzipSync(blob)).equals(Buffer.from(tar)))
      throw new Error(`Cannot build edge layer ${i + 1}: its gzip stream does not give the tar back`);
    return { blob, tar, mediaType: gz ? MediaType.OCI_LAYER_GZIP : MediaType.OCI_LAYER, members };
  });
}

function readdirSorted(dir: string): string[] {
  return readdirSync(dir).sort();
}

/**
 * The fields in which zTOC `b` differs from `a` ("toc[12].mod_time: a … b …", "compression_info.checkpoints[3].in
 * …"), at most `limit` (default 20); when every decoded field agrees but the bytes differ, where the bytes do.
 * Empty when the bytes are equal.
 */
export function ztocDifferences(a: Uint8Array, b: Uint8Array, limit = 20): string[] {
  if (Buffer.from(a).equals(Buffer.from(b))) return [];
  const out: string[] = [];
  const note = (field: string, x: unknown, y: unknown) => {
    const s = (v: unknown) => (v instanceof Uint8Array ? `0x${Buffer.from(v).toString("hex")}` : JSON.stringify(v));
    if (s(x) !== s(y)) out.push(`${field}: ${s(x)} vs ${s(y)}`);
  };
  let za: Ztoc;
  let zb: Ztoc;
  try {
    za = decodeZtoc(a);
    zb = decodeZtoc(b);
  } catch (err) {
    return [`cannot decode: ${(err as Error).message}`];
  }
  for (const k of ["version", "buildToolIdentifier", "compressedArchiveSize", "uncompressedArchiveSize"] as const)
    note(k, za[k], zb[k]);
  const ca = za.compressionInfo;
  const cb = zb.compressionInfo;
  note("compression_info.algorithm", ca.algorithm, cb.algorithm);
  note("compression_info.max_span_id", ca.maxSpanId, cb.maxSpanId);
  for (let i = 0; i < Math.max(ca.spanDigests.length, cb.spanDigests.length); i++)
    note(`compression_info.span_digests[${i}]`, ca.spanDigests[i], cb.spanDigests[i]);
  if (ca.algorithm === "gzip" && cb.algorithm === "gzip") {
    const ga = decodeGzipZinfo(ca.checkpoints);
    const gb = decodeGzipZinfo(cb.checkpoints);
    note("checkpoints.version", ga.version, gb.version);
    note("checkpoints.span_size", ga.spanSizeBytes, gb.spanSizeBytes);
    note("checkpoints.count", ga.checkpoints.length, gb.checkpoints.length);
    for (let i = 0; i < Math.max(ga.checkpoints.length, gb.checkpoints.length); i++) {
      const [x, y] = [ga.checkpoints[i], gb.checkpoints[i]];
      if (x === undefined || y === undefined) {
        const c = (x ?? y)!;
        out.push(`checkpoints[${i}] only in ${x ? "the first" : "the second"}: in ${c.in} out ${c.out} bits ${c.bits}`);
        continue;
      }
      note(`checkpoints[${i}].in`, x.in, y.in);
      note(`checkpoints[${i}].out`, x.out, y.out);
      note(`checkpoints[${i}].bits`, x.bits, y.bits);
      if (!Buffer.from(x.window).equals(Buffer.from(y.window))) out.push(`checkpoints[${i}].window differs`);
    }
  } else note("compression_info.checkpoints", ca.checkpoints, cb.checkpoints);
  note("toc.length", za.toc.length, zb.toc.length);
  for (let i = 0; i < Math.min(za.toc.length, zb.toc.length); i++) {
    const [x, y] = [za.toc[i]!, zb.toc[i]!];
    for (const k of Object.keys(x) as Array<keyof typeof x>) {
      if (k === "xattrs") {
        const fa = x.xattrs.map((r) => `${r.key}=${Buffer.from(r.value).toString("hex")}`);
        const fb = y.xattrs.map((r) => `${r.key}=${Buffer.from(r.value).toString("hex")}`);
        note(`toc[${i}] ${x.name} xattrs`, fa, fb);
      } else note(`toc[${i}] ${x.name} ${k}`, x[k], y[k]);
    }
  }
  if (out.length === 0) {
    let i = 0;
    while (i < a.length && i < b.length && a[i] === b[i]) i++;
    out.push(`every decoded field agrees; the encodings differ from byte ${i} (lengths ${a.length} vs ${b.length})`);
  }
  return out.slice(0, limit);
}

/**
 * A gzip zTOC of a layer of several gzip members, as AWS SOCI before 0.14 writes it: its checkpoint builder
 * (gzip_zinfo.c's generate_zinfo_from_fp) stops at the first member's end (Z_STREAM_END), so checkpoints lie in
 * the first member only and the last span runs to the end of the layer, over every later member. 0.14.0
 * (commit 560e2ab6, "Support concatenated gzip (mgzip/pigz) in ztoc generation and extraction") resets the
 * inflater there and goes on, as soci-ts does. Takes a zTOC built that way (`ztoc`), keeps the checkpoints
 * before `secondMember` (the compressed offset where the second member starts), recomputes the last span's
 * digest over `layer`, and encodes it again.
 */
export function asFirstMemberOnly(ztoc: Uint8Array, layer: Uint8Array, secondMember: number): Uint8Array {
  const z = decodeZtoc(ztoc);
  const zinfo = decodeGzipZinfo(z.compressionInfo.checkpoints);
  const kept = zinfo.checkpoints.filter((c) => c.in < secondMember);
  const last = kept[kept.length - 1]!;
  const lastStart = last.in - (last.bits ? 1 : 0);
  return encodeZtoc({
    ...z,
    compressionInfo: {
      ...z.compressionInfo,
      maxSpanId: kept.length - 1,
      spanDigests: [
        ...z.compressionInfo.spanDigests.slice(0, kept.length - 1),
        sha256Digest(layer.subarray(lastStart)),
      ],
      checkpoints: encodeGzipZinfo(kept, zinfo.spanSizeBytes, { version: zinfo.version }),
    },
  });
}

/**
 * zTOC builder + extraction over real layers made by the system tools (GNU tar, gzip, pigz): every regular
 * file extracted through the zTOC (fetching only its spans) equals what `tar -x` writes, and the TOC metadata
 * equals what the extracted tree says.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  chownSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { needs } from "../_harness/env.ts";
import { Rand } from "../_harness/rand.ts";
import { writeTar } from "../../src/tar/writer.ts";
import { DigestMismatchError, FormatError, TarFormatError } from "../../src/util/errors.ts";
import { UnsupportedCompressionError, buildZtoc } from "../../src/ztoc/builder.ts";
import { decodeZtoc } from "../../src/ztoc/codec.ts";
import { extractFile } from "../../src/ztoc/extract.ts";
import { parseGoTime } from "../../src/ztoc/go_time.ts";
import { SpanTable } from "../../src/ztoc/spans.ts";
import type { Ztoc } from "../../src/ztoc/types.ts";

const enabled = needs(
  "ztoc builder e2e",
  "root",
  "tool:tar",
  "tool:gzip",
  "tool:pigz",
  "tool:setfattr",
  "tool:getfattr",
  "tool:mknod",
  "tool:mkfifo",
);

function run(cmd: string, args: string[], opts: { input?: Uint8Array; cwd?: string } = {}): Buffer {
  const r = spawnSync(cmd, args, { input: opts.input, cwd: opts.cwd, maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed: ${r.stderr?.toString()}`);
  return r.stdout;
}

/** The blob in uneven chunks, as a network stream would deliver it. */
async function* chunks(blob: Uint8Array, seed: string): AsyncGenerator<Uint8Array> {
  const rand = new Rand(seed);
  for (let i = 0; i < blob.length; ) {
    const n = 1 + rand.int(200_000);
    yield blob.subarray(i, i + n);
    i += n;
  }
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const utf8 = (s: string) => new TextEncoder().encode(s);

describe.skipIf(!enabled)("zTOC builder over real layers", () => {
  let dir = "";
  let tarBytes: Uint8Array;
  let extracted = "";
  const layers: Record<string, Uint8Array> = {};
  const longDir = `${"d".repeat(90)}/${"e".repeat(90)}`;
  const longName = `${longDir}/${"f".repeat(100)}.txt`; // > 255 chars

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "soci-ztoc-"));
    const src = join(dir, "src");
    const rand = new Rand("layer");
    mkdirSync(join(src, "bin"), { recursive: true });
    mkdirSync(join(src, "opq"), { recursive: true });
    mkdirSync(join(src, longDir), { recursive: true });
    writeFileSync(join(src, "bin", "tool"), rand.bytes(300_000)); // incompressible: stored blocks
    chmodSync(join(src, "bin", "tool"), 0o4755);
    writeFileSync(join(src, "big.txt"), rand.text(3_500_000)); // spans many spans
    writeFileSync(join(src, "mixed.bin"), new Uint8Array([...rand.bytes(200_000), ...rand.text(400_000)]));
    writeFileSync(join(src, "empty"), "");
    writeFileSync(join(src, ".wh.deleted"), "");
    writeFileSync(join(src, "opq", ".wh..wh..opq"), "");
    writeFileSync(join(src, "n".repeat(150)), "name longer than 100\n");
    writeFileSync(join(src, longName), rand.text(10_000));
    writeFileSync(join(src, "small.txt"), "hello\n");
    linkSync(join(src, "small.txt"), join(src, "hardlink.txt"));
    symlinkSync("small.txt", join(src, "symlink"));
    run("setfattr", ["-n", "user.soci", "-v", "lazy", join(src, "small.txt")]);
    run("setfattr", ["-n", "trusted.overlay.opaque", "-v", "y", join(src, "opq")]);
    for (let i = 0; i < 40; i++) writeFileSync(join(src, "bin", `f${i}`), rand.text(rand.int(20_000)));
    mkdirSync(join(src, "dev"));
    run("mknod", [join(src, "dev", "null"), "c", "1", "3"]);
    run("mknod", [join(src, "dev", "loop9"), "b", "7", "9"]);
    run("mkfifo", [join(src, "dev", "fifo")]);
    chownSync(join(src, "mixed.bin"), 1234, 5678);
    chownSync(join(src, "dev", "fifo"), 4321, 8765);
    utimesSync(join(src, "small.txt"), 1700000000.5, 1700000000.5);
    tarBytes = new Uint8Array(
      run("tar", [
        "--sort=name",
        "--format=pax",
        "--xattrs",
        "--xattrs-include=*",
        "--numeric-owner",
        "-C",
        src,
        "-cf",
        "-",
        ".",
      ]),
    );
    extracted = join(dir, "x");
    mkdirSync(extracted);
    run("tar", ["--xattrs", "--xattrs-include=*", "--same-owner", "-xpf", "-", "-C", extracted], { input: tarBytes });

    layers.tar = tarBytes;
    layers["gzip-1"] = new Uint8Array(run("gzip", ["-1", "-c"], { input: tarBytes }));
    layers["gzip-9"] = new Uint8Array(run("gzip", ["-9", "-c"], { input: tarBytes }));
    writeFileSync(join(dir, "layer.tar"), tarBytes);
    layers["gzip-fname"] = new Uint8Array(run("gzip", ["-6", "-c", join(dir, "layer.tar")])); // FNAME header field
    layers["pigz-b128"] = new Uint8Array(run("pigz", ["-b", "128", "-p", "2", "-c"], { input: tarBytes }));
    const third = Math.floor(tarBytes.length / 3);
    layers["multi-member"] = new Uint8Array(
      Buffer.concat(
        [0, 1, 2].map((k) =>
          run("gzip", ["-c"], { input: tarBytes.subarray(k * third, k === 2 ? undefined : (k + 1) * third) }),
        ),
      ),
    );
  }, 120_000);

  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  for (const [name, spanSizeBytes] of [
    ["tar", 65536],
    ["gzip-1", 65536],
    ["gzip-9", 262144],
    ["gzip-fname", 65536],
    ["pigz-b128", 100_000],
    ["multi-member", 65536],
    ["gzip-9", 4 << 20],
  ] as const) {
    test(`${name}, span ${spanSizeBytes}: every regular file extracts byte for byte; metadata matches tar -x`, async () => {
      const blob = layers[name]!;
      const algorithm = name === "tar" ? "uncompressed" : "gzip";
      const built = await buildZtoc(chunks(blob, name), { spanSizeBytes, algorithm });
      expect(built.digest).toBe(`sha256:${sha(built.bytes)}`);
      expect(built.warnings).toEqual([]);
      const ztoc = decodeZtoc(built.bytes);
      expect(ztoc).toEqual(built.ztoc);
      expect(ztoc.compressedArchiveSize).toBe(blob.length);
      // GNU tar pads to 10 KiB records; Go's reader stops after the two zero blocks.
      expect(ztoc.uncompressedArchiveSize).toBeLessThanOrEqual(tarBytes.length);
      expect(
        tarBytes.subarray(ztoc.uncompressedArchiveSize - 1024, ztoc.uncompressedArchiveSize).every((b) => b === 0),
      ).toBe(true);
      const spans = SpanTable.fromZtoc(ztoc);
      expect(spans.spanCount).toBeGreaterThan(spanSizeBytes < 1e6 ? 4 : 0);

      // Every regular file, through only its spans.
      const readRange = async (s: number, e: number) => blob.slice(s, e);
      let files = 0;
      for (const entry of ztoc.toc) {
        const path = join(extracted, entry.name);
        const st = lstatSync(path);
        expect([entry.name, entry.mode]).toEqual([entry.name, st.mode & 0o7777]);
        expect([entry.name, entry.uid, entry.gid]).toEqual([entry.name, st.uid, st.gid]);
        const t = parseGoTime(entry.modTime)!;
        expect([entry.name, t.sec]).toEqual([entry.name, Math.floor(st.mtimeMs / 1000)]);
        if (entry.type === "symlink") expect(entry.linkname).toBe(readlinkSync(path));
        if (entry.type === "dir") expect(st.isDirectory()).toBe(true);
        if (entry.type === "fifo") expect(st.isFIFO()).toBe(true);
        if (entry.type === "char" || entry.type === "block") {
          expect(entry.type === "char" ? st.isCharacterDevice() : st.isBlockDevice()).toBe(true);
          // Linux dev_t: major in bits 8..19, minor in bits 0..7 and 20..31.
          expect([entry.devmajor, entry.devminor]).toEqual([
            (st.rdev >> 8) & 0xfff,
            (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00),
          ]);
        }
        if (entry.type !== "reg") continue;
        const r = await extractFile(ztoc, entry.name, { readRange, spans });
        expect([entry.name, sha(r.data)]).toEqual([entry.name, sha(readFileSync(path))]);
        if (entry.uncompressedSize > 0) expect(r.fetchedBytes).toBeLessThanOrEqual(blob.length);
        files++;
      }
      expect(files).toBeGreaterThan(45);
      expect(
        ztoc.toc
          .filter((e) => ["char", "block", "fifo"].includes(e.type))
          .map((e) => [e.name, e.type, e.devmajor, e.devminor]),
      ).toEqual([
        ["./dev/fifo", "fifo", 0, 0],
        ["./dev/loop9", "block", 7, 9],
        ["./dev/null", "char", 1, 3],
      ]);
      const mixed = ztoc.toc.find((e) => e.name === "./mixed.bin")!;
      expect([mixed.uid, mixed.gid]).toEqual([1234, 5678]);

      // Hardlinks point at their target, and extraction follows them (tar --sort=name stores hardlink.txt first).
      const pair = ztoc.toc.filter((e) => e.name === "./hardlink.txt" || e.name === "./small.txt");
      const hard = pair.find((e) => e.type === "hardlink")!;
      const small = pair.find((e) => e.type === "reg")!;
      expect(hard.linkname).toBe(small.name);
      expect(new TextDecoder().decode((await extractFile(ztoc, hard.name, { readRange })).data)).toBe("hello\n");
      // Long names, whiteouts, empty files, xattrs and sub-second mtimes.
      expect(ztoc.toc.some((e) => e.name === `./${longName}`)).toBe(true);
      expect(ztoc.toc.some((e) => e.name === `./${"n".repeat(150)}`)).toBe(true);
      expect(ztoc.toc.find((e) => e.name === "./opq/.wh..wh..opq")?.uncompressedSize).toBe(0);
      expect(ztoc.toc.find((e) => e.name === "./.wh.deleted")?.type).toBe("reg");
      expect(small.xattrs.find((x) => x.key === "SCHILY.xattr.user.soci")?.value).toEqual(utf8("lazy"));
      expect(small.modTime).toBe("2023-11-14T22:13:20.5Z");
      const keys = small.xattrs.map((x) => x.key);
      expect(keys).toEqual([...keys].sort());
      const opq = ztoc.toc.find((e) => e.name === "./opq/")!;
      expect(opq.xattrs.find((x) => x.key === "SCHILY.xattr.trusted.overlay.opaque")?.value).toEqual(utf8("y"));
      expect(
        run("getfattr", ["--only-values", "-n", "trusted.overlay.opaque", join(extracted, "opq")]).toString(),
      ).toBe("y");

      // A small file from a many-span layer fetches a fraction of the blob.
      if (spans.spanCount > 4) {
        const r = await extractFile(ztoc, small.name, { readRange });
        expect(r.fetchedBytes).toBeLessThan(blob.length / 2);
      }
    }, 120_000);
  }

  test.skipIf(!needs("zran reference", "tool:python3"))(
    "checkpoint blobs equal an independent zlib (zran/SOCI algorithm) reference, byte for byte",
    async () => {
      const script = join(import.meta.dir, "fixtures", "zran_reference.py");
      for (const [name, spanSizeBytes] of [
        ["gzip-1", 65536],
        ["gzip-9", 262144],
        ["gzip-fname", 65536],
        ["pigz-b128", 100_000],
        ["multi-member", 65536],
      ] as const) {
        const blob = layers[name]!;
        const file = join(dir, `${name}.gz`);
        writeFileSync(file, blob);
        const reference = new Uint8Array(run("python3", [script, file, String(spanSizeBytes)]));
        const { ztoc } = await buildZtoc(chunks(blob, `ref-${name}`), { spanSizeBytes, algorithm: "gzip" });
        const ours = ztoc.compressionInfo.checkpoints;
        expect([name, ours.length]).toEqual([name, reference.length]);
        expect([name, sha(ours)]).toEqual([name, sha(reference)]);
      }
    },
    120_000,
  );

  test("empty gzip members in front: repeated checkpoints at out 0 decode, validate and extract", async () => {
    const empty = new Uint8Array(run("gzip", ["-c"], { input: new Uint8Array(0) }));
    const tar = writeTar([
      { name: "a.txt", data: "after empty members\n" },
      { name: "b.bin", data: new Rand("e").bytes(5000) },
    ]);
    const blob = new Uint8Array(Buffer.concat([empty, empty, run("gzip", ["-c"], { input: tar })]));
    const built = await buildZtoc(chunks(blob, "empty"), { spanSizeBytes: 1024, algorithm: "gzip" });
    const ztoc = decodeZtoc(built.bytes);
    const spans = SpanTable.fromZtoc(ztoc);
    expect(spans.checkpoints.slice(0, 3).map((c) => c.out)).toEqual([0, 0, 0]);
    if (needs("zran reference", "tool:python3")) {
      const file = join(dir, "empty-members.gz");
      writeFileSync(file, blob);
      const reference = new Uint8Array(
        run("python3", [join(import.meta.dir, "fixtures", "zran_reference.py"), file, "1024"]),
      );
      expect(sha(ztoc.compressionInfo.checkpoints)).toBe(sha(reference));
    }
    for (const name of ["a.txt", "b.bin"]) {
      const got = await extractFile(ztoc, name, { readRange: async (s, e) => blob.slice(s, e) });
      const want = tar.subarray(
        got.entry.uncompressedOffset,
        got.entry.uncompressedOffset + got.entry.uncompressedSize,
      );
      expect(sha(got.data)).toBe(sha(want));
    }
  });

  test("the same layer gives the same bytes whatever the chunking; the build tool identifier is an option", async () => {
    const blob = layers["gzip-9"]!;
    const a = await buildZtoc(chunks(blob, "a"), { spanSizeBytes: 65536, algorithm: "gzip" });
    const b = await buildZtoc(
      new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(blob);
          c.close();
        },
      }),
      { spanSizeBytes: 65536, algorithm: "gzip" },
    );
    expect(b.digest).toBe(a.digest);
    expect(a.ztoc.buildToolIdentifier).toBe("soci-ts v0.1.0");
    const soci = await buildZtoc(chunks(blob, "a"), {
      spanSizeBytes: 65536,
      algorithm: "gzip",
      buildToolIdentifier: "AWS SOCI CLI v0.2",
    });
    expect(soci.ztoc.buildToolIdentifier).toBe("AWS SOCI CLI v0.2");
    expect({ ...soci.ztoc, buildToolIdentifier: "" }).toEqual({ ...a.ztoc, buildToolIdentifier: "" });
  });

  test("a wrong span digest makes extraction refuse, before inflating", async () => {
    const blob = layers["gzip-1"]!;
    const { ztoc } = await buildZtoc(chunks(blob, "d"), { spanSizeBytes: 65536, algorithm: "gzip" });
    const spans = SpanTable.fromZtoc(ztoc);
    const target = ztoc.toc.find((e) => e.name === "./big.txt")!;
    const id = spans.spanIdForOffset(target.uncompressedOffset + 100_000);
    const corrupt = async (s: number, e: number) => {
      const b = blob.slice(s, e);
      const at = spans.compressedRange(id).start + 5 - s;
      b[at] = b[at]! ^ 0xff;
      return b;
    };
    const err = await extractFile(ztoc, "big.txt", { readRange: corrupt }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DigestMismatchError);
    expect((err as Error).message).toContain(`span ${id}`);
    const forged: Ztoc = structuredClone(ztoc);
    forged.compressionInfo.spanDigests[id] = `sha256:${"0".repeat(64)}`;
    expect(extractFile(forged, "big.txt", { readRange: async (s, e) => blob.slice(s, e) })).rejects.toBeInstanceOf(
      DigestMismatchError,
    );
  });

  test("a truncated gzip layer fails with a format error", async () => {
    const blob = layers["gzip-9"]!;
    const cut = blob.subarray(0, Math.floor(blob.length * 0.6));
    const err = await buildZtoc(chunks(cut, "t"), { spanSizeBytes: 65536, algorithm: "gzip" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FormatError);
  });
});

describe("zTOC builder: inputs SOCI refuses or flags", () => {
  const one = (b: Uint8Array) =>
    (async function* () {
      yield b;
    })();

  test("zstd is not supported (callers skip the layer)", async () => {
    const err = await buildZtoc(one(new Uint8Array(10)), { algorithm: "zstd", spanSizeBytes: 1024 }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(UnsupportedCompressionError);
    expect((err as Error).message).toBe(
      'Cannot build zTOC: compression "zstd" is not supported (expected one of gzip, uncompressed)',
    );
  });

  test("an entry named ../x is kept raw in the TOC and reported", async () => {
    const tar = writeTar([
      { name: "ok", data: "1" },
      { name: "../x", data: "evil" },
      { name: "/abs", data: "" },
    ]);
    const r = await buildZtoc(one(tar), { algorithm: "uncompressed", spanSizeBytes: 1024 });
    expect(r.ztoc.toc.map((e) => e.name)).toEqual(["ok", "../x", "/abs"]);
    expect(r.warnings.map((w) => [w.name, w.reason])).toEqual([
      ["../x", "path escapes the layer root with '..'"],
      ["/abs", "absolute path"],
    ]);
    const x = await extractFile(r.ztoc, "../x", { readRange: async (s, e) => tar.slice(s, e) });
    expect(new TextDecoder().decode(x.data)).toBe("evil");
  });

  test("a PAX global header is an unsupported entry, as in SOCI", async () => {
    const g = writeTar([{ name: "pax_global_header", data: "" }]);
    g[156] = "g".charCodeAt(0);
    const { setChecksum } = await import("../../src/tar/writer.ts");
    setChecksum(g.subarray(0, 512));
    const err = await buildZtoc(one(g), { algorithm: "uncompressed", spanSizeBytes: 1024 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TarFormatError);
    expect((err as Error).message).toMatch(
      /unsupported input tar entry "pax_global_header" with typeflag "g" at offset 0/,
    );
  });

  test("uncompressed layers: fixed spans, TarZinfo, the last span short", async () => {
    const tar = writeTar([{ name: "a", data: new Rand(5).bytes(5000) }]);
    const r = await buildZtoc(one(tar), { algorithm: "uncompressed", spanSizeBytes: 4096 });
    const ci = r.ztoc.compressionInfo;
    expect(ci.algorithm).toBe("uncompressed");
    expect(ci.maxSpanId).toBe(Math.ceil(tar.length / 4096) - 1);
    expect(ci.spanDigests[1]).toBe(`sha256:${sha(tar.subarray(4096, 8192))}`);
    expect(decodeZtoc(r.bytes).compressionInfo).toEqual(ci);
  });
});

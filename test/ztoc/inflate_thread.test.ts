/**
 * The zTOC builder with gzip inflated on a thread of its own (`inflateThread`, the tar headers read there too)
 * gives the same zTOC bytes (and a model equal to them) and the same errors as inflating inline (gzip errors and
 * the tar reader's, which now come from that thread), from every kind of source and for every kind of tar header
 * (PAX records with binary xattrs, GNU long names), never takes over a source's own buffers, and ends its thread
 * when the build stops early.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { workerGzipAvailable } from "../../src/ztoc/layer_backends.ts";
import { OciLayout } from "../../src/registry/oci_layout.ts";
import { TarReader } from "../../src/tar/reader.ts";
import { setChecksum, type TarWriteEntry, writeTar } from "../../src/tar/writer.ts";
import { GzipFormatError, TarFormatError } from "../../src/util/errors.ts";
import { buildZtoc } from "../../src/ztoc/builder.ts";
import { decodeZtoc } from "../../src/ztoc/codec.ts";
import { within } from "../_harness/liveness.ts";
import { Rand } from "../_harness/rand.ts";

const root = mkdtempSync(join(tmpdir(), "soci-inflate-thread-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/**
 * A seeded tar of `files` files (text and random bytes, some spanning several 1 MiB chunks once compressed), some
 * with PAX records (binary xattrs, sub-second mtimes, long names) or GNU long names, and a few links.
 */
function tarOf(seed: string, files: number): Uint8Array {
  const r = new Rand(seed);
  const entries: TarWriteEntry[] = [{ name: "d/", type: "dir" }];
  for (let i = 0; i < files; i++) {
    const size = r.int(8) === 0 ? r.int(3_000_000) : r.int(60_000);
    const long = r.int(6) === 0 ? `${"long-dir/".repeat(12 + r.int(8))}` : "";
    const entry: TarWriteEntry = {
      name: `d/${long}f${i}`,
      data: r.int(2) ? r.text(size) : r.bytes(size),
      mode: 0o644,
      uid: r.int(3),
      gid: 0,
    };
    if (long && r.int(2)) entry.gnuLongNames = true;
    if (r.int(5) === 0) entry.xattrs = { "security.capability": r.bytes(20), "user.note": `f${i}` };
    if (r.int(7) === 0) entry.mtime = 1_700_000_000.25 + i;
    entries.push(entry);
    if (r.int(10) === 0) entries.push({ name: `d/l${i}`, type: "symlink", linkname: entry.name });
  }
  return writeTar(entries);
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** The blob in uneven chunks, all views into the blob's own buffer (as some sources hand them out). */
async function* chunks(blob: Uint8Array, seed: string): AsyncGenerator<Uint8Array> {
  const rand = new Rand(seed);
  for (let i = 0; i < blob.length; ) {
    const n = 1 + rand.int(3_000_000);
    yield blob.subarray(i, i + n);
    i += n;
  }
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/**
 * Builds `blob` (in chunks seeded by `seed`) inline and on the inflate thread: both fail with a `cls` error of the
 * same message and offset.
 */
async function expectSameError(
  blob: Uint8Array,
  seed: string,
  cls: typeof GzipFormatError | typeof TarFormatError,
): Promise<void> {
  const inline = await buildZtoc(chunks(blob, seed), { algorithm: "gzip" }).catch((e: unknown) => e);
  const threaded = await buildZtoc(chunks(blob, seed), { algorithm: "gzip", inflateThread: true }).catch(
    (e: unknown) => e,
  );
  expect(inline).toBeInstanceOf(cls);
  expect(threaded).toBeInstanceOf(cls);
  expect((threaded as GzipFormatError).message).toBe((inline as GzipFormatError).message);
  expect((threaded as GzipFormatError).offset).toBe((inline as GzipFormatError).offset);
}

describe.skipIf(!workerGzipAvailable())("zTOC builder, inflating on a thread", () => {
  const big = tarOf("inflate thread big", 120);
  const blobs: Record<string, Uint8Array> = {
    "one member, several MiB": new Uint8Array(gzipSync(big, { level: 6 })),
    "members cut anywhere": concat(
      [0, 1, 2, 3].map(
        (k) =>
          new Uint8Array(
            gzipSync(big.subarray(k * 1_234_567, k === 3 ? undefined : (k + 1) * 1_234_567), { level: 1 }),
          ),
      ),
    ),
    "smaller than a chunk": new Uint8Array(gzipSync(tarOf("inflate thread small", 3), { level: 9 })),
  };

  for (const [name, blob] of Object.entries(blobs)) {
    test(`${name}: the same zTOC bytes from uneven chunks, a Blob stream and an OCI layout byte stream`, async () => {
      const expected = (await buildZtoc(chunks(blob, name), { algorithm: "gzip", spanSizeBytes: 1 << 20 })).bytes;
      const layout = new OciLayout(join(root, "layout"));
      const { digest } = await layout.putBlob(blob);
      const sources = [
        chunks(blob, `${name} 2`),
        new Blob([blob as Uint8Array<ArrayBuffer>]).stream(),
        await layout.getBlobStream(digest),
      ];
      for (const source of sources) {
        const built = await buildZtoc(source, { algorithm: "gzip", spanSizeBytes: 1 << 20, inflateThread: true });
        expect(sha(built.bytes)).toBe(sha(expected));
        // The model returned is what the bytes say (its zinfo blob is the one packed into them).
        expect(decodeZtoc(built.bytes)).toEqual(built.ztoc);
      }
    }, 60_000);
  }

  test("a source's own buffers are never taken over (its chunks are copied before they go to the thread)", async () => {
    const blob = blobs["one member, several MiB"]!;
    const before = sha(blob);
    await buildZtoc(chunks(blob, "own buffers"), { algorithm: "gzip", inflateThread: true });
    expect(blob.buffer.byteLength).toBeGreaterThan(0); // not detached
    expect(sha(blob)).toBe(before);
  });

  test("bad gzip data fails with the error of the inline build (class, message, offset)", async () => {
    const good = blobs["one member, several MiB"]!;
    const corrupt = good.slice();
    for (let i = 2_000_000; i < 2_000_100; i++) corrupt[i] = 0xff;
    for (const blob of [good.subarray(0, 3_000_000), corrupt]) await expectSameError(blob, "bad", GzipFormatError);
  });

  test("a bad tar stream fails with the error of the inline build (class, message, offset), read on the thread", async () => {
    const tar = tarOf("inflate thread tar errors", 40);
    // A header's checksum broken past the first chunks (TarReader.push), the stream cut inside an entry's data
    // (TarReader.end).
    const entries = new TarReader().push(tar);
    const mid = entries[Math.floor(entries.length * 0.6)]!;
    const badSum = tar.slice();
    badSum[mid.headerOffset + 148] = badSum[mid.headerOffset + 148]! ^ 1;
    const last = entries.filter((e) => e.size > 1024).at(-1)!;
    const cut = tar.subarray(0, last.dataOffset + Math.floor(last.size / 2));
    const cases: Array<[string, Uint8Array]> = [
      ["bad checksum", new Uint8Array(gzipSync(badSum, { level: 1 }))],
      ["cut inside an entry", new Uint8Array(gzipSync(cut, { level: 1 }))],
    ];
    for (const [name, blob] of cases) await expectSameError(blob, name, TarFormatError);
  });

  test("errors in stream order: an unsupported entry before a broken header is the one reported, inline or not", async () => {
    // Entry 0 with typeflag 'Z' (checksum made right), then zeros, then a header whose checksum is broken.
    for (const zeros of [3_000_000, 10_000]) {
      const tar = writeTar([
        { name: "weird", data: "x" },
        { name: "zeros", data: new Uint8Array(zeros) },
        { name: "after", data: "y" },
      ]);
      tar[156] = "Z".charCodeAt(0);
      setChecksum(tar.subarray(0, 512));
      tar[3 * 512 + Math.ceil(zeros / 512) * 512 + 148]! ^= 1;
      const gz = new Uint8Array(gzipSync(tar));
      for (const inflateThread of [false, true]) {
        // In one chunk, and in small chunks.
        for (const source of [
          (async function* () {
            yield gz.slice();
          })(),
          chunks(gz, "stream order"),
        ]) {
          const err = await buildZtoc(source, { algorithm: "gzip", inflateThread }).catch((e: unknown) => e);
          expect(err).toBeInstanceOf(TarFormatError);
          expect((err as Error).message).toContain('unsupported input tar entry "weird" with typeflag "Z"');
        }
      }
    }
  });

  test("a tar error or an abort mid-way ends the build and its thread: the process exits by itself", async () => {
    // In a process of its own (test/ztoc/_early_exit_build.ts), which a worker left running would keep alive.
    for (const [mode, want] of [
      ["tar-error", /^TarFormatError: .*typeflag "Z" at offset \d+$/],
      ["abort", /^Error: stop here$/],
    ] as const) {
      const p = Bun.spawn([process.execPath, join(import.meta.dir, "_early_exit_build.ts"), mode], {
        stdout: "pipe",
        stderr: "pipe",
      });
      let code: number;
      try {
        code = await within(20_000, `the ${mode} build's process to exit`, p.exited);
      } finally {
        p.kill("SIGKILL");
      }
      const out = (await new Response(p.stdout).text()).trim();
      expect({ mode, code, out: out.replace(want, "<as expected>") }).toEqual({ mode, code: 0, out: "<as expected>" });
    }
  });
});

/**
 * Seeded zTOCs for the encoder tests (fb_writer.test.ts, toc_encoder.test.ts): every field shape, empty and
 * non-ASCII strings, binary xattr values, zero and large numbers, many distinct vtables.
 */
import type { EntryType, FileMetadata, Ztoc } from "../../src/ztoc/types.ts";
import type { Rand } from "../_harness/rand.ts";

const TYPES: EntryType[] = ["reg", "dir", "symlink", "hardlink", "char", "block", "fifo"];

/** Seeded text: empty one time in ten, else up to `max` characters, some of them non-ASCII. */
export function seededText(r: Rand, max: number): string {
  const pick = r.int(10);
  if (pick === 0) return "";
  const n = 1 + r.int(max);
  let s = "";
  for (let i = 0; i < n; i++) {
    const k = r.int(40);
    s += k === 0 ? "é" : k === 1 ? "日" : k === 2 ? "\u{1F600}" : String.fromCharCode(0x21 + r.int(90));
  }
  return s;
}

function number(r: Rand): number {
  const k = r.int(6);
  return k === 0
    ? 0
    : k === 1
      ? r.int(8)
      : k === 2
        ? r.int(2 ** 31)
        : k === 3
          ? 2 ** 32 + r.int(2 ** 20)
          : k === 4
            ? Number.MAX_SAFE_INTEGER - r.int(1000)
            : r.int(1 << 20);
}

/** A seeded TOC entry: every field shape, xattrs (binary values too) one time in four. */
export function seededEntry(r: Rand): FileMetadata {
  const xattrs = Array.from({ length: r.int(4) === 0 ? 1 + r.int(3) : 0 }, () => ({
    key: `user.${seededText(r, 8) || "k"}`,
    value: r.int(2) ? r.bytes(r.int(40)) : new TextEncoder().encode(seededText(r, 20)),
  }));
  return {
    name: seededText(r, 120),
    type: TYPES[r.int(TYPES.length)]!,
    uncompressedOffset: number(r),
    uncompressedSize: number(r),
    linkname: r.int(4) === 0 ? seededText(r, 60) : "",
    mode: r.int(3) === 0 ? 0 : r.int(0o7777),
    uid: r.int(3) === 0 ? 0 : r.int(3) === 0 ? 2 ** 31 + r.int(1000) : r.int(70000),
    gid: r.int(3) === 0 ? 0 : r.int(70000),
    uname: r.int(2) ? "root" : seededText(r, 12),
    gname: r.int(2) ? "root" : seededText(r, 12),
    modTime: r.int(5) === 0 ? "" : `2024-01-0${1 + r.int(9)}T12:00:00.${r.int(1000)}Z`,
    devmajor: r.int(5) === 0 ? number(r) : 0,
    devminor: r.int(5) === 0 ? number(r) : 0,
    xattrs,
  };
}

/** A seeded zTOC of `entries` entries (algorithm gzip, uncompressed or the empty one; any checkpoint bytes). */
export function seededZtoc(r: Rand, entries: number): Ztoc {
  const spans = r.int(6);
  return {
    version: "0.9",
    buildToolIdentifier: r.int(2) ? "AWS SOCI CLI v0.2" : seededText(r, 30),
    compressedArchiveSize: number(r),
    uncompressedArchiveSize: number(r),
    toc: Array.from({ length: entries }, () => seededEntry(r)),
    compressionInfo: {
      algorithm: (["gzip", "uncompressed", ""] as const)[r.int(3)] as "gzip",
      maxSpanId: spans - 1,
      spanDigests: Array.from({ length: spans }, (_, i) => `sha256:${String(i).padStart(64, "0")}`),
      checkpoints: r.bytes(r.int(3) === 0 ? 0 : r.int(100_000)),
    },
  };
}

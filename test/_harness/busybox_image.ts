/**
 * The smallest image that runs: Debian's statically linked busybox (`apt-get install busybox-static`) as
 * /bin/busybox, with /bin/sh linking to it. One layer of about 1 MB gzip, built in memory by `pushImage` of
 * registry.ts, so containerd end-to-end tests need no debootstrapped fixture.
 */
import { readFileSync } from "node:fs";
import type { TestFile } from "./registry.ts";

/** What `busyboxLayer` needs, for `needs()`: busybox (busybox-static's, checked by `busyboxLayer`). */
export const BUSYBOX_IMAGE_NEEDS = ["tool:busybox"] as const;

/** Where busybox-static installs busybox. */
export const BUSYBOX_PATH = "/bin/busybox";

/**
 * The files of a busybox layer: "bin/" (0755), "bin/busybox" (0755, the host's static binary) and
 * "bin/sh" → "busybox". Throws when the host's busybox is dynamically linked (the `busybox` package rather
 * than `busybox-static`): it would not run in an image without libc.
 */
export function busyboxLayer(): Record<string, TestFile> {
  const data = new Uint8Array(readFileSync(BUSYBOX_PATH));
  if (hasInterpreter(data))
    throw new Error(`Cannot use "${BUSYBOX_PATH}" in a test image: it is dynamically linked (install busybox-static)`);
  return {
    bin: { dir: true, mode: 0o755 },
    "bin/busybox": { data, mode: 0o755 },
    "bin/sh": { symlink: "busybox" },
  };
}

/** True when the ELF64 little-endian file has a PT_INTERP program header (a dynamic loader). */
function hasInterpreter(elf: Uint8Array): boolean {
  const v = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  // ELF header: magic 7f 'E' 'L' 'F', EI_CLASS (2 = 64-bit) at 4, EI_DATA (1 = little-endian) at 5,
  // e_phoff u64 at 32, e_phentsize u16 at 54, e_phnum u16 at 56; each program header starts with p_type u32.
  if (v.getUint32(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1)
    throw new Error(`Cannot use "${BUSYBOX_PATH}" in a test image: not a 64-bit little-endian ELF file`);
  const phoff = Number(v.getBigUint64(32, true));
  const phentsize = v.getUint16(54, true);
  const phnum = v.getUint16(56, true);
  const PT_INTERP = 3;
  for (let i = 0; i < phnum; i++) if (v.getUint32(phoff + i * phentsize, true) === PT_INTERP) return true;
  return false;
}

/** This machine's OCI platform (the busybox binary's), for `pushImage`'s `platform`. */
export const HOST_PLATFORM = { os: "linux", architecture: process.arch === "x64" ? "amd64" : process.arch } as const;

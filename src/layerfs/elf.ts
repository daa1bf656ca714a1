/**
 * What an ELF executable or shared library needs before it can run, read from its headers (entry_program.ts
 * prefetches those files): the program interpreter (PT_INTERP, which the kernel loads) and the dynamic section's
 * DT_NEEDED libraries with the directories to search (DT_RPATH, DT_RUNPATH), as the dynamic loader finds them.
 *
 * Layout read (ELF gABI; every field in the file's byte order, e_ident[EI_DATA]; sizes for ELFCLASS32 / 64):
 *   ELF header, at 0 (52 / 64 bytes):
 *     0   e_ident[16]   "\x7fELF", EI_CLASS (4: 1 = 32-bit, 2 = 64-bit), EI_DATA (5: 1 = little, 2 = big endian)
 *     16  e_type  u16   2 = ET_EXEC, 3 = ET_DYN (the others are not run)
 *     18  e_machine u16 (62 = x86-64, 183 = AArch64, …: the library directory's multiarch triplet)
 *     28 / 32  e_phoff  u32 / u64   where the program headers are
 *     42 / 54  e_phentsize u16      bytes per program header (32 / 56 at least)
 *     44 / 56  e_phnum u16          how many
 *   Program header (32 / 56 bytes each):
 *     0   p_type u32    1 = PT_LOAD, 2 = PT_DYNAMIC, 3 = PT_INTERP
 *     32-bit: 4 p_offset u32, 8 p_vaddr u32, 16 p_filesz u32
 *     64-bit: 8 p_offset u64, 16 p_vaddr u64, 32 p_filesz u64
 *   PT_INTERP: the interpreter's path, NUL-terminated.
 *   PT_DYNAMIC: entries of d_tag, d_val (8 / 16 bytes each) to DT_NULL (0): DT_NEEDED (1) and DT_RPATH (15),
 *     DT_RUNPATH (29) hold offsets into the string table at DT_STRTAB (5), a virtual address mapped to the file
 *     through the PT_LOAD segment holding it, DT_STRSZ (10) bytes long.
 * Every size read is bounded (headers 64 KiB, interpreter path 4 KiB, dynamic section 64 KiB, string table 4 MiB)
 * and every offset checked against the file's size: a hostile or truncated file gives `undefined` with the reason,
 * never a read outside the file or a read of gigabytes.
 */

/** Reads `length` bytes of the file at `offset` (fewer only at its end). */
export type FileReader = (offset: number, length: number) => Promise<Uint8Array>;

/** What an ELF file needs to run. */
export interface ElfNeeds {
  /** PT_INTERP's path ("/lib64/ld-linux-x86-64.so.2"), when it has one (a static or PIE-static binary has none). */
  interpreter?: string;
  /** DT_NEEDED, in order ("libc.so.6"). */
  needed: string[];
  /** DT_RPATH's directories (searched before LD_LIBRARY_PATH, and only when there is no DT_RUNPATH). */
  rpath: string[];
  /** DT_RUNPATH's directories (searched after LD_LIBRARY_PATH). */
  runpath: string[];
  /** e_machine. */
  machine: number;
  /** ELFCLASS64. */
  class64: boolean;
}

/** Not an ELF file we read, and why (for a debug line). */
export interface NotElf {
  why: string;
}

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_INTERP = 3;
const DT_NULL = 0;
const DT_NEEDED = 1;
const DT_STRTAB = 5;
const DT_STRSZ = 10;
const DT_RPATH = 15;
const DT_RUNPATH = 29;
const ET_EXEC = 2;
const ET_DYN = 3;

const MAX_HEADERS = 64 * 1024;
const MAX_INTERP = 4096;
const MAX_DYNAMIC = 64 * 1024;
const MAX_STRTAB = 4 * 1024 * 1024;
/** DT_NEEDED entries taken (glibc has no limit; real programs have tens). */
const MAX_NEEDED = 256;

/** Debian's multiarch triplet of an e_machine, for its library directories; undefined for others. */
export function multiarchTriplet(machine: number, class64: boolean): string | undefined {
  switch (machine) {
    case 62:
      return "x86_64-linux-gnu";
    case 183:
      return "aarch64-linux-gnu";
    case 3:
      return "i386-linux-gnu";
    case 40:
      return "arm-linux-gnueabihf";
    case 21:
      return "powerpc64le-linux-gnu";
    case 22:
      return class64 ? "s390x-linux-gnu" : undefined;
    case 243:
      return class64 ? "riscv64-linux-gnu" : undefined;
    default:
      return undefined;
  }
}

/** True when `head` (the first bytes of a file) starts like an ELF file. */
export function looksLikeElf(head: Uint8Array): boolean {
  return head.length >= 4 && head[0] === 0x7f && head[1] === 0x45 && head[2] === 0x4c && head[3] === 0x46;
}

/**
 * What the ELF file of `size` bytes read by `read` needs (see the file comment), or why it is not one we read;
 * `onInterpreter` hears of the interpreter as soon as it is read (before the dynamic section, often near the end
 * of the file). Throws only what `read` throws.
 */
export async function readElfNeeds(
  read: FileReader,
  size: number,
  opts: { onInterpreter?: (path: string) => void } = {},
): Promise<ElfNeeds | NotElf> {
  const head = await read(0, Math.min(size, 64));
  if (!looksLikeElf(head)) return { why: "no ELF magic" };
  if (head.length < 52) return { why: "truncated ELF header" };
  const class64 = head[4] === 2;
  if (!class64 && head[4] !== 1) return { why: `unknown ELF class ${head[4]}` };
  if (class64 && head.length < 64) return { why: "truncated ELF header" };
  const little = head[5] === 1;
  if (!little && head[5] !== 2) return { why: `unknown ELF byte order ${head[5]}` };
  const h = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const type = h.getUint16(16, little);
  if (type !== ET_EXEC && type !== ET_DYN) return { why: `ELF type ${type} is not run` };
  const machine = h.getUint16(18, little);
  const phoff = class64 ? u64(h, 32, little) : h.getUint32(28, little);
  const phentsize = h.getUint16(class64 ? 54 : 42, little);
  const phnum = h.getUint16(class64 ? 56 : 44, little);
  const minEntry = class64 ? 56 : 32;
  if (phnum === 0) return { why: "no program headers" };
  if (phentsize < minEntry) return { why: `program header size ${phentsize} below ${minEntry}` };
  const phBytes = phentsize * phnum;
  if (phBytes > MAX_HEADERS) return { why: `${phBytes} bytes of program headers` };
  if (phoff === undefined || phoff + phBytes > size) return { why: "program headers outside the file" };
  const phs = await read(phoff, phBytes);
  if (phs.length < phBytes) return { why: "program headers outside the file" };
  const p = new DataView(phs.buffer, phs.byteOffset, phs.byteLength);
  const loads: Array<{ offset: number; vaddr: number; filesz: number }> = [];
  let interp: { offset: number; filesz: number } | undefined;
  let dynamic: { offset: number; filesz: number } | undefined;
  for (let i = 0; i < phnum; i++) {
    const at = i * phentsize;
    const t = p.getUint32(at, little);
    if (t !== PT_LOAD && t !== PT_DYNAMIC && t !== PT_INTERP) continue;
    const offset = class64 ? u64(p, at + 8, little) : p.getUint32(at + 4, little);
    const vaddr = class64 ? u64(p, at + 16, little) : p.getUint32(at + 8, little);
    const filesz = class64 ? u64(p, at + 32, little) : p.getUint32(at + 16, little);
    if (offset === undefined || vaddr === undefined || filesz === undefined)
      return { why: "a program header's offset, address or size is beyond 2^53" };
    if (t === PT_LOAD) loads.push({ offset, vaddr, filesz });
    else if (t === PT_INTERP) interp ??= { offset, filesz };
    else dynamic ??= { offset, filesz };
  }
  const needs: ElfNeeds = { needed: [], rpath: [], runpath: [], machine, class64 };
  if (interp) {
    if (interp.filesz > MAX_INTERP || interp.offset + interp.filesz > size)
      return { why: "PT_INTERP outside the file or too long" };
    const path = cString(await read(interp.offset, interp.filesz), 0);
    if (path) {
      needs.interpreter = path;
      opts.onInterpreter?.(path);
    }
  }
  if (!dynamic) return needs;
  const dynSize = Math.min(dynamic.filesz, MAX_DYNAMIC);
  if (dynamic.offset + dynSize > size) return { why: "PT_DYNAMIC outside the file" };
  const dyn = await read(dynamic.offset, dynSize);
  const d = new DataView(dyn.buffer, dyn.byteOffset, dyn.byteLength);
  const entry = class64 ? 16 : 8;
  const needed: number[] = [];
  let strtab: number | undefined;
  let strsz: number | undefined;
  let rpath: number | undefined;
  let runpath: number | undefined;
  for (let at = 0; at + entry <= dyn.length; at += entry) {
    const tag = class64 ? d.getBigInt64(at, little) : BigInt(d.getInt32(at, little));
    const val = class64 ? u64(d, at + 8, little) : d.getUint32(at + 4, little);
    if (tag === BigInt(DT_NULL)) break;
    if (val === undefined) continue;
    switch (Number(tag)) {
      case DT_NEEDED:
        if (needed.length < MAX_NEEDED) needed.push(val);
        break;
      case DT_STRTAB:
        strtab = val;
        break;
      case DT_STRSZ:
        strsz = val;
        break;
      case DT_RPATH:
        rpath = val;
        break;
      case DT_RUNPATH:
        runpath = val;
        break;
    }
  }
  if (needed.length === 0 && rpath === undefined && runpath === undefined) return needs;
  if (strtab === undefined || strsz === undefined) return { why: "dynamic section without DT_STRTAB or DT_STRSZ" };
  const seg = loads.find((l) => strtab! >= l.vaddr && strtab! < l.vaddr + l.filesz);
  if (!seg) return { why: "DT_STRTAB in no PT_LOAD segment" };
  const strOffset = seg.offset + (strtab - seg.vaddr);
  const strBytes = Math.min(strsz, MAX_STRTAB, seg.offset + seg.filesz - strOffset);
  if (strOffset + strBytes > size) return { why: "the string table is outside the file" };
  const strs = await read(strOffset, strBytes);
  for (const off of needed) {
    const name = cString(strs, off);
    if (name) needs.needed.push(name);
  }
  const dirs = (off: number | undefined) =>
    off === undefined ? [] : (cString(strs, off) ?? "").split(":").filter((s) => s !== "");
  needs.rpath = dirs(rpath);
  needs.runpath = dirs(runpath);
  return needs;
}

/** A u64 field as a number; undefined beyond 2^53 (no real file has such offsets). */
function u64(v: DataView, at: number, little: boolean): number | undefined {
  const n = v.getBigUint64(at, little);
  return n > BigInt(Number.MAX_SAFE_INTEGER) ? undefined : Number(n);
}

/** The NUL-terminated string at `at` of `bytes` (UTF-8); undefined when empty, unterminated or outside. */
function cString(bytes: Uint8Array, at: number): string | undefined {
  if (at < 0 || at >= bytes.length) return undefined;
  const end = bytes.indexOf(0, at);
  if (end <= at) return undefined;
  return new TextDecoder().decode(bytes.subarray(at, end));
}

/**
 * Small ELF files for tests (layerfs/elf.ts, entry_program.ts): an ELF header, PT_LOAD over the whole file,
 * PT_INTERP and PT_DYNAMIC as asked, the interpreter path and string table after the program headers, `padding`
 * bytes, then the dynamic section at the end (where linkers put it, after the code).
 */
export interface TestElf {
  class64?: boolean;
  little?: boolean;
  /** e_type (default 2, ET_EXEC). */
  type?: number;
  /** e_machine (default 62, x86-64). */
  machine?: number;
  interpreter?: string;
  needed?: string[];
  rpath?: string;
  runpath?: string;
  /** Bytes between the string table and the dynamic section (default 0). */
  padding?: number;
}

/** The bytes of an ELF file as described by `e`. */
export function makeElf(e: TestElf): Uint8Array {
  const class64 = e.class64 ?? true;
  const little = e.little ?? true;
  const ehSize = class64 ? 64 : 52;
  const phSize = class64 ? 56 : 32;
  const needed = e.needed ?? [];
  const dynamic = needed.length > 0 || e.rpath !== undefined || e.runpath !== undefined;
  const phnum = 1 + (e.interpreter !== undefined ? 1 : 0) + (dynamic ? 1 : 0);
  const enc = new TextEncoder();
  // Strings: offset 0 is the empty string.
  const strs: number[] = [0];
  const strOff = (s: string) => {
    const at = strs.length;
    strs.push(...enc.encode(s), 0);
    return at;
  };
  const entries: Array<[number, number]> = needed.map((n) => [1, strOff(n)]);
  if (e.rpath !== undefined) entries.push([15, strOff(e.rpath)]);
  if (e.runpath !== undefined) entries.push([29, strOff(e.runpath)]);
  const interp = e.interpreter !== undefined ? [...enc.encode(e.interpreter), 0] : [];
  const interpAt = ehSize + phnum * phSize;
  const strAt = interpAt + interp.length;
  const dynAt = strAt + strs.length + (e.padding ?? 0);
  const dynEntry = class64 ? 16 : 8;
  const allEntries = dynamic ? [...entries, [5, 0x400000 + strAt], [10, strs.length], [0, 0]] : [];
  const size = dynAt + allEntries.length * dynEntry;
  const out = new Uint8Array(size);
  const v = new DataView(out.buffer);
  const word = (at: number, n: number) =>
    class64 ? v.setBigUint64(at, BigInt(n), little) : v.setUint32(at, n, little);
  out.set([0x7f, 0x45, 0x4c, 0x46, class64 ? 2 : 1, little ? 1 : 2, 1]);
  v.setUint16(16, e.type ?? 2, little);
  v.setUint16(18, e.machine ?? 62, little);
  word(class64 ? 32 : 28, ehSize); // e_phoff
  v.setUint16(class64 ? 54 : 42, phSize, little);
  v.setUint16(class64 ? 56 : 44, phnum, little);
  let ph = ehSize;
  const phdr = (type: number, offset: number, filesz: number) => {
    v.setUint32(ph, type, little);
    if (class64) {
      v.setBigUint64(ph + 8, BigInt(offset), little);
      v.setBigUint64(ph + 16, BigInt(0x400000 + offset), little);
      v.setBigUint64(ph + 32, BigInt(filesz), little);
    } else {
      v.setUint32(ph + 4, offset, little);
      v.setUint32(ph + 8, 0x400000 + offset, little);
      v.setUint32(ph + 16, filesz, little);
    }
    ph += phSize;
  };
  phdr(1, 0, size);
  if (e.interpreter !== undefined) phdr(3, interpAt, interp.length);
  if (dynamic) phdr(2, dynAt, allEntries.length * dynEntry);
  out.set(interp, interpAt);
  out.set(strs, strAt);
  for (let i = 0; i < (e.padding ?? 0); i++) out[strAt + strs.length + i] = (i * 131 + 7) & 0xff;
  allEntries.forEach(([tag, val], i) => {
    const at = dynAt + i * dynEntry;
    if (class64) {
      v.setBigInt64(at, BigInt(tag!), little);
      v.setBigUint64(at + 8, BigInt(val!), little);
    } else {
      v.setInt32(at, tag!, little);
      v.setUint32(at + 4, val!, little);
    }
  });
  return out;
}

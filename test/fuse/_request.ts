/** Builds raw FUSE request bytes and parses replies, for protocol tests without a mount. */
import { IN_HEADER_SIZE, OUT_HEADER_SIZE } from "../../src/fuse/abi.ts";

let nextUnique = 100n;

/** A request: in-header (len, opcode, unique, nodeid, uid 0, gid 0, pid 42) then `body`. */
export function request(
  opcode: number,
  nodeid: number,
  body: Uint8Array = new Uint8Array(0),
  unique = nextUnique++,
): Uint8Array {
  const out = new Uint8Array(IN_HEADER_SIZE + body.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, out.length, true);
  v.setUint32(4, opcode, true);
  v.setBigUint64(8, unique, true);
  v.setBigUint64(16, BigInt(nodeid), true);
  v.setUint32(32, 42, true);
  out.set(body, IN_HEADER_SIZE);
  return out;
}

/** Little-endian struct builder: `struct(["u32", 1], ["u64", 2], ["str", "name"])` (str gets a NUL). */
export function struct(...fields: Array<["u16" | "u32" | "u64", number | bigint] | ["str", string]>): Uint8Array {
  const parts: number[] = [];
  for (const [t, v] of fields) {
    if (t === "str") {
      for (const b of new TextEncoder().encode(v as string)) parts.push(b);
      parts.push(0);
      continue;
    }
    const n = t === "u16" ? 2 : t === "u32" ? 4 : 8;
    let x = BigInt(v);
    for (let i = 0; i < n; i++) {
      parts.push(Number(x & 0xffn));
      x >>= 8n;
    }
  }
  return new Uint8Array(parts);
}

export interface Reply {
  len: number;
  error: number;
  unique: bigint;
  body: Uint8Array;
  v: DataView;
}

/** Parses a reply; `v` views the body. */
export function parseReply(bytes: Uint8Array | undefined): Reply {
  if (!bytes) throw new Error("no reply");
  const h = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const body = bytes.subarray(OUT_HEADER_SIZE);
  return {
    len: h.getUint32(0, true),
    error: h.getInt32(4, true),
    unique: h.getBigUint64(8, true),
    body,
    v: new DataView(body.buffer, body.byteOffset, body.byteLength),
  };
}

export interface Dirent {
  ino: number;
  off: number;
  type: number;
  name: string;
  nodeid?: number;
}

/** Parses READDIR (or READDIRPLUS when `plus`) records. */
export function parseDirents(body: Uint8Array, plus: boolean): Dirent[] {
  const v = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const out: Dirent[] = [];
  let p = 0;
  while (p < body.length) {
    const nodeid = plus ? Number(v.getBigUint64(p, true)) : undefined;
    if (plus) p += 128;
    const namelen = v.getUint32(p + 16, true);
    out.push({
      ino: Number(v.getBigUint64(p, true)),
      off: Number(v.getBigUint64(p + 8, true)),
      type: v.getUint32(p + 20, true),
      name: new TextDecoder().decode(body.subarray(p + 24, p + 24 + namelen)),
      nodeid,
    });
    p += (24 + namelen + 7) & ~7;
  }
  return out;
}

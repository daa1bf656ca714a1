/**
 * Passthrough without a mount: INIT negotiation of 7.40 with flags2, OPEN replies with a backing id, and the
 * per-node mode rules (passthrough.ts) driven by request bytes against a fake set of backing files.
 */
import { describe, expect, test } from "bun:test";
import * as abi from "../../src/fuse/abi.ts";
import { BackingStream } from "../../src/fuse/direct_reads.ts";
import { ProtocolServer } from "../../src/fuse/protocol_server.ts";
import type { BackingFiles } from "../../src/fuse/passthrough.ts";
import { VfsBridge } from "../../src/vfs/bridge.ts";
import { MemoryTree } from "../../src/vfs/memory_tree.ts";
import { parseReply, request, struct } from "./_request.ts";

const O_DIRECT = 0o40000;

/** init_in of 7.36+: 64 bytes with flags2. */
function initBody(minor: number, flags2: number): Uint8Array {
  const b = new Uint8Array(64);
  b.set(
    struct(["u32", 7], ["u32", minor], ["u32", 128 * 1024], ["u32", 0x3fffffff | abi.FUSE_INIT_EXT], ["u32", flags2]),
  );
  return b;
}

class FakeBacking implements BackingFiles {
  readonly directFlag = O_DIRECT;
  readonly opened: string[] = [];
  readonly closed: number[] = [];
  next = 7;
  fail?: string;
  unusable = new Set<string>();
  open(path: string, size: number): number {
    if (this.fail) throw new Error(this.fail);
    if (this.unusable.has(path)) return 0;
    this.opened.push(`${path}:${size}`);
    return this.next++;
  }
  close(id: number): void {
    this.closed.push(id);
  }
}

function whole(path: string, size: number) {
  const stream = new BackingStream(path, [0, size], { indexed: false });
  stream.setPresent(0, true);
  return { stream, offset: 0, size };
}

async function setup(opts: { passthrough?: boolean; minor?: number; flags2?: number; attach?: boolean } = {}) {
  const t = new MemoryTree();
  const a = t.file("a", "aaaa");
  a.direct = whole("/cache/a", 4);
  const b = t.file("b", "bbbb");
  b.direct = { stream: new BackingStream("/cache/pack", [0, 100], { indexed: false }), offset: 10, size: 4 };
  b.direct.stream.setPresent(0, true);
  const errors: string[] = [];
  const backing = new FakeBacking();
  const s = new ProtocolServer(new VfsBridge(t.root), {
    passthrough: opts.passthrough ?? true,
    onError: (m) => errors.push(m),
  });
  if (opts.attach ?? true) s.attachBackingFiles(backing);
  const init = parseReply(
    await s.handle(request(abi.FUSE_INIT, 0, initBody(opts.minor ?? 45, opts.flags2 ?? abi.FUSE_PASSTHROUGH_FLAGS2))),
  );
  const call = async (op: number, node: number, body?: Uint8Array) =>
    parseReply(await s.handle(request(op, node, body)));
  const lookup = async (name: string) =>
    Number((await call(abi.FUSE_LOOKUP, 1, struct(["str", name]))).v.getBigUint64(0, true));
  const open = async (node: number, flags = 0) => {
    const r = await call(abi.FUSE_OPEN, node, struct(["u32", flags], ["u32", 0]));
    expect(r.error).toBe(0);
    return { fh: Number(r.v.getBigUint64(0, true)), flags: r.v.getUint32(8, true), backingId: r.v.getInt32(12, true) };
  };
  const release = (fh: number) => call(abi.FUSE_RELEASE, 0, struct(["u64", fh], ["u32", 0], ["u32", 0], ["u64", 0]));
  return { s, init, backing, errors, lookup, open, release };
}

describe("passthrough negotiation", () => {
  test("7.40, INIT_EXT, flags2 PASSTHROUGH and max_stack_depth 1 when wanted, attached and offered", async () => {
    const { s, init } = await setup();
    expect(init.error).toBe(0);
    expect(init.v.getUint32(4, true)).toBe(40);
    expect(init.v.getUint32(12, true) & abi.FUSE_INIT_EXT).toBe(abi.FUSE_INIT_EXT);
    expect(init.v.getUint32(32, true)).toBe(abi.FUSE_PASSTHROUGH_FLAGS2);
    expect(init.v.getUint32(36, true)).toBe(1);
    expect(s.negotiated).toMatchObject({ minor: 40, passthrough: true, flags2: abi.FUSE_PASSTHROUGH_FLAGS2 });
  });

  test("7.31 and no flags2 when not offered, not attached, not wanted or the kernel is older than 7.40", async () => {
    for (const o of [{ flags2: 0 }, { attach: false }, { passthrough: false }, { minor: 39 }]) {
      const { s, init, errors } = await setup(o);
      expect(init.v.getUint32(4, true)).toBe(Math.min(31, o.minor ?? 31));
      expect(init.v.getUint32(32, true)).toBe(0);
      expect(init.v.getUint32(36, true)).toBe(0);
      expect(init.v.getUint32(12, true) & abi.FUSE_INIT_EXT).toBe(0);
      expect(s.negotiated!.passthrough).toBe(false);
      // Said once when it was asked for but cannot be had.
      expect(errors.length).toBe(o.passthrough === false ? 0 : 1);
    }
  });
});

describe("passthrough opens", () => {
  test("a whole file is opened with FOPEN_PASSTHROUGH and a backing id, dropped at the node's last release", async () => {
    const { backing, lookup, open, release } = await setup();
    const a = await lookup("a");
    const first = await open(a);
    expect(first.flags & abi.FOPEN_PASSTHROUGH).toBe(abi.FOPEN_PASSTHROUGH);
    expect(first.backingId).toBe(7);
    expect(backing.opened).toEqual(["/cache/a:4"]);
    const second = await open(a);
    expect(second.backingId).toBe(7); // same node, same backing file
    expect(backing.opened.length).toBe(1);
    await release(first.fh);
    expect(backing.closed).toEqual([]);
    await release(second.fh);
    expect(backing.closed).toEqual([7]);
  });

  test("a file inside a bigger one, and an O_DIRECT first open, are ordinary; the mode holds until the last release", async () => {
    const { backing, lookup, open, release } = await setup();
    const b = await lookup("b");
    expect((await open(b)).flags & abi.FOPEN_PASSTHROUGH).toBe(0);
    const a = await lookup("a");
    const d = await open(a, O_DIRECT);
    expect(d.flags & abi.FOPEN_PASSTHROUGH).toBe(0);
    const n = await open(a); // while the O_DIRECT handle is open: still ordinary
    expect(n.flags & abi.FOPEN_PASSTHROUGH).toBe(0);
    await release(d.fh);
    await release(n.fh);
    expect((await open(a)).flags & abi.FOPEN_PASSTHROUGH).toBe(abi.FOPEN_PASSTHROUGH);
    expect(backing.opened).toEqual(["/cache/a:4"]);
  });

  test("an unusable backing file leaves that open ordinary; a failing passthrough turns it off for the mount", async () => {
    const { s, backing, errors, lookup, open, release } = await setup();
    const a = await lookup("a");
    backing.unusable.add("/cache/a");
    const o1 = await open(a);
    expect(o1.flags & abi.FOPEN_PASSTHROUGH).toBe(0);
    await release(o1.fh);
    backing.unusable.clear();
    backing.fail = 'Cannot pass reads of "/cache/a" through to the kernel: EPERM';
    const o2 = await open(a);
    expect(o2.flags & abi.FOPEN_PASSTHROUGH).toBe(0);
    await release(o2.fh);
    expect(errors.join("\n")).toContain("passthrough is off for this mount");
    backing.fail = undefined;
    expect((await open(a)).flags & abi.FOPEN_PASSTHROUGH).toBe(0);
    expect(s.passthroughStats()!.off).toContain("EPERM");
  });
});

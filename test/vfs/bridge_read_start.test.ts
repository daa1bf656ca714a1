/**
 * When a READ began (`RequestContext.readStartedMs`): the kernel's retry of a READ that failed on the same
 * handle (it reads the first page again inside the same read(2)) carries the failed READ's start, once.
 */
import { describe, expect, test } from "bun:test";
import { FUSE_ROOT_ID } from "../../src/fuse/abi.ts";
import { VfsBridge } from "../../src/vfs/bridge.ts";
import { S_IFREG, type Attr, type Node, type RequestContext } from "../../src/vfs/node.ts";

const ctx = { signal: new AbortController().signal, uid: 0, gid: 0, pid: 1 };

/** A file whose reads fail while `failing`, recording each read's start. */
class FlakyFile implements Node {
  failing = true;
  readonly starts: number[] = [];
  getattr(): Attr {
    return { ino: 1, mode: S_IFREG | 0o444, nlink: 1, uid: 0, gid: 0, size: 1 << 20, rdev: 0, mtimeNs: 0n };
  }
  async read(_offset: number, length: number, c: RequestContext): Promise<Uint8Array> {
    this.starts.push(c.readStartedMs!);
    if (this.failing) throw new Error("the registry did not answer in time");
    return new Uint8Array(length);
  }
}

/** Spin until performance.now() has moved past `t`, so a fresh start differs from `t`. */
function after(t: number): void {
  while (performance.now() <= t) {
    // a clock tick, not an ordering wait
  }
}

describe("READ start", () => {
  test("a failed READ's retry on the same handle keeps its start, once; other READs start afresh", async () => {
    const file = new FlakyFile();
    const bridge = new VfsBridge(file);
    const { fh } = await bridge.open(FUSE_ROOT_ID, 0, ctx);
    const { fh: other } = await bridge.open(FUSE_ROOT_ID, 0, ctx);
    const read = (h: number, offset: number, size: number) =>
      Promise.resolve(bridge.read(FUSE_ROOT_ID, h, offset, size, ctx)).catch((e: Error) => e);

    expect(await read(fh, 0, 128 * 1024)).toBeInstanceOf(Error); // readahead
    const first = file.starts[0]!;
    after(first);
    expect(await read(fh, 0, 4096)).toBeInstanceOf(Error); // the kernel's retry of its first page
    expect(file.starts[1]).toBe(first);
    after(first);
    expect(await read(other, 0, 4096)).toBeInstanceOf(Error); // another handle: its own read
    expect(file.starts[2]).toBeGreaterThan(first);
    expect(await read(fh, 0, 4096)).toBeInstanceOf(Error); // the retry was the only one: a new read
    expect(file.starts[3]).toBeGreaterThan(first);
    expect(await read(fh, 128 * 1024, 4096)).toBeInstanceOf(Error); // outside the failed READ: a new read
    expect(file.starts[4]).toBeGreaterThan(first);
    file.failing = false;
    expect(await read(fh, 0, 4096)).toEqual(new Uint8Array(4096)); // retry of READ 3, which failed
    expect(file.starts[5]).toBe(file.starts[3]!);
    bridge.release(FUSE_ROOT_ID, fh);
    bridge.release(FUSE_ROOT_ID, other);
    expect(bridge.openHandles).toBe(0);
  });
});

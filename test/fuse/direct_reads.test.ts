/**
 * Direct reads without threads or files: the main thread's table and a reader's side driven in chosen
 * interleavings, over an in-memory file system that records every fd opened, read and closed.
 */
import { describe, expect, test } from "bun:test";
import {
  BackingStream,
  DirectReadTable,
  DirectReader,
  FD_SLOTS,
  HANDLE_SLOTS,
  type DirectIo,
  type StreamDescriptor,
} from "../../src/fuse/direct_reads.ts";
import { Rand } from "../_harness/rand.ts";

/** An in-memory file system with fd bookkeeping; hooks run inside open/pread to interleave main-thread steps. */
class FakeFs implements DirectIo {
  readonly files = new Map<string, Uint8Array>();
  readonly open_ = new Map<number, Uint8Array>();
  readonly closed: number[] = [];
  nextFd = 100;
  opens = 0;
  onOpen?: (path: string) => void;
  onPread?: (fd: number) => void;
  /** Files whose bytes are "not in the page cache": pread answers -1 for them, as RWF_NOWAIT does. */
  readonly cold = new Set<string>();
  readonly #pathOf = new Map<number, string>();
  open(path: string): number {
    this.opens++;
    this.onOpen?.(path);
    const f = this.files.get(path);
    if (!f) throw Object.assign(new Error(`ENOENT: ${path}`), { code: "ENOENT" });
    const fd = this.nextFd++;
    this.open_.set(fd, f);
    this.#pathOf.set(fd, path);
    return fd;
  }
  size(fd: number): number {
    return this.#file(fd).byteLength;
  }
  pread(fd: number, buf: Uint8Array, at: number, length: number, position: number): number {
    const f = this.#file(fd);
    this.onPread?.(fd);
    if (this.cold.has(this.#pathOf.get(fd)!)) return -1;
    const part = f.subarray(position, position + length);
    buf.set(part, at);
    return part.byteLength;
  }
  close(fd: number): void {
    this.#file(fd);
    this.open_.delete(fd);
    this.closed.push(fd);
  }
  #file(fd: number): Uint8Array {
    const f = this.open_.get(fd);
    if (!f) throw Object.assign(new Error(`EBADF: fd ${fd}`), { code: "EBADF" });
    return f;
  }
}

/** A stream of the given segment sizes stored as /seg/<i> in `fs` (all present unless said otherwise). */
function setup(sizes: number[], opts: { present?: boolean } = {}) {
  const fs = new FakeFs();
  const rand = new Rand(`direct-${sizes.join(",")}`);
  const data = rand.bytes(sizes.reduce((a, b) => a + b, 0));
  const bounds = [0];
  for (const s of sizes) bounds.push(bounds[bounds.length - 1]! + s);
  const stream = new BackingStream("/seg/", bounds);
  sizes.forEach((_, i) => {
    fs.files.set(`/seg/${i}`, data.slice(bounds[i]!, bounds[i + 1]!));
    if (opts.present ?? true) stream.setPresent(i, true);
  });
  const posted = new Map<number, StreamDescriptor>();
  const table = new DirectReadTable({ onStream: (d) => posted.set(d.id, d), closeFd: (fd) => fs.close(fd) });
  const reader = new DirectReader(table.handles, table.addReader(), fs, (id) => posted.get(id));
  const out = new Uint8Array(1 << 20);
  const read = (fh: number, offset: number, size: number): Uint8Array | undefined => {
    const n = reader.read(fh, offset, size, out);
    return n < 0 ? undefined : out.slice(0, n);
  };
  return { fs, data, stream, table, reader, read, posted };
}

describe("direct reads", () => {
  test("a registered handle is read from its segment files, across boundaries, clamped at its end", () => {
    const { data, stream, table, read } = setup([1000, 0, 3000, 500]);
    expect(table.register(7, { stream, offset: 200, size: 3100 })).toBe(true);
    expect(read(7, 0, 100)).toEqual(data.subarray(200, 300));
    // Across segment 0, the empty segment 1 and into 2.
    expect(read(7, 700, 400)).toEqual(data.subarray(900, 1300));
    // The whole file, and past its end: clamped; at or after the end: zero bytes (EOF).
    expect(read(7, 0, 1 << 20)).toEqual(data.subarray(200, 3300));
    expect(read(7, 3000, 4096)).toEqual(data.subarray(3200, 3300));
    expect(read(7, 3100, 4096)!.byteLength).toBe(0);
    expect(table.stats()).toEqual({ direct: 5, handedOver: 0, handles: 1, cold: 0 });
  });

  test("bytes not in the page cache are handed over, counted as cold, and the fd stays cached for later", () => {
    const { fs, data, stream, table, read } = setup([1000, 1000]);
    table.register(3, { stream, offset: 0, size: 2000 });
    expect(read(3, 0, 10)).toEqual(data.subarray(0, 10));
    const opens = fs.opens;
    fs.cold.add("/seg/1");
    // A read touching the cold segment goes to the main thread; one within the warm segment does not.
    expect(read(3, 990, 20)).toBeUndefined();
    expect(read(3, 1500, 10)).toBeUndefined();
    expect(read(3, 100, 10)).toEqual(data.subarray(100, 110));
    expect(table.stats()).toEqual({ direct: 2, handedOver: 2, handles: 1, cold: 2 });
    // Once the bytes are cached, the same fds serve them: nothing was closed or reopened.
    fs.cold.clear();
    expect(read(3, 1500, 10)).toEqual(data.subarray(1500, 1510));
    expect(fs.closed).toEqual([]);
    expect(fs.opens).toBe(opens + 1);
  });

  test("reads spanning every segment of a long stream match the bytes, seeded offsets", () => {
    const sizes = Array.from({ length: 40 }, (_, i) => (i % 7 === 3 ? 0 : 1000 + i * 37));
    const { data, stream, table, read } = setup(sizes);
    table.register(1, { stream, offset: 0, size: data.byteLength });
    const r = new Rand("direct-offsets");
    for (let i = 0; i < 300; i++) {
      const off = r.int(data.byteLength);
      const len = 1 + r.int(9000);
      expect(read(1, off, len)).toEqual(data.subarray(off, Math.min(data.byteLength, off + len)));
    }
  });

  test("unknown, released and colliding handles are handed over", () => {
    const { stream, table, read } = setup([4096]);
    expect(read(5, 0, 10)).toBeUndefined();
    expect(table.register(5, { stream, offset: 0, size: 4096 })).toBe(true);
    // Same slot, other handle: not registered (its READs go to the main thread), the first stays.
    expect(table.register(5 + HANDLE_SLOTS, { stream, offset: 0, size: 10 })).toBe(false);
    expect(read(5 + HANDLE_SLOTS, 0, 10)).toBeUndefined();
    expect(read(5, 0, 10)).toBeDefined();
    table.unregister(5 + HANDLE_SLOTS); // not the slot's owner: no effect
    expect(read(5, 0, 10)).toBeDefined();
    table.unregister(5);
    expect(read(5, 0, 10)).toBeUndefined();
    expect(table.register(5 + HANDLE_SLOTS, { stream, offset: 0, size: 10 })).toBe(true);
    // Out of range handles, and sources outside the stream, are never registered.
    expect(table.register(0, { stream, offset: 0, size: 1 })).toBe(false);
    expect(table.register(2 ** 31, { stream, offset: 0, size: 1 })).toBe(false);
    expect(table.register(9, { stream, offset: 4000, size: 97 })).toBe(false);
    expect(table.register(9, { stream, offset: -1, size: 1 })).toBe(false);
  });

  test("a handle registered for one node never reads for another (a predecessor's handle of the same number)", () => {
    const { data, stream, table, reader } = setup([4096]);
    const out = new Uint8Array(4096);
    const readAs = (fh: number, nodeid: number): Uint8Array | undefined => {
      const n = reader.read(fh, 0, 100, out, [nodeid % 2 ** 32, Math.floor(nodeid / 2 ** 32)]);
      return n < 0 ? undefined : new Uint8Array(out.slice(0, n));
    };
    // This server opened node 2^32 + 7 as handle 9 (node ids above 32 bits included).
    const node = 2 ** 32 + 7;
    expect(table.register(9, { stream, offset: 1000, size: 3000 }, node)).toBe(true);
    expect(readAs(9, node)).toEqual(data.subarray(1000, 1100));
    // The kernel's READ with handle 9 from the predecessor, for node 7 or 2^33 + 7: handed over, not answered
    // with this handle's bytes (the main thread reads the node it names).
    expect(readAs(9, 7)).toBeUndefined();
    expect(readAs(9, 2 ** 33 + 7)).toBeUndefined();
    // The predecessor's RELEASE of handle 9 (node 7) leaves this server's registration; its own RELEASE ends it.
    table.unregister(9, 7);
    expect(readAs(9, node)).toEqual(data.subarray(1000, 1100));
    expect(table.stats().handles).toBe(1);
    table.unregister(9, node);
    expect(readAs(9, node)).toBeUndefined();
    expect(table.stats().handles).toBe(0);
  });

  test("a stream is posted once, before the first handle naming it", () => {
    const { stream, table, posted } = setup([10]);
    expect(posted.size).toBe(0);
    table.register(1, { stream, offset: 0, size: 10 });
    table.register(2, { stream, offset: 0, size: 5 });
    expect([...posted.keys()]).toEqual([stream.id]);
  });

  test("absent segments, missing files and files of the wrong size are handed over, with no fd left open", () => {
    const { fs, data, stream, table, read } = setup([100, 100], { present: false });
    table.register(1, { stream, offset: 0, size: 200 });
    expect(read(1, 0, 10)).toBeUndefined();
    expect(fs.opens).toBe(0); // absent: not even tried
    stream.setPresent(0, true);
    expect(read(1, 0, 10)).toEqual(data.subarray(0, 10));
    // Segment 1 "present" but its file is gone, then truncated.
    stream.setPresent(1, true);
    fs.files.delete("/seg/1");
    expect(read(1, 150, 10)).toBeUndefined();
    fs.files.set("/seg/1", data.slice(100, 150));
    expect(read(1, 150, 10)).toBeUndefined();
    // A read needing both segments is handed over whole (nothing partial goes out).
    expect(read(1, 90, 20)).toBeUndefined();
    expect([...fs.open_.keys()].length).toBe(1); // only segment 0's cached fd
    expect(table.stats().handedOver).toBe(4);
  });

  test("a segment that leaves while the reader is idle has its cached fd closed by the main thread", () => {
    const { fs, stream, table, read } = setup([100, 100]);
    table.register(1, { stream, offset: 0, size: 200 });
    read(1, 0, 10);
    read(1, 100, 10);
    expect(fs.open_.size).toBe(2);
    stream.setPresent(0, false);
    expect(fs.open_.size).toBe(1);
    expect(read(1, 0, 10)).toBeUndefined();
    expect(read(1, 100, 10)).toBeDefined();
    // Back (the span was fetched again): reopened.
    stream.setPresent(0, true);
    expect(read(1, 0, 10)).toBeDefined();
    expect(fs.open_.size).toBe(2);
  });

  test("a segment that leaves during a read: the read completes with its bytes, then the reader closes the fd", () => {
    const { fs, data, stream, table, read } = setup([100]);
    table.register(1, { stream, offset: 0, size: 100 });
    read(1, 0, 1);
    let fired = false;
    fs.onPread = () => {
      if (fired) return;
      fired = true;
      stream.setPresent(0, false); // the main thread evicts it mid-pread: the slot is BUSY, so it is doomed
      expect(fs.open_.size).toBe(1); // not closed under the reader
    };
    expect(read(1, 0, 100)).toEqual(data);
    expect(fs.open_.size).toBe(0);
    expect(read(1, 0, 1)).toBeUndefined();
  });

  test("a segment that leaves between the reader's open and its publishing is not kept", () => {
    const { fs, stream, table, read } = setup([100]);
    table.register(1, { stream, offset: 0, size: 100 });
    fs.onOpen = () => stream.setPresent(0, false); // the main thread's scan finds no slot yet
    expect(read(1, 0, 10)).toBeUndefined(); // the reader sees PRESENT cleared after publishing
    expect(fs.open_.size).toBe(0);
  });

  test("a reader keeps at most FD_SLOTS fds, closing the least recently used", () => {
    const sizes = Array.from({ length: FD_SLOTS + 8 }, () => 64);
    const { fs, data, stream, table, read } = setup(sizes);
    table.register(1, { stream, offset: 0, size: data.byteLength });
    for (let i = 0; i < sizes.length; i++) {
      expect(read(1, i * 64, 64)).toEqual(data.subarray(i * 64, (i + 1) * 64));
      expect(fs.open_.size).toBeLessThanOrEqual(FD_SLOTS);
    }
    // The most recent FD_SLOTS segments are cached: reading them again opens nothing.
    const opens = fs.opens;
    for (let i = sizes.length - FD_SLOTS; i < sizes.length; i++) read(1, i * 64, 1);
    expect(fs.opens).toBe(opens);
    // One read over every segment (more than FD_SLOTS) still works.
    expect(read(1, 0, data.byteLength)).toEqual(data);
    expect(fs.open_.size).toBeLessThanOrEqual(FD_SLOTS);
  });

  test("closing the table closes every fd the readers left and registers nothing more", () => {
    const { fs, stream, table, read } = setup([100, 100, 100]);
    table.register(1, { stream, offset: 0, size: 300 });
    read(1, 0, 300);
    expect(fs.open_.size).toBe(3);
    table.close();
    expect(fs.open_.size).toBe(0);
    expect(table.register(2, { stream, offset: 0, size: 1 })).toBe(false);
    // The stream no longer calls into the closed table.
    stream.setPresent(0, false);
    expect(fs.closed.length).toBe(3);
  });

  test("segments read directly are reported once as used", () => {
    const { stream, table, read } = setup([100, 100, 100]);
    table.register(1, { stream, offset: 0, size: 300 });
    read(1, 50, 100);
    expect(stream.takeUsed()).toEqual([0, 1]);
    expect(stream.takeUsed()).toEqual([]);
    read(1, 250, 10);
    expect(stream.takeUsed()).toEqual([2]);
  });

  test("a read larger than the reader's buffer is handed over", () => {
    const { stream, table, reader } = setup([100]);
    table.register(1, { stream, offset: 0, size: 100 });
    expect(reader.read(1, 0, 100, new Uint8Array(50))).toBe(-1);
    expect(reader.read(1, 0, 50, new Uint8Array(50))).toBe(50);
  });

  test("bad stream bounds are refused", () => {
    expect(() => new BackingStream("/x", [0])).toThrow(RangeError);
    expect(() => new BackingStream("/x", [0, 10, 5])).toThrow(/bound 2/);
    expect(() => new BackingStream("/x", [0, 1.5])).toThrow(RangeError);
    expect(() => new BackingStream("/x", [0, 5, 10], { indexed: false })).toThrow(/2 segments in one file/);
    expect(new BackingStream("/x", [0, 5], { indexed: false }).descriptor.indexed).toBe(false);
  });
});

/**
 * readElfNeeds (layerfs/elf.ts): the interpreter, DT_NEEDED, DT_RPATH and DT_RUNPATH of ELF files, 64- and 32-bit,
 * either byte order; the interpreter told before the dynamic section is read; the host's own programs and
 * libraries read as `readelf` reads them; hostile or truncated headers give a reason, never a read outside the
 * file or an unbounded one.
 */
import { describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, realpathSync } from "node:fs";
import { readElfNeeds, type FileReader, type ElfNeeds } from "../../src/layerfs/elf.ts";
import { needs } from "../_harness/env.ts";
import { Rand } from "../_harness/rand.ts";
import { BUN } from "../_harness/cli.ts";
import { makeElf } from "./_elf.ts";

/** A reader of `bytes` that records every read, and fails the test on one outside the file. */
function reader(bytes: Uint8Array): { read: FileReader; reads: Array<[number, number]> } {
  const reads: Array<[number, number]> = [];
  return {
    reads,
    read: async (offset, length) => {
      reads.push([offset, length]);
      if (offset < 0 || length < 0 || offset > bytes.length) throw new Error(`read at ${offset} of ${bytes.length}`);
      return bytes.subarray(offset, offset + length);
    },
  };
}

const needsOf = async (bytes: Uint8Array) => await readElfNeeds(reader(bytes).read, bytes.length);

describe("readElfNeeds", () => {
  test("64-bit little-endian and 32-bit big-endian: interpreter, needed libraries, rpath and runpath", async () => {
    for (const [class64, little] of [
      [true, true],
      [false, false],
      [false, true],
      [true, false],
    ] as const) {
      const bytes = makeElf({
        class64,
        little,
        machine: 183,
        interpreter: "/lib/ld-linux-aarch64.so.1",
        needed: ["libm.so.6", "libc.so.6"],
        rpath: "/opt/a:/opt/b",
        runpath: "$ORIGIN/../lib",
        padding: 1000,
      });
      expect(await needsOf(bytes)).toEqual({
        interpreter: "/lib/ld-linux-aarch64.so.1",
        needed: ["libm.so.6", "libc.so.6"],
        rpath: ["/opt/a", "/opt/b"],
        runpath: ["$ORIGIN/../lib"],
        machine: 183,
        class64,
      } satisfies ElfNeeds);
    }
  });

  test("a static program: no interpreter, no libraries; a shared library without PT_INTERP: its libraries", async () => {
    expect(await needsOf(makeElf({}))).toEqual({ needed: [], rpath: [], runpath: [], machine: 62, class64: true });
    expect(await needsOf(makeElf({ type: 3, needed: ["libc.so.6"] }))).toMatchObject({
      needed: ["libc.so.6"],
    });
    expect(await needsOf(makeElf({ type: 3, needed: ["libc.so.6"] }))).not.toHaveProperty("interpreter");
  });

  test("the interpreter is told before the dynamic section at the file's end is read", async () => {
    const bytes = makeElf({ interpreter: "/lib64/ld.so", needed: ["libc.so.6"], padding: 100_000 });
    const r = reader(bytes);
    let readsWhenTold = -1;
    const got = await readElfNeeds(r.read, bytes.length, { onInterpreter: () => (readsWhenTold = r.reads.length) });
    expect(got).toMatchObject({ interpreter: "/lib64/ld.so", needed: ["libc.so.6"] });
    // Header, program headers, interpreter: then told; the dynamic section and string table come after.
    expect(readsWhenTold).toBe(3);
    expect(r.reads.length).toBe(5);
    expect(Math.max(...r.reads.map(([o]) => o))).toBeGreaterThan(100_000);
  });

  test("not ELF, not run, truncated or hostile headers: a reason each, and no read outside the file", async () => {
    const good = makeElf({ interpreter: "/lib64/ld.so", needed: ["libc.so.6"], padding: 64 });
    const edit = (f: (v: DataView, b: Uint8Array) => void) => {
      const b = good.slice();
      f(new DataView(b.buffer), b);
      return b;
    };
    const cases: Array<[string, Uint8Array, RegExp]> = [
      ["a script", new TextEncoder().encode("#!/bin/sh\necho hi\n"), /no ELF magic/],
      ["a header cut short", good.subarray(0, 40), /truncated/],
      ["a relocatable object", edit((v) => v.setUint16(16, 1, true)), /ELF type 1 is not run/],
      ["class 7", edit((_, b) => (b[4] = 7)), /unknown ELF class 7/],
      ["byte order 9", edit((_, b) => (b[5] = 9)), /unknown ELF byte order 9/],
      ["no program headers", edit((v) => v.setUint16(56, 0, true)), /no program headers/],
      ["65535 program headers", edit((v) => v.setUint16(56, 0xffff, true)), /bytes of program headers/],
      ["program headers past the end", edit((v) => v.setBigUint64(32, 1n << 40n, true)), /outside the file/],
      ["an offset beyond 2^53", edit((v) => v.setBigUint64(32, 1n << 60n, true)), /outside the file/],
      ["an entry size below 56", edit((v) => v.setUint16(54, 20, true)), /program header size 20/],
      [
        "an interpreter of 1 MiB",
        edit((v) => v.setBigUint64(64 + 56 + 32, 1n << 20n, true)),
        /PT_INTERP outside the file or too long/,
      ],
      [
        "a string table in no segment",
        edit((v) => {
          // DT_STRTAB is the second dynamic entry (after DT_NEEDED): point it far away.
          const dyn = Number(v.getBigUint64(64 + 2 * 56 + 8, true));
          v.setBigUint64(dyn + 16 + 8, 0x7000_0000n, true);
        }),
        /DT_STRTAB in no PT_LOAD segment/,
      ],
    ];
    for (const [what, bytes, why] of cases) {
      const r = reader(bytes);
      const got = await readElfNeeds(r.read, bytes.length);
      expect({ what, why: "why" in got ? got.why : "parsed" }).toEqual({ what, why: expect.stringMatching(why) });
      for (const [o, l] of r.reads) expect(o + l).toBeLessThanOrEqual(bytes.length);
    }
  });

  test("random damage to a valid file never throws, reads only inside the file, and reads at most 4 MiB at once", async () => {
    const rand = new Rand("elf-fuzz");
    const base = makeElf({ interpreter: "/lib64/ld.so", needed: ["libc.so.6", "libz.so.1"], runpath: "/x" });
    let parsed = 0;
    for (let i = 0; i < 3000; i++) {
      const b = base.slice();
      const flips = 1 + rand.int(4);
      for (let k = 0; k < flips; k++) b[rand.int(b.length)] = rand.int(256);
      const r = reader(b);
      const got = await readElfNeeds(r.read, b.length);
      if (!("why" in got)) parsed++;
      for (const [o, l] of r.reads) {
        expect(o + l).toBeLessThanOrEqual(b.length);
        expect(l).toBeLessThanOrEqual(4 * 1024 * 1024);
      }
    }
    // Most flips land in bytes that do not matter (padding of the header, the strings' text).
    expect(parsed).toBeGreaterThan(100);
  });
});

const runReadelf = needs("readelf against the host's files", "tool:readelf");

describe.skipIf(!runReadelf)("readElfNeeds on the host's own ELF files, against readelf", () => {
  test("programs and libraries: the same interpreter, needed libraries and run paths", async () => {
    const candidates = [
      "/bin/ls",
      "/usr/bin/python3",
      realpathSync(BUN),
      "/usr/lib/x86_64-linux-gnu/libc.so.6",
      "/usr/lib/aarch64-linux-gnu/libc.so.6",
      "/usr/lib/x86_64-linux-gnu/libz.so.1",
      "/usr/lib/aarch64-linux-gnu/libz.so.1",
      "/usr/bin/containerd",
    ].filter((p) => existsSync(p));
    expect(candidates.length).toBeGreaterThanOrEqual(4);
    for (const path of candidates) {
      const file = realpathSync(path);
      const bytes = new Uint8Array(readFileSync(file));
      const got = await needsOf(bytes);
      const program = spawnSync("readelf", ["-lW", file], { encoding: "utf8" }).stdout;
      const dynamic = spawnSync("readelf", ["-dW", file], { encoding: "utf8" }).stdout;
      const interpreter = /\[Requesting program interpreter: (.*)\]/.exec(program)?.[1];
      const list = (tag: string) =>
        [...dynamic.matchAll(new RegExp(`\\(${tag}\\)\\s+\\S+.*\\[(.*)\\]`, "g"))].map((m) => m[1]!);
      const paths = (tag: string) => list(tag).flatMap((p) => p.split(":").filter((d) => d !== ""));
      expect({ file, ...got }).toEqual({
        file,
        ...(interpreter ? { interpreter } : {}),
        needed: list("NEEDED"),
        rpath: paths("RPATH"),
        runpath: paths("RUNPATH"),
        machine: expect.any(Number),
        class64: expect.any(Boolean),
      });
    }
  });
});

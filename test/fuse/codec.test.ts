/**
 * INIT's structs in codec.ts against the kernel's layout (include/uapi/linux/fuse.h), written out here by hand
 * field by field: fuse_init_in decoded from both of its sizes, fuse_init_out encoded and decoded back.
 */
import { describe, expect, test } from "bun:test";
import * as abi from "../../src/fuse/abi.ts";
import { decodeInitIn, decodeInitOut, initReply, type InitOut, RequestReader } from "../../src/fuse/codec.ts";
import { FormatError } from "../../src/util/errors.ts";
import { parseReply, request, struct } from "./_request.ts";

/** Every field distinct, none zero, each byte of the wider ones different: a field at a wrong offset shows. */
const OUT: InitOut = {
  major: 7,
  minor: 40,
  maxReadahead: 0x0012_3456,
  flags: 0x4123_4567,
  maxBackground: 0x0a0b,
  congestionThreshold: 0x0c0d,
  maxWrite: 0x0010_2030,
  timeGran: 1,
  maxPages: 0x0102,
  flags2: 0x0000_0020,
  maxStackDepth: 3,
};

describe("fuse_init_out", () => {
  test("initReply writes the kernel's layout, and decodeInitOut reads back what it wrote", () => {
    const reply = initReply(77n, OUT);
    const r = parseReply(reply);
    expect(r).toMatchObject({ len: abi.OUT_HEADER_SIZE + abi.INIT_OUT_SIZE, error: 0, unique: 77n });
    const kernelLayout = struct(
      ["u32", OUT.major],
      ["u32", OUT.minor],
      ["u32", OUT.maxReadahead],
      ["u32", OUT.flags],
      ["u16", OUT.maxBackground],
      ["u16", OUT.congestionThreshold],
      ["u32", OUT.maxWrite],
      ["u32", OUT.timeGran],
      ["u16", OUT.maxPages],
      ["u16", 0], // map_alignment
      ["u32", OUT.flags2],
      ["u32", OUT.maxStackDepth],
      ["u16", 0], // request_timeout
    );
    const expected = new Uint8Array(abi.INIT_OUT_SIZE);
    expected.set(kernelLayout);
    expect(r.body).toEqual(expected);
    expect(decodeInitOut(reply)).toEqual(OUT);
  });

  test("a reply too short for the struct is a FormatError, not a misread", () => {
    const reply = initReply(1n, OUT).subarray(0, abi.OUT_HEADER_SIZE + abi.INIT_OUT_SIZE - 1);
    expect(() => decodeInitOut(reply)).toThrow(FormatError);
  });
});

describe("fuse_init_in", () => {
  const fields = (flags: number) =>
    struct(["u32", 7], ["u32", 45], ["u32", 0x0002_0000], ["u32", flags], ["u32", abi.FUSE_PASSTHROUGH_FLAGS2]);

  test("the 64-byte struct of 7.36+ gives flags2 when FUSE_INIT_EXT says it is there", () => {
    const body = new Uint8Array(64);
    body.set(fields(abi.FUSE_ASYNC_READ | abi.FUSE_INIT_EXT));
    expect(decodeInitIn(new RequestReader(request(abi.FUSE_INIT, 0, body)))).toEqual({
      major: 7,
      minor: 45,
      maxReadahead: 0x0002_0000,
      flags: abi.FUSE_ASYNC_READ | abi.FUSE_INIT_EXT,
      flags2: abi.FUSE_PASSTHROUGH_FLAGS2,
    });
    // Without FUSE_INIT_EXT the same bytes are padding.
    body.set(fields(abi.FUSE_ASYNC_READ));
    expect(decodeInitIn(new RequestReader(request(abi.FUSE_INIT, 0, body))).flags2).toBe(0);
  });

  test("the 16-byte struct of older kernels has no flags2, and fewer bytes are a FormatError", () => {
    const body = fields(abi.FUSE_INIT_EXT).subarray(0, abi.INIT_IN_SIZE);
    expect(decodeInitIn(new RequestReader(request(abi.FUSE_INIT, 0, body)))).toMatchObject({ minor: 45, flags2: 0 });
    const short = request(abi.FUSE_INIT, 0, body.subarray(0, abi.INIT_IN_SIZE - 4));
    expect(() => decodeInitIn(new RequestReader(short))).toThrow(FormatError);
  });
});

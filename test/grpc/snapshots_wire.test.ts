/** Conversions between proto-loader's wire objects and the snapshots types: times, kinds, absent fields, int64. */
import { expect, test } from "bun:test";
import {
  infoFromWire,
  kindFromWire,
  timestampFromWire,
  timestampToWire,
  usageFromWire,
  usageToWire,
} from "../../src/grpc/snapshots_wire.ts";

test("timestamps keep milliseconds, before 1970 too (nanos stay non-negative)", () => {
  expect(timestampToWire(new Date(1_700_000_000_123))).toEqual({ seconds: "1700000000", nanos: 123_000_000 });
  expect(timestampToWire(new Date(-1_500))).toEqual({ seconds: "-2", nanos: 500_000_000 });
  for (const ms of [0, 1, -1, -1_500, 1_700_000_000_999, 253_402_300_799_999])
    expect(timestampFromWire(timestampToWire(new Date(ms))).getTime()).toBe(ms);
  // Nanoseconds below a millisecond are dropped; an absent Timestamp is the epoch.
  expect(timestampFromWire({ seconds: "5", nanos: 999_999 }).getTime()).toBe(5_000);
  expect(timestampFromWire(null).getTime()).toBe(0);
  expect(() => timestampToWire(new Date(NaN))).toThrow("Cannot encode timestamp");
});

test("kinds: names and numbers; unknown ones read as UNKNOWN", () => {
  expect(kindFromWire("ACTIVE")).toBe("ACTIVE");
  expect(kindFromWire(3)).toBe("COMMITTED");
  expect(kindFromWire(9)).toBe("UNKNOWN");
  expect(kindFromWire("SOMETHING")).toBe("UNKNOWN");
});

test("an absent Info reads as an empty one at the epoch", () => {
  expect(infoFromWire(null)).toEqual({
    name: "",
    parent: "",
    kind: "UNKNOWN",
    createdAt: new Date(0),
    updatedAt: new Date(0),
    labels: {},
  });
});

test("usage: int64 strings both ways, exact to 2^53; negative or fractional counts are refused", () => {
  expect(usageToWire({ size: 2 ** 53 - 1, inodes: 0 })).toEqual({ size: "9007199254740991", inodes: "0" });
  expect(usageFromWire({ size: "9007199254740991", inodes: "12" })).toEqual({ size: 2 ** 53 - 1, inodes: 12 });
  expect(() => usageToWire({ size: -1, inodes: 0 })).toThrow("size -1");
  expect(() => usageToWire({ size: 0, inodes: 1.5 })).toThrow("inodes 1.5");
});

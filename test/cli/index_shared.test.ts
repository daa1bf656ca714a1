import { describe, expect, test } from "bun:test";
import {
  formatSize,
  humanBytes,
  parseCount,
  parseSize,
  platformsFrom,
  progressReporter,
} from "../../src/cli/index_shared.ts";
import { InvalidArgumentError } from "../../src/util/errors.ts";

describe("index command helpers", () => {
  test("parseSize() takes bytes or K/M/G (binary) suffixes and names the flag on errors", () => {
    expect(parseSize("4194304", "span-size")).toBe(4194304);
    expect(parseSize("4MiB", "span-size")).toBe(4 << 20);
    expect(parseSize("64k", "span-size")).toBe(65536);
    expect(parseSize("0", "min-layer-size")).toBe(0);
    expect(parseSize(undefined, "span-size")).toBeUndefined();
    expect(() => parseSize("1.5M", "span-size")).toThrow(InvalidArgumentError);
    expect(() => parseSize("-1", "min-layer-size")).toThrow('Option "--min-layer-size"');
  });

  test("parseSize() and parseCount() keep to their bounds and quote the value as typed", () => {
    const span = { min: 4096, max: 1 << 30 };
    expect(parseSize("4k", "span-size", span)).toBe(4096);
    expect(parseSize("1G", "span-size", span)).toBe(1 << 30);
    expect(() => parseSize("4095", "span-size", span)).toThrow(
      'Option "--span-size" must be a size from 4KiB to 1GiB, got "4095"',
    );
    expect(() => parseSize("99999999999999999999", "span-size", span)).toThrow('got "99999999999999999999"');
    expect(() => parseSize("9007199254740993", "span-size", span)).toThrow('got "9007199254740993"');
    expect([formatSize(0), formatSize(1000), formatSize(4096), formatSize(3 << 20), formatSize(2 ** 40)]).toEqual([
      "0",
      "1000",
      "4KiB",
      "3MiB",
      "1TiB",
    ]);
    expect(parseCount("256", "readahead-spans", { min: 0, max: 256 })).toBe(256);
    expect(parseCount(undefined, "readahead-spans", { min: 0, max: 256 })).toBeUndefined();
    for (const bad of ["257", "1e2", "-0", " ", "12abc", "99999999999999999999"]) {
      expect(() => parseCount(bad, "readahead-spans", { min: 0, max: 256 })).toThrow(
        `Option --readahead-spans "${bad}" is not an integer from 0 to 256`,
      );
    }
  });

  test("platformsFrom() accepts repeated and comma-separated values", () => {
    expect(platformsFrom(undefined)).toEqual([]);
    expect(platformsFrom("linux/amd64,linux/arm64/v8")).toEqual([
      { os: "linux", architecture: "amd64" },
      { os: "linux", architecture: "arm64" },
    ]);
    expect(platformsFrom(["linux/arm/v6", "linux/arm"])).toEqual([
      { os: "linux", architecture: "arm", variant: "v6" },
      { os: "linux", architecture: "arm", variant: "v7" },
    ]);
    expect(() => platformsFrom("amd64")).toThrow(InvalidArgumentError);
  });

  test("progress: one redrawn line per layer on a TTY, nothing otherwise", () => {
    const stderr = process.stderr as unknown as { isTTY: boolean; write: (s: string) => boolean };
    const [tty, write] = [stderr.isTTY, stderr.write];
    const out: string[] = [];
    try {
      stderr.isTTY = false;
      expect(progressReporter().onProgress).toBeUndefined();
      stderr.isTTY = true;
      stderr.write = (s: string) => {
        out.push(s);
        return true;
      };
      const p = progressReporter();
      const a = `sha256:${"a".repeat(64)}`;
      const b = `sha256:${"b".repeat(64)}`;
      p.onProgress!({ layerDigest: a, layerIndex: 0, doneBytes: 1000, totalBytes: 5_000_000 });
      p.onProgress!({ layerDigest: a, layerIndex: 0, doneBytes: 5_000_000, totalBytes: 5_000_000 });
      p.onProgress!({ layerDigest: b, layerIndex: 1, doneBytes: 10, totalBytes: 10 });
      p.done();
    } finally {
      stderr.isTTY = tty;
      stderr.write = write;
    }
    expect(out.join("")).toBe(
      "\r\x1b[Klayer 1 aaaaaaaaaaaa: 1.0 kB / 5.0 MB" +
        "\r\x1b[Klayer 1 aaaaaaaaaaaa: 5.0 MB / 5.0 MB\n" +
        "\r\x1b[Klayer 2 bbbbbbbbbbbb: 10 B / 10 B\n",
    );
    expect(humanBytes(999)).toBe("999 B");
    expect(humanBytes(80_383_733)).toBe("80.4 MB");
  });
});

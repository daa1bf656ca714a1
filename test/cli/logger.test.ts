/**
 * The CLI's logger (src/cli/logger.ts) in a child process, as a daemon uses it: with `--log-format json` every
 * line is one JSON object carrying the message and every field given with it; a message repeated with other
 * fields is a line each time (nothing folded into "repeated N times"). Text lines carry the fields as key=value.
 */
import { describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { BUN } from "../_harness/cli.ts";

function run(format: string): string[] {
  const r = spawnSync(BUN, [join(import.meta.dir, "fixtures", "log_lines.ts"), format], { encoding: "utf8" });
  expect(r.status).toBe(0);
  return r.stderr
    .trim()
    .split("\n")
    .filter((l) => l.trim() !== "");
}

describe("createLogger", () => {
  test("json: each line has the message and its fields, repeated messages included", () => {
    const lines = run("json").map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.length).toBe(10);
    expect(lines[0]).toMatchObject({ level: "info", msg: "Layer mounted", layer: "sha256:abc", mountpoint: "/m/1" });
    expect(lines[0]!.lazy).toBe(true);
    expect(typeof lines[0]!.time).toBe("string");
    for (let i = 0; i < 8; i++)
      expect(lines[1 + i]).toMatchObject({
        level: "warn",
        msg: "Cannot keep a layer's FUSE connection",
        mountpoint: `/m/${i}`,
      });
    expect(lines[9]).toMatchObject({ level: "error", msg: "No fields" });
  });

  test("text: fields as key=value after the message", () => {
    const lines = run("text");
    expect(lines.length).toBe(10);
    expect(lines[0]).toContain("Layer mounted layer=sha256:abc mountpoint=/m/1 lazy=true");
    for (let i = 0; i < 8; i++) expect(lines[1 + i]).toContain(`mountpoint=/m/${i}`);
  });
});

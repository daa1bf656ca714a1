/** Phases: named instants since process start, earliest first, a name marked again keeping its latest instant. */
import { expect, test } from "bun:test";
import { Phases } from "../../src/util/phases.ts";

test("phases are listed earliest first, in ms since process start, and a repeated mark keeps the latest", async () => {
  const p = new Phases();
  const before = performance.now();
  p.mark("a");
  p.mark("b");
  await Bun.sleep(5);
  p.mark("a");
  const list = p.list();
  expect(list.map(([k]) => k)).toEqual(["b", "a"]);
  expect(list[0]![1]).toBeGreaterThanOrEqual(Math.floor(before));
  expect(list[1]![1]).toBeGreaterThanOrEqual(list[0]![1]);
  expect(p.at("a")).toBeGreaterThan(p.at("b")!);
  expect(p.at("c")).toBeUndefined();
});

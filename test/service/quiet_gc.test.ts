/**
 * `QuietGc`: one collection once pokes stop for `quietMs` (each poke pushes it back); none after `close`, none with
 * `quietMs` 0. The collection is the test's own counter, not the engine's GC.
 */
import { describe, expect, test } from "bun:test";
import { QuietGc } from "../../src/service/quiet_gc.ts";
import { until } from "../_harness/liveness.ts";

describe("QuietGc", () => {
  test("a burst of pokes gives one collection after it settles; a later burst another", async () => {
    const at: number[] = [];
    const gc = new QuietGc({ quietMs: 30, collect: () => at.push(performance.now()) });
    let last = 0;
    for (let i = 0; i < 5; i++) {
      gc.poke();
      last = performance.now();
      await Bun.sleep(5);
    }
    await until(2000, "the first collection", () => at.length === 1);
    // Not before the quiet time after the last poke of the burst.
    expect(at[0]! - last).toBeGreaterThanOrEqual(25);
    gc.poke();
    await until(2000, "the second collection", () => at.length === 2);
    expect(gc.runs).toBe(2);
    gc.close();
  });

  test("close drops a pending collection; quietMs 0 never collects", async () => {
    let runs = 0;
    const closed = new QuietGc({ quietMs: 10, collect: () => runs++ });
    closed.poke();
    closed.close();
    closed.poke();
    const never = new QuietGc({ quietMs: 0, collect: () => runs++ });
    never.poke();
    // A third one, poked after them, collects: by then the others would have too.
    const witness = new QuietGc({ quietMs: 20, collect: () => runs++ });
    witness.poke();
    await until(2000, "the witness's collection", () => witness.runs === 1);
    expect(runs).toBe(1);
    expect([closed.runs, never.runs]).toEqual([0, 0]);
  });
});

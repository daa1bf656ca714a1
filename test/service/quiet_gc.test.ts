/**
 * `QuietGc`: one collection once pokes stop for `quietMs` (each poke cancels the one pending and schedules anew);
 * none after `close`, none with `quietMs` 0. Time is the test's scheduler (pending callbacks it runs), the
 * collection the test's own counter; one last case runs on real timers.
 */
import { describe, expect, test } from "bun:test";
import { QuietGc, type Schedule } from "../../src/service/quiet_gc.ts";
import { until } from "../_harness/liveness.ts";

/** A scheduler whose callbacks run when the test says. */
function manualSchedule() {
  const pending = new Set<{ fn: () => void; ms: number }>();
  const schedule: Schedule = (fn, ms) => {
    const p = { fn, ms };
    pending.add(p);
    return () => pending.delete(p);
  };
  const runAll = () => {
    for (const p of [...pending]) {
      pending.delete(p);
      p.fn();
    }
  };
  return { schedule, pending, runAll };
}

describe("QuietGc", () => {
  test("a burst of pokes leaves one collection pending, after quietMs; a later burst another", () => {
    const s = manualSchedule();
    let runs = 0;
    const gc = new QuietGc({ quietMs: 1000, collect: () => runs++, schedule: s.schedule });
    for (let i = 0; i < 5; i++) gc.poke();
    expect([...s.pending].map((p) => p.ms)).toEqual([1000]);
    expect(runs).toBe(0);
    s.runAll();
    expect([runs, gc.runs]).toEqual([1, 1]);
    gc.poke();
    gc.poke();
    s.runAll();
    expect(runs).toBe(2);
  });

  test("close drops a pending collection and ignores later pokes; quietMs 0 never schedules", () => {
    const s = manualSchedule();
    let runs = 0;
    const gc = new QuietGc({ quietMs: 10, collect: () => runs++, schedule: s.schedule });
    gc.poke();
    gc.close();
    gc.poke();
    expect(s.pending.size).toBe(0);
    const never = new QuietGc({ quietMs: 0, collect: () => runs++, schedule: s.schedule });
    never.poke();
    expect(s.pending.size).toBe(0);
    expect(runs).toBe(0);
  });

  test("settled(): one collection settleMs later for calls within that time, beside the one a poke has pending", () => {
    const s = manualSchedule();
    let runs = 0;
    const gc = new QuietGc({ quietMs: 1000, settleMs: 50, collect: () => runs++, schedule: s.schedule });
    gc.poke();
    gc.settled();
    gc.settled();
    expect([...s.pending].map((p) => p.ms).sort((a, b) => a - b)).toEqual([50, 1000]);
    s.runAll();
    expect(runs).toBe(2);
    gc.settled();
    expect([...s.pending].map((p) => p.ms)).toEqual([50]);
    gc.close();
    expect(s.pending.size).toBe(0);
    gc.settled();
    const never = new QuietGc({ quietMs: 0, collect: () => runs++, schedule: s.schedule });
    never.settled();
    expect(s.pending.size).toBe(0);
    expect(runs).toBe(2);
  });

  test("on real timers, the collection comes", async () => {
    let runs = 0;
    const gc = new QuietGc({ quietMs: 10, collect: () => runs++ });
    gc.poke();
    await until(2000, "the collection", () => runs === 1);
    gc.close();
  });
});

import { describe, expect, test } from "bun:test";
import { TaskGate } from "../../src/layerfs/task_gate.ts";

/** An AbortSignal that counts its live "abort" listeners. */
function countingSignal(): { signal: AbortSignal; live: () => number; abort: () => void } {
  const ac = new AbortController();
  const s = ac.signal;
  const listeners = new Set<unknown>();
  const add = s.addEventListener.bind(s);
  const rem = s.removeEventListener.bind(s);
  Object.assign(s, {
    addEventListener: (t: string, f: EventListener, o?: AddEventListenerOptions) => {
      if (t === "abort") listeners.add(f);
      add(t, f, o);
    },
    removeEventListener: (t: string, f: EventListener, o?: EventListenerOptions) => {
      if (t === "abort") listeners.delete(f);
      rem(t, f, o);
    },
  });
  return { signal: s, live: () => listeners.size, abort: () => ac.abort() };
}

describe("TaskGate", () => {
  test("waitIdle leaves no abort listener on a long-lived signal once woken", async () => {
    const { signal, live } = countingSignal();
    const gate = new TaskGate();
    for (let i = 0; i < 100; i++) {
      const release = gate.enter();
      const idle = gate.waitIdle(signal);
      release();
      await idle;
    }
    expect(live()).toBe(0);
  });

  test("waitIdle still ends when the signal aborts while foreground work is in flight", async () => {
    const { signal, abort } = countingSignal();
    const gate = new TaskGate();
    gate.enter();
    const idle = gate.waitIdle(signal);
    abort();
    await expect(idle).rejects.toBeDefined();
  });
});

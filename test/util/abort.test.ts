/**
 * util/abort.ts `sleep`, the one sleep of src/ (the task gate, the background fetcher, the registry client's
 * retries and the fault proxy share it): resolves after its time, rejects with the signal's reason when the signal
 * aborts first or had aborted already.
 */
import { describe, expect, test } from "bun:test";
import { sleep } from "../../src/util/abort.ts";

describe("sleep", () => {
  test("resolves, with or without a signal", async () => {
    await sleep(1);
    await sleep(1, new AbortController().signal);
  });

  test("rejects with the reason of a signal that aborts while it waits", async () => {
    const ctl = new AbortController();
    const slept = sleep(60_000, ctl.signal).catch((e: unknown) => e);
    const reason = new Error("stopped");
    ctl.abort(reason);
    expect(await slept).toBe(reason);
  });

  test("rejects at once when the signal has aborted already", async () => {
    const reason = new Error("gone");
    expect(await sleep(60_000, AbortSignal.abort(reason)).catch((e: unknown) => e)).toBe(reason);
  });
});

/**
 * LayerRemoteFs.mount's order of work (service/layer_remote_fs.ts step 2), with a resolver and a layer file system
 * that record what they are asked: the image's resolution is asked for first and the FUSE mount ahead one
 * event-loop turn later; a resolution that ended before then (failed, or without this layer) makes no mount at
 * all; one that fails after the mount ahead was made abandons it once. (The mount itself, end to end:
 * test/e2e/serve_mount_ahead.test.ts.)
 */
import { describe, expect, test } from "bun:test";
import type { ImageResolver } from "../../src/layerfs/image_resolver.ts";
import type { LayerFs, PendingLayerMount } from "../../src/layerfs/remote_fs.ts";
import { LayerRemoteFs } from "../../src/service/layer_remote_fs.ts";
import { CRI_IMAGE_REF_LABEL, CRI_LAYER_DIGEST_LABEL } from "../../src/snapshot/labels.ts";
import { NotFoundError, UnavailableError } from "../../src/util/errors.ts";

const LAYER = `sha256:${"1".repeat(64)}`;
const LABELS = { [CRI_IMAGE_REF_LABEL]: "reg.example/app:v1", [CRI_LAYER_DIGEST_LABEL]: LAYER };

/** A resolver answering with `resolve()` and a layer file system whose mounts ahead are recorded. */
function rig(resolve: () => Promise<unknown>) {
  const events: string[] = [];
  const resolver = {
    peek: () => undefined,
    resolve: () => {
      events.push("resolve");
      return resolve();
    },
  } as unknown as ImageResolver;
  const layerFs = {
    mountAhead: async ({ mountpoint }: { mountpoint: string }): Promise<PendingLayerMount> => {
      events.push("mountAhead");
      return {
        mountpoint,
        open: async () => {
          throw new Error("not opened in these tests");
        },
        abandon: async () => {
          events.push("abandon");
        },
      };
    },
  } as unknown as LayerFs;
  return { events, fs: new LayerRemoteFs(layerFs, resolver, { mountTimeoutMs: 10_000 }) };
}

describe("LayerRemoteFs.mount: resolution first, mount ahead after", () => {
  test("the resolution is asked for before the mount ahead, which waits one event-loop turn", async () => {
    const failing = Promise.withResolvers<never>();
    const { events, fs } = rig(() => failing.promise);
    const mounting = fs.mount("/mnt/1/fs", LABELS).catch((e: unknown) => e);
    await Promise.resolve(); // microtasks alone: still no mount
    expect(events).toEqual(["resolve"]);
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    expect(events).toEqual(["resolve", "mountAhead"]);
    // Failing after the mount ahead was made: it is abandoned, once, and the resolver's error comes back.
    failing.reject(new UnavailableError("registry down"));
    const err = await mounting;
    expect((err as Error).message).toBe("registry down");
    expect(events).toEqual(["resolve", "mountAhead", "abandon"]);
  });

  test("a resolution that fails before the turn makes no mount at all", async () => {
    const { events, fs } = rig(() => Promise.reject(new UnavailableError("registry down")));
    const err = await fs.mount("/mnt/2/fs", LABELS).catch((e: unknown) => e);
    expect((err as Error).message).toBe("registry down");
    await new Promise((r) => setImmediate(r));
    expect(events).toEqual(["resolve"]);
  });

  test("an image found without a SOCI index, or without this layer's zTOC, before the turn: NotFoundError, no mount", async () => {
    for (const found of [undefined, { ztocs: new Map([[`sha256:${"2".repeat(64)}`, {}]]) }]) {
      const { events, fs } = rig(async () => ({ found }));
      const err = await fs.mount("/mnt/3/fs", LABELS).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(NotFoundError);
      await new Promise((r) => setImmediate(r));
      expect(events).toEqual(["resolve"]);
    }
  });
});

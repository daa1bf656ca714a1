/**
 * A zTOC loaded by its checkpoint table from the real registry (soci/lazy_ztoc.ts): a large TOC is decoded while
 * the tail streams in, and its layer tree begun, and the results are what decoding the assembled skeleton and
 * building the tree in one go give.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { buildLayerTree, feedTree, takeTree } from "../../src/layerfs/metadata.ts";
import { MediaType } from "../../src/oci/media_types.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { RegistryImageStore } from "../../src/registry/registry_image_store.ts";
import { loadZtocLazily, STREAMED_TAIL_MIN_BYTES } from "../../src/soci/lazy_ztoc.ts";
import { writeTar } from "../../src/tar/writer.ts";
import { buildZtoc } from "../../src/ztoc/builder.ts";
import {
  ANNOTATION_CHECKPOINT_TABLE,
  assembleSkeleton,
  buildCheckpointTable,
  decodeWithoutWindows,
  encodeCheckpointTable,
  skeletonRanges,
} from "../../src/ztoc/checkpoint_table.ts";
import type { RangeReadOptions } from "../../src/registry/types.ts";
import { UnavailableError } from "../../src/util/errors.ts";
import { needs } from "../_harness/env.ts";
import { Rand } from "../_harness/rand.ts";
import { startRegistry, type TestRegistry } from "../_harness/registry.ts";
import { compressLayer } from "./_layers.ts";

const run = needs("lazy zTOC streamed from a registry", "tool:docker-registry");

async function* once(blob: Uint8Array): AsyncGenerator<Uint8Array> {
  yield blob;
}

/** The message `p` rejects with ("" when it resolves). */
async function failure(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "";
  } catch (err) {
    return (err as Error).message;
  }
}

describe.skipIf(!run)("lazy zTOC from a registry", () => {
  let reg: TestRegistry;
  const client = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 5000 });
  beforeAll(async () => {
    reg = await startRegistry();
  });
  afterAll(async () => {
    await reg?.stop();
  });

  /** A zTOC of ~3,000 small files (a tail of ~0.5 MB, above the size that is streamed), pushed. */
  async function pushedZtoc() {
    const r = new Rand("lazy-stream");
    const entries = Array.from({ length: 3000 }, (_, i) => ({
      name: `usr/lib/python3/dist-packages/pkg${i % 41}/module_${i}.py`,
      data: r.bytes(r.int(2000)),
    }));
    const layer = compressLayer(writeTar(entries), "gzip");
    const { bytes } = await buildZtoc(once(layer.blob), { algorithm: "gzip", spanSizeBytes: 64 * 1024 });
    const table = buildCheckpointTable(bytes)!;
    const [a, b] = skeletonRanges(table, bytes.length);
    expect(b[1] - b[0]).toBeGreaterThan(STREAMED_TAIL_MIN_BYTES);
    const ref = { registry: reg.host, repository: "test/lazy-stream", tag: "v1" };
    const pushed = await client.pushBlob(ref, bytes);
    const d = {
      mediaType: MediaType.OCI_LAYER_GZIP,
      digest: pushed.digest,
      size: bytes.length,
      annotations: { [ANNOTATION_CHECKPOINT_TABLE]: encodeCheckpointTable(table) },
    };
    return { bytes, table, a, b, ref, d };
  }

  test("a large TOC is decoded as its tail streams in: all of it by the time the skeleton is in", async () => {
    const { bytes, table, a, b, ref, d } = await pushedZtoc();
    let early = -1;
    const { ztoc, windows } = await loadZtocLazily(new RegistryImageStore(client, ref), d, {
      onFetched: (n) => {
        early = n;
      },
      onEntries: feedTree,
    });
    windows.close();
    // The registry client reports the tail's bytes as they arrive, the last time with all of them: every entry
    // was decoded before the skeleton was checked.
    expect(early).toBe(3000);
    const want = decodeWithoutWindows(
      table,
      assembleSkeleton(table, {
        ztocSize: bytes.length,
        head: bytes.slice(a[0], a[1]),
        tail: bytes.slice(b[0], b[1]),
      }),
    );
    expect(ztoc).toEqual(want);
    // The layer tree begun on the TOC as it arrived is the tree of the whole TOC.
    const tree = takeTree(ztoc.toc);
    expect(tree).toBeDefined();
    expect(tree).toEqual(buildLayerTree(want.toc));
  });

  test("a part that fails fails the load with its error and ends the other parts' requests", async () => {
    const { ref, d, table } = await pushedZtoc();
    const real = new RegistryImageStore(client, ref);
    const [, b] = skeletonRanges(table, d.size);
    const signals: AbortSignal[] = [];
    // Fault injection beside the real registry: the read of the tail's last bytes fails once the others started.
    const source = Object.assign(Object.create(real), {
      readRange: (digest: string, s: number, e: number, o?: RangeReadOptions) => {
        if (o?.signal) signals.push(o.signal);
        if (e === b[1] && s > b[0]) return Promise.reject(new UnavailableError("injected: the tail's end is lost"));
        return real.readRange(digest, s, e, o);
      },
    });
    expect(await failure(loadZtocLazily(source, d))).toBe("injected: the tail's end is lost");
    expect(signals.length).toBe(3);
    expect(signals.every((sig) => sig.aborted)).toBe(true);
  });
});

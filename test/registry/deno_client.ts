/**
 * Run under Deno by deno.test.ts: the registry client and the OCI layout store, portable (rank 2), doing a
 * manifest read, a verified blob read, ranges and a push against the registry given as argv[2], and a
 * layout read from argv[3]. Prints one JSON line.
 */
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { openImageSource } from "../../src/registry/open_image_source.ts";
import type { Manifest } from "../../src/oci/types.ts";
import { sha256Digest } from "../../src/util/digest.ts";

declare const Deno: { args: string[] };
const [host, layoutDir] = [Deno.args[0]!, Deno.args[1]!];
const client = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 10_000 });
const ref = { registry: host, repository: "deno/app" };
const m = await client.getManifest({ ...ref, tag: "v1" });
const layer = (m.manifest as Manifest).layers[0]!;
const blob = await client.getBlob(ref, layer.digest);
const [a, b] = await client.readRanges(ref, layer.digest, [
  [0, 10],
  [layer.size - 10, layer.size],
]);
const pushed = await client.pushBlob(ref, new TextEncoder().encode("pushed from deno"), { chunkSize: 5 });
const layout = await openImageSource(`oci:${layoutDir}:v1`);
const lm = await layout.resolve();
console.log(
  JSON.stringify({
    manifest: m.descriptor.digest,
    blobDigest: sha256Digest(blob),
    head: Array.from(a!),
    tail: Array.from(b!),
    pushed: pushed.digest,
    layoutManifest: lm.descriptor.digest,
  }),
);

/**
 * Builds the SOCI index (v1) of an image with the library alone, for the Deno compatibility test: run under
 * Deno (`deno run -A test/soci/deno_build_index.ts SRC SPAN_BYTES`) and under Bun, it prints one JSON line
 * `{runtime, inflate, index, ztocs: [{digest, size}], bytes: {<digest>: <base64>}}` so the caller can compare.
 * SRC is `oci:DIR:TAG` or a registry reference (plain HTTP on loopback).
 */
import process from "node:process";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import { parseReference } from "../../src/registry/reference.ts";
import { inflateBackend } from "../../src/compress/registry.ts";
import { buildIndex } from "../../src/soci/builder.ts";
import { OciLayout } from "../../src/registry/oci_layout.ts";
import { parseLayoutSpec } from "../../src/registry/open_image_source.ts";
import { type ImageLocation, RegistryLocation } from "../../src/soci/image_location.ts";
import { resolveImages } from "../../src/soci/resolve_images.ts";

/** Build and describe the index of `src`. */
export async function buildForComparison(src: string, spanSizeBytes: number): Promise<string> {
  const layout = parseLayoutSpec(src);
  const location: ImageLocation = layout
    ? new OciLayout(layout.dir, layout.tag)
    : new RegistryLocation(
        new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 30_000 }),
        parseReference(src),
        src,
      );
  const { images } = await resolveImages(location, { platforms: [{ os: "linux", architecture: "amd64" }] });
  const built = await buildIndex(location, images[0]!, { version: "v1", spanSizeBytes, minLayerSizeBytes: 0 });
  const b64 = (u: Uint8Array) => btoa(Array.from(u, (c) => String.fromCharCode(c)).join(""));
  const runtime = "Deno" in globalThis ? "deno" : "Bun" in globalThis ? "bun" : "node";
  return JSON.stringify({
    runtime,
    inflate: inflateBackend().name,
    index: built.descriptor.digest,
    ztocs: built.ztocs.map((z) => ({ digest: z.descriptor.digest, size: z.descriptor.size })),
    bytes: Object.fromEntries(built.ztocs.map((z) => [z.descriptor.digest, b64(z.bytes)])),
  });
}

if (import.meta.main) {
  const [src, span] = process.argv.slice(2);
  if (!src) {
    process.stderr.write("usage: deno_build_index.ts SRC [SPAN_BYTES]\n");
    process.exit(2);
  }
  process.stdout.write(`${await buildForComparison(src, Number(span ?? 1 << 20))}\n`);
}

import { defineCommand } from "citty";
import { parseReference } from "../registry/reference.ts";
import { RegistryLocation } from "../soci/image_location.ts";
import { exportLodPrefetch } from "../soci/lod_export.ts";
import { readLod } from "../soci/lod_store.ts";
import { prefetchSpanCount } from "../soci/prefetch.ts";
import { InvalidArgumentError } from "../util/errors.ts";
import { cliContext } from "./context.ts";
import { artifactStore, printJson } from "./index_shared.ts";
import { oneLod } from "./lod_shared.ts";
import { registryClient } from "./open_location.ts";
import { writeOut } from "./output.ts";

/**
 * `soci-ts lod export NAME [--ref REF] --soci-prefetch`: store a new v1 SOCI index of the image whose prefetch
 * artifacts list the spans holding the document's ranges (soci/lod_export.ts); `index push` publishes it for
 * AWS SOCI. The image is read from REF, default the reference the document was recorded from.
 */
export default defineCommand({
  meta: {
    name: "export",
    description: "Turn a load order document into SOCI prefetch artifacts (a new v1 index in the local store)",
  },
  args: {
    name: { type: "positional", description: "Workload name", required: true },
    ref: { type: "string", description: "Image reference (default: the one the document was recorded from)" },
    "soci-prefetch": { type: "boolean", description: "Export as SOCI prefetch artifacts (the only format)" },
    json: { type: "boolean", description: "Print the result as JSON" },
  },
  async run({ args }) {
    if (!args["soci-prefetch"])
      throw new InvalidArgumentError("Cannot export load order document: name the format with --soci-prefetch");
    const ctx = cliContext();
    const store = artifactStore(ctx);
    const record = await oneLod(store, String(args.name), args.ref === undefined ? undefined : String(args.ref));
    const doc = await readLod(store, record);
    const refText = args.ref === undefined ? record.imageRef : String(args.ref);
    if (!refText)
      throw new InvalidArgumentError(
        `Cannot export load order document "${record.workload}": it has no image reference; pass --ref`,
      );
    const ref = parseReference(refText);
    // The image the document was recorded on, whatever the tag points to now.
    const location = new RegistryLocation(registryClient(ctx), { ...ref, digest: record.subject.digest }, refText);
    const image = await location.client.resolveImage(location.ref);
    const out = await exportLodPrefetch(location, image, { doc, store, imageRef: refText });
    if (args.json) {
      return printJson({
        indexDigest: out.record.indexDigest,
        manifestDigest: out.record.manifestDigest,
        artifacts: out.artifacts.map((a) => ({
          layerDigest: a.layerDigest,
          digest: a.descriptor.digest,
          spans: prefetchSpanCount(a.artifact),
          prefetchSpans: a.artifact.prefetchSpans,
        })),
        skippedLayers: out.skipped,
      });
    }
    const lines = [
      `stored SOCI index ${out.record.indexDigest} for ${out.record.manifestDigest} with prefetch artifacts:`,
    ];
    for (const a of out.artifacts)
      lines.push(`  layer ${a.layerDigest}: ${prefetchSpanCount(a.artifact)} spans (${a.descriptor.digest})`);
    for (const l of out.skipped) lines.push(`  layer ${l}: not indexed, left out`);
    lines.push(`push it with: soci-ts index push ${refText}`);
    await writeOut(`${lines.join("\n")}\n`);
  },
});

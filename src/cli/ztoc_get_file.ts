import { writeFileSync } from "node:fs";
import { defineCommand } from "citty";
import { InvalidArgumentError } from "../util/errors.ts";
import { getFile, loadZtoc, ztocOwner } from "../soci/ztoc_store.ts";
import { cliContext } from "./context.ts";
import { artifactStore } from "./index_shared.ts";
import { writeOut } from "./output.ts";
import { openLocation } from "./open_location.ts";

/**
 * `soci-ts ztoc get-file DIGEST PATH`: one file of the zTOC's layer, fetched from the image's registry (or
 * layout) span by span: only the spans holding the file, verified and inflated from their checkpoint.
 */
export default defineCommand({
  meta: {
    name: "get-file",
    description: "Extract one file of a layer through its zTOC, fetching only the spans it needs",
  },
  args: {
    digest: { type: "positional", description: "zTOC digest (sha256:…)", required: true },
    path: { type: "positional", description: "Path of the file in the layer", required: true },
    output: { type: "string", alias: "o", description: "Write the file here instead of stdout" },
    ref: {
      type: "string",
      description: "Read the layer from this image location instead of the one the index was built from",
    },
    stats: { type: "boolean", description: "Print the compressed bytes fetched (and spans) on stderr" },
  },
  async run({ args }) {
    const ctx = cliContext();
    const store = artifactStore(ctx);
    const digest = String(args.digest);
    const { ztoc } = await loadZtoc(store, digest);
    const { layerDigest, record } = await ztocOwner(store, digest);
    const from = args.ref === undefined ? record.imageRef : String(args.ref);
    if (!from) {
      throw new InvalidArgumentError(
        `Cannot read the layer of zTOC "${digest}": its index record names no image (rebuilt database); pass --ref REF`,
      );
    }
    const location = openLocation(from, ctx);
    const res = await getFile(location, { ztoc, layerDigest, path: String(args.path) });
    if (args.output !== undefined) writeFileSync(String(args.output), res.data);
    else await writeOut(res.data);
    if (args.stats) {
      const spans = res.spans
        ? `spans ${res.spans.first}-${res.spans.last} of ${ztoc.compressionInfo.maxSpanId + 1}`
        : "no spans";
      process.stderr.write(
        `fetched ${res.fetchedBytes} bytes of ${ztoc.compressedArchiveSize} (${spans}) for ${res.data.length} bytes of "${res.entry.name}"\n`,
      );
    }
  },
});

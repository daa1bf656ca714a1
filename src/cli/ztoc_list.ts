import { defineCommand } from "citty";
import { listZtocs } from "../soci/ztoc_store.ts";
import { cliContext } from "./context.ts";
import { artifactStore, printJson, printTable } from "./index_shared.ts";
import { writeOut } from "./output.ts";

/** `soci-ts ztoc list`: the zTOCs of the stored indexes. */
export default defineCommand({
  meta: { name: "list", description: "List the zTOCs of the SOCI indexes in the local store" },
  args: {
    ztocDigest: { type: "string", description: "Only this zTOC" },
    imageRef: { type: "string", description: "Only zTOCs of this image reference" },
    quiet: { type: "boolean", alias: "q", description: "Print digests only" },
    json: { type: "boolean", description: "Print JSON" },
  },
  async run({ args }) {
    const rows = await listZtocs(artifactStore(cliContext()), {
      ...(args.ztocDigest === undefined ? {} : { digest: String(args.ztocDigest) }),
      ...(args.imageRef === undefined ? {} : { imageRef: String(args.imageRef) }),
    });
    if (args.json) return printJson(rows);
    if (args.quiet) {
      for (const d of new Set(rows.map((r) => r.digest))) await writeOut(`${d}\n`);
      return;
    }
    await printTable(
      ["DIGEST", "SIZE", "LAYER DIGEST", "INDEX DIGEST", "IMAGE REF"],
      rows.map((r) => [r.digest, String(r.size), r.layerDigest, r.indexDigest, r.imageRef]),
    );
  },
});

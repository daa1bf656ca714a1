import { defineCommand } from "citty";
import { listIndexes } from "../soci/stored_indexes.ts";
import { formatPlatform } from "../oci/platform.ts";
import { cliContext } from "./context.ts";
import { artifactStore, printJson, printTable } from "./index_shared.ts";
import { writeOut } from "./output.ts";

/** `soci-ts index list`: the indexes in the local store, newest first. */
export default defineCommand({
  meta: { name: "list", description: "List SOCI indexes in the local artifact store" },
  args: {
    ref: { type: "string", description: "Only indexes of this image reference" },
    quiet: { type: "boolean", alias: "q", description: "Print index digests only" },
    json: { type: "boolean", description: "Print JSON records" },
  },
  async run({ args }) {
    const ctx = cliContext();
    const records = await listIndexes(artifactStore(ctx), args.ref === undefined ? {} : { ref: String(args.ref) });
    if (args.json) return printJson(records);
    if (args.quiet) {
      for (const r of records) await writeOut(`${r.indexDigest}\n`);
      return;
    }
    await printTable(
      ["DIGEST", "VERSION", "IMAGE REF", "PLATFORM", "MANIFEST DIGEST", "CREATED"],
      records.map((r) => [
        r.indexDigest,
        r.version,
        r.imageRef,
        formatPlatform(r.platform),
        r.manifestDigest,
        r.createdAt,
      ]),
    );
  },
});

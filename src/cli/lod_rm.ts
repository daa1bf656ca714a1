import { defineCommand } from "citty";
import { removeLod } from "../soci/lod_store.ts";
import { cliContext } from "./context.ts";
import { artifactStore } from "./index_shared.ts";
import { oneLod } from "./lod_shared.ts";
import { writeOut } from "./output.ts";

/** `soci-ts lod rm NAME [--ref REF]`: remove a load order document from the local store. */
export default defineCommand({
  meta: { name: "rm", description: "Remove a load order document from the local store" },
  args: {
    name: { type: "positional", description: "Workload name", required: true },
    ref: { type: "string", description: "Image reference (needed when several images have a document of NAME)" },
  },
  async run({ args }) {
    const store = artifactStore(cliContext());
    const record = await oneLod(store, String(args.name), args.ref === undefined ? undefined : String(args.ref));
    await removeLod(store, record);
    await writeOut(`removed load order document ${record.workload} of ${record.imageRef || record.subject.digest}\n`);
  },
});

import { defineCommand } from "citty";
import { rebuildDatabase } from "../soci/stored_indexes.ts";
import { cliContext } from "./context.ts";
import { artifactStore } from "./index_shared.ts";
import { writeOut } from "./output.ts";

/** `soci-ts index rebuild-db`: rebuild the index database from the blobs of the local store. */
export default defineCommand({
  meta: { name: "rebuild-db", description: "Rebuild the local index database from the artifact store's content" },
  args: {},
  async run() {
    const records = await rebuildDatabase(artifactStore(cliContext()));
    await writeOut(`rebuilt ${records.length} index records\n`);
  },
});

import { defineCommand } from "citty";
import { removeIndex } from "../soci/stored_indexes.ts";
import { cliContext } from "./context.ts";
import { artifactStore } from "./index_shared.ts";
import { writeOut } from "./output.ts";

/** `soci-ts index rm DIGEST…`: remove indexes (and zTOCs no other index uses) from the local store. */
export default defineCommand({
  meta: { name: "rm", description: "Remove SOCI indexes from the local store, with zTOCs no other index uses" },
  args: {
    digest: { type: "positional", description: "Index digest (sha256:…)", required: true },
  },
  async run({ args, rawArgs }) {
    const store = artifactStore(cliContext());
    const digests = rawArgs.filter((a) => !a.startsWith("-"));
    for (const d of digests.length ? digests : [String(args.digest)]) {
      const { removedZtocs } = await removeIndex(store, d);
      await writeOut(`removed ${d} (${removedZtocs.length} zTOCs)\n`);
    }
  },
});

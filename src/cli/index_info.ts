import { defineCommand } from "citty";
import { getStoredIndex } from "../soci/stored_indexes.ts";
import { cliContext } from "./context.ts";
import { artifactStore } from "./index_shared.ts";
import { writeOut } from "./output.ts";

/** `soci-ts index info DIGEST`: the index manifest as stored, pretty-printed (like `soci index info`). */
export default defineCommand({
  meta: { name: "info", description: "Print a stored SOCI index manifest" },
  args: {
    digest: { type: "positional", description: "Index digest (sha256:…)", required: true },
  },
  async run({ args }) {
    const { bytes } = await getStoredIndex(artifactStore(cliContext()), String(args.digest));
    await writeOut(`${JSON.stringify(JSON.parse(new TextDecoder().decode(bytes)), null, 2)}\n`);
  },
});

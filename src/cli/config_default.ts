import { defineCommand } from "citty";
import { renderToml } from "../config/load.ts";
import { writeOut } from "./output.ts";

/** `soci-ts config default`: the whole default configuration as TOML, one comment per key. */
export default defineCommand({
  meta: { name: "default", description: "Print the default configuration as TOML, with a comment per key" },
  async run() {
    await writeOut(renderToml());
  },
});

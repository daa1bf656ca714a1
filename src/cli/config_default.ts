import { defineCommand } from "citty";
import { renderToml } from "../config/load.ts";

/** `soci-ts config default`: the whole default configuration as TOML, one comment per key. */
export default defineCommand({
  meta: { name: "default", description: "Print the default configuration as TOML, with a comment per key" },
  run() {
    process.stdout.write(renderToml());
  },
});

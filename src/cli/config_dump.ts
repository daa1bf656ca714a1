import { defineCommand } from "citty";
import { renderToml } from "../config/load.ts";
import { cliContext } from "./context.ts";
import { writeOut } from "./output.ts";

/** `soci-ts config dump`: the effective configuration (file + defaults + flags) as TOML. */
export default defineCommand({
  meta: { name: "dump", description: "Print the effective configuration (defaults, config file and flags) as TOML" },
  args: {
    json: { type: "boolean", description: "Print JSON instead of TOML" },
  },
  async run({ args }) {
    const ctx = cliContext();
    if (args.json) {
      await writeOut(JSON.stringify({ configPath: ctx.configPath, root: ctx.root, config: ctx.config }, null, 2) + "\n");
      return;
    }
    await writeOut((ctx.configPath ? `# loaded from ${ctx.configPath}\n` : "") + renderToml(ctx.config));
  },
});

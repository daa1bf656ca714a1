import { defineCommand } from "citty";
import { renderToml } from "../config/load.ts";
import { cliContext } from "./context.ts";

/** `soci-ts config dump`: the effective configuration (file + defaults + flags) as TOML. */
export default defineCommand({
  meta: { name: "dump", description: "Print the effective configuration (defaults, config file and flags) as TOML" },
  args: {
    json: { type: "boolean", description: "Print JSON instead of TOML" },
  },
  run({ args }) {
    const ctx = cliContext();
    if (args.json) {
      process.stdout.write(JSON.stringify({ configPath: ctx.configPath, root: ctx.root, config: ctx.config }, null, 2) + "\n");
      return;
    }
    if (ctx.configPath) process.stdout.write(`# loaded from ${ctx.configPath}\n`);
    process.stdout.write(renderToml(ctx.config));
  },
});

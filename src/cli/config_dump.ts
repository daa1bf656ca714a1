import { defineCommand } from "citty";
import { renderToml } from "../config/load.ts";
import type { Config } from "../config/schema.ts";
import { cliContext } from "./context.ts";
import { writeOut } from "./output.ts";

/** What `config dump` shows for a configured password: the dump is for reading and sharing, not for secrets. */
export const REDACTED = "<redacted>";

/** `config` with every `[resolver.host."<host>"] password` that is set replaced by REDACTED. */
export function redacted(config: Config): Config {
  const host = Object.fromEntries(
    Object.entries(config.resolver.host).map(([k, h]) => [k, h.password ? { ...h, password: REDACTED } : h]),
  );
  return { ...config, resolver: { ...config.resolver, host } };
}

/** `soci-ts config dump`: the effective configuration (file + defaults + flags) as TOML, passwords redacted. */
export default defineCommand({
  meta: { name: "dump", description: "Print the effective configuration (defaults, config file and flags) as TOML" },
  args: {
    json: { type: "boolean", description: "Print JSON instead of TOML" },
  },
  async run({ args }) {
    const ctx = cliContext();
    if (args.json) {
      await writeOut(
        `${JSON.stringify({ configPath: ctx.configPath, root: ctx.root, config: redacted(ctx.config) }, null, 2)}\n`,
      );
      return;
    }
    await writeOut((ctx.configPath ? `# loaded from ${ctx.configPath}\n` : "") + renderToml(redacted(ctx.config)));
  },
});

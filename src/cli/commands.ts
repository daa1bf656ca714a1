/**
 * The command tree: nouns with verbs, one file per command (`<noun>_<verb>.ts`), loaded lazily so that
 * `soci-ts --help` doesn't load the FUSE server. To add a command: write its file (exporting a citty
 * `defineCommand` as default) and add one line below.
 */
import { type ArgsDef, type CommandDef, defineCommand } from "citty";
import pkg from "../../package.json" with { type: "json" };

type Lazy = () => Promise<CommandDef<ArgsDef>>;

function group(name: string, description: string, subCommands: Record<string, Lazy>): CommandDef<ArgsDef> {
  return defineCommand({ meta: { name, description }, subCommands });
}

const configCommands = group("config", "Print the configuration", {
  default: () => import("./config_default.ts").then((m) => m.default),
  dump: () => import("./config_dump.ts").then((m) => m.default),
});

// Registered by the index/ztoc/convert, mount, serve and pull command files as they land.
const indexCommands: Record<string, Lazy> = {};
const ztocCommands: Record<string, Lazy> = {};
const topLevel: Record<string, Lazy> = {};

export const rootCommand: CommandDef<ArgsDef> = defineCommand({
  meta: {
    name: "soci-ts",
    version: pkg.version,
    description: "Lazy loading for unmodified OCI images: SOCI indexes, a FUSE lazy loader, containerd and podman integration",
  },
  subCommands: {
    config: configCommands,
    ...(Object.keys(indexCommands).length > 0 ? { index: group("index", "Build, inspect and push SOCI indexes", indexCommands) } : {}),
    ...(Object.keys(ztocCommands).length > 0 ? { ztoc: group("ztoc", "Inspect zTOCs and read files through them", ztocCommands) } : {}),
    ...topLevel,
  },
});

/**
 * The command tree: nouns with verbs, one file per command (`<noun>_<verb>.ts`), loaded lazily so that
 * `soci-ts --help` doesn't load the FUSE server. To add a command: write its file (exporting a citty
 * `defineCommand` as default) and add one line below.
 */
import { type ArgsDef, type CommandDef, defineCommand } from "citty";
import pkg from "../../package.json" with { type: "json" };

/** A command loaded on first use. Each command has its own args type; the tree only needs the common shape. */
type Lazy = () => Promise<CommandDef<any>>;

function group(name: string, description: string, subCommands: Record<string, Lazy>): CommandDef<ArgsDef> {
  return defineCommand({ meta: { name, description }, subCommands });
}

const configCommands = group("config", "Print the configuration", {
  default: () => import("./config_default.ts").then((m) => m.default),
  dump: () => import("./config_dump.ts").then((m) => m.default),
});

const indexCommands: Record<string, Lazy> = {
  create: () => import("./index_create.ts").then((m) => m.default),
  push: () => import("./index_push.ts").then((m) => m.default),
  list: () => import("./index_list.ts").then((m) => m.default),
  info: () => import("./index_info.ts").then((m) => m.default),
  rm: () => import("./index_rm.ts").then((m) => m.default),
  "rebuild-db": () => import("./index_rebuild_db.ts").then((m) => m.default),
};
const ztocCommands: Record<string, Lazy> = {
  list: () => import("./ztoc_list.ts").then((m) => m.default),
  info: () => import("./ztoc_info.ts").then((m) => m.default),
  "get-file": () => import("./ztoc_get_file.ts").then((m) => m.default),
};
/** Commands without a noun. `pull` will join these. */
const topLevel: Record<string, Lazy> = {
  convert: () => import("./convert.ts").then((m) => m.default),
  mount: () => import("./mount.ts").then((m) => m.default),
  serve: () => import("./serve.ts").then((m) => m.default),
};

export const rootCommand: CommandDef<ArgsDef> = defineCommand({
  meta: {
    name: "soci-ts",
    version: pkg.version,
    description: "Lazy loading for unmodified OCI images: SOCI indexes, a FUSE lazy loader, containerd and podman integration",
  },
  subCommands: {
    config: configCommands,
    index: group("index", "Build, inspect and push SOCI indexes", indexCommands),
    ztoc: group("ztoc", "Inspect zTOCs and read files through them", ztocCommands),
    ...topLevel,
  },
});

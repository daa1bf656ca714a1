/**
 * The command tree: nouns with verbs, one file per command (`<noun>_<verb>.ts`), each loaded only when it runs
 * or its own help is shown. The tree holds each verb's name and one-line description, so that `soci-ts --help`
 * and `soci-ts index --help` list the verbs without loading any of them (citty's usage resolves every
 * subcommand to read its description); test/cli/run.test.ts checks that these descriptions match the files'.
 * No citty at run time here: `soci-ts --version` needs nothing but this tree.
 * To add a command: write its file (exporting a citty `defineCommand` as default) and add one line below; a
 * command that inflates gzip (builds indexes, reads spans) loads its file through `inflating()`.
 */
import type { ArgsDef, CommandContext, CommandDef } from "citty";
import pkg from "../../package.json" with { type: "json" };

/** A command file's module. Each command has its own args type; the tree only needs the common shape. */
// biome-ignore lint/suspicious/noExplicitAny: citty's CommandDef is contravariant in its args; only `any` fits all
type CommandModule = { default: CommandDef<any> };

/**
 * A verb whose file is imported on first use: `args` and `run` load it (once); `meta` is known up front.
 * Only `args` and `run` are forwarded: no command file uses citty's `setup`, `cleanup` or `subCommands`.
 */
export function lazyCommand(
  name: string,
  description: string,
  load: () => Promise<CommandModule>,
): CommandDef<ArgsDef> {
  let loaded: Promise<CommandDef<ArgsDef>> | undefined;
  const def = () => (loaded ??= load().then((m) => m.default as CommandDef<ArgsDef>));
  return {
    meta: { name, description },
    args: async () => {
      const args = (await def()).args;
      return (typeof args === "function" ? await args() : await args) ?? {};
    },
    run: async (ctx: CommandContext<ArgsDef>) => (await def()).run?.(ctx),
  };
}

/**
 * `load` for a command that inflates gzip (builds indexes, reads spans): with its file, loads and registers the
 * native backends (src/native_backends.ts: the system zlib, and the inflate thread), so that it inflates as fast
 * as this machine can; the other commands never load bun:ffi (test/release/bundle_graph.test.ts). With
 * `buildsIndexes`, the inflate thread of the first layer is started as soon as they are registered, so that it
 * starts while the command's file loads and the command resolves the image (prestartInflateThread).
 */
function inflating(
  load: () => Promise<CommandModule>,
  opts: { buildsIndexes?: boolean } = {},
): () => Promise<CommandModule> {
  return async () => {
    const native = import("../native_backends.ts").then(async (n) => {
      n.registerNativeBackends();
      if (opts.buildsIndexes) (await import("../compress/worker_gzip_indexer.ts")).prestartInflateThread();
    });
    const [command] = await Promise.all([load(), native]);
    return command;
  };
}

function group(
  name: string,
  description: string,
  subCommands: Record<string, CommandDef<ArgsDef>>,
): CommandDef<ArgsDef> {
  return { meta: { name, description }, subCommands };
}

const configCommands = group("config", "Print the configuration", {
  default: lazyCommand(
    "default",
    "Print the default configuration as TOML, with a comment per key",
    () => import("./config_default.ts"),
  ),
  dump: lazyCommand(
    "dump",
    "Print the effective configuration (defaults, config file and flags) as TOML",
    () => import("./config_dump.ts"),
  ),
});

const indexCommands = {
  create: lazyCommand(
    "create",
    "Build a SOCI index (v1) of an image and store it locally (REF: registry reference or oci:DIR[:TAG])",
    inflating(() => import("./index_create.ts"), { buildsIndexes: true }),
  ),
  push: lazyCommand(
    "push",
    "Push the locally stored v1 SOCI index of an image to its registry (Referrers API or fallback tag)",
    () => import("./index_push.ts"),
  ),
  list: lazyCommand("list", "List SOCI indexes in the local artifact store", () => import("./index_list.ts")),
  info: lazyCommand("info", "Print a stored SOCI index manifest", () => import("./index_info.ts")),
  rm: lazyCommand(
    "rm",
    "Remove SOCI indexes from the local store, with zTOCs no other index uses",
    () => import("./index_rm.ts"),
  ),
  "rebuild-db": lazyCommand(
    "rebuild-db",
    "Rebuild the local index database from the artifact store's content",
    () => import("./index_rebuild_db.ts"),
  ),
};
const ztocCommands = {
  list: lazyCommand("list", "List the zTOCs of the SOCI indexes in the local store", () => import("./ztoc_list.ts")),
  info: lazyCommand(
    "info",
    "Show a zTOC: version, build tool, spans and files (JSON fields as soci ztoc info)",
    () => import("./ztoc_info.ts"),
  ),
  "get-file": lazyCommand(
    "get-file",
    "Extract one file of a layer through its zTOC, fetching only the spans it needs",
    inflating(() => import("./ztoc_get_file.ts")),
  ),
};
const lodCommands = {
  list: lazyCommand(
    "list",
    "List load order documents (LODs) in the local artifact store",
    () => import("./lod_list.ts"),
  ),
  info: lazyCommand(
    "info",
    "Show a stored load order document: its ranges per layer, in order",
    () => import("./lod_info.ts"),
  ),
  push: lazyCommand(
    "push",
    "Push a stored load order document to the image's registry (Referrers API or fallback tag)",
    () => import("./lod_push.ts"),
  ),
  rm: lazyCommand("rm", "Remove a load order document from the local store", () => import("./lod_rm.ts")),
  export: lazyCommand(
    "export",
    "Turn a load order document into SOCI prefetch artifacts (a new v1 index in the local store)",
    () => import("./lod_export.ts"),
  ),
};
/** Commands without a noun. */
const topLevel = {
  convert: lazyCommand(
    "convert",
    "Write a SOCI-enabled image (SOCI index v2) of SRC to DST (registry reference or oci:DIR:TAG)",
    inflating(() => import("./convert.ts"), { buildsIndexes: true }),
  ),
  pull: lazyCommand(
    "pull",
    "Pull an image into containerd lazily, through the soci snapshotter (REF: registry reference)",
    () => import("./pull.ts"),
  ),
  mount: lazyCommand(
    "mount",
    "Mount an image read-only, lazily, until interrupted",
    inflating(() => import("./mount.ts")),
  ),
  serve: lazyCommand(
    "serve",
    "Run the daemon: lazy layers for containerd (snapshotter, CRI image service) and podman (layer store)",
    inflating(() => import("./serve.ts")),
  ),
  // Hidden: started by serve (service/fd_handover.ts), not by people.
  "fd-holder": hidden(
    lazyCommand(
      "fd-holder",
      "Keep the FUSE descriptors of serve's lazy layers across its restarts",
      () => import("./fd_holder.ts"),
    ),
  ),
  status: lazyCommand(
    "status",
    "Show what the running soci-ts serve of this root is doing",
    () => import("./status.ts"),
  ),
};

/** `def` left out of the help listings (citty `meta.hidden`). */
function hidden(def: CommandDef<ArgsDef>): CommandDef<ArgsDef> {
  return { ...def, meta: { ...(def.meta as object), hidden: true } };
}

/** The root of the tree, as citty runs it. */
export const rootCommand: CommandDef<ArgsDef> = {
  meta: {
    name: "soci-ts",
    version: pkg.version,
    description:
      "Lazy loading for unmodified OCI images: SOCI indexes, a FUSE lazy loader, containerd and podman integration",
  },
  subCommands: {
    config: configCommands,
    index: group("index", "Build, inspect and push SOCI indexes", indexCommands),
    ztoc: group("ztoc", "Inspect zTOCs and read files through them", ztocCommands),
    lod: group("lod", "Load order documents: what a workload reads, replayed at its next start", lodCommands),
    ...topLevel,
  },
};

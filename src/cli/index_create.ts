import { readFile } from "node:fs/promises";
import { defineCommand } from "citty";
import { ANNOTATION_IMAGE_LAYER_DIGEST } from "../soci/index.ts";
import { InvalidArgumentError, errorMessage } from "../util/errors.ts";
import { createIndexes } from "../soci/create.ts";
import { formatPlatform } from "../oci/platform.ts";
import { cliContext } from "./context.ts";
import { buildOptionsFrom, printJson, progressReporter } from "./index_shared.ts";
import { writeOut } from "./output.ts";
import { openLocation } from "./open_location.ts";

/** `soci-ts index create REF`: build a v1 SOCI index per platform and keep it in the local artifact store. */
export default defineCommand({
  meta: {
    name: "create",
    description: "Build a SOCI index (v1) of an image and store it locally (REF: registry reference or oci:DIR[:TAG])",
  },
  args: {
    ref: { type: "positional", description: "Image: HOST/REPO[:TAG|@DIGEST] or oci:DIR[:TAG]", required: true },
    spanSize: {
      type: "string",
      description:
        "Uncompressed bytes per span (default from config: 256KiB, the fastest in bench:lazy and bench:lod; 4MiB, SOCI's default, for indexes AWS SOCI reads: it fetches every checkpoint window of a zTOC before the first read)",
    },
    minLayerSize: {
      type: "string",
      description: "Skip layers smaller than this, compressed (default from config: 10MiB; 0 indexes all)",
    },
    platform: {
      type: "string",
      alias: "p",
      description: "Platform(s) to index, os/arch[/variant], comma-separated (default: the host's)",
    },
    allPlatforms: { type: "boolean", description: "Index every platform of a multi-platform image" },
    force: { type: "boolean", alias: "f", description: "Rebuild even when the store has an index of this image" },
    prefetchFile: {
      type: "string",
      description: "Path of a file in the image to prefetch at mount (repeatable); adds prefetch artifacts",
    },
    prefetchFilesJson: {
      type: "string",
      description: "JSON file holding an array of paths to prefetch (added to --prefetch-file)",
    },
    json: { type: "boolean", description: "Print the result as JSON" },
  },
  async run({ args }) {
    const ctx = cliContext();
    const location = openLocation(String(args.ref), ctx);
    const prefetchPaths = await prefetchPathsFrom(args.prefetchFile, args.prefetchFilesJson);
    const progress = progressReporter();
    let created: Awaited<ReturnType<typeof createIndexes>>;
    try {
      created = await createIndexes(location, {
        ...buildOptionsFrom(args, ctx),
        force: Boolean(args.force),
        prefetchPaths,
        onProgress: progress.onProgress,
      });
    } finally {
      progress.done();
    }
    if (args.json) {
      await printJson(
        created.map((c) => ({
          indexDigest: c.record.indexDigest,
          manifestDigest: c.record.manifestDigest,
          platform: formatPlatform(c.record.platform),
          reused: c.reused,
          ztocs: c.ztocs.map((z) => ({
            digest: z.digest,
            size: z.size,
            layerDigest: z.annotations?.[ANNOTATION_IMAGE_LAYER_DIGEST],
          })),
          prefetch: c.prefetch.map((p) => ({
            digest: p.digest,
            size: p.size,
            layerDigest: p.annotations?.[ANNOTATION_IMAGE_LAYER_DIGEST],
          })),
          skipped: c.skipped.map((s) => ({ layerDigest: s.layer.digest, reason: s.reason })),
        })),
      );
      return;
    }
    for (const c of created) {
      for (const s of c.skipped) ctx.logger.info(`layer ${s.layer.digest} skipped: ${s.reason}`);
      for (const p of c.prefetch) {
        await writeOut(
          `created prefetch artifact ${p.digest} for layer ${p.annotations?.[ANNOTATION_IMAGE_LAYER_DIGEST]}\n`,
        );
      }
      const what = c.reused ? "kept existing index" : "created index";
      await writeOut(
        `${what} ${c.record.indexDigest} for ${formatPlatform(c.record.platform)} image ${c.record.manifestDigest} (${c.ztocs.length} zTOCs, ${c.prefetch.length} prefetch artifacts, ${c.skipped.length} layers skipped)\n`,
      );
    }
  },
});

/**
 * `--prefetch-file` values (repeatable) then the paths of `--prefetch-files-json` (a JSON array of strings),
 * trimmed, empty ones dropped, as SOCI's ParsePrefetchFiles does.
 * @throws InvalidArgumentError naming the file when it cannot be read or is not an array of strings
 */
async function prefetchPathsFrom(files: unknown, jsonFile: unknown): Promise<string[]> {
  const out = (files === undefined || files === false ? [] : Array.isArray(files) ? files : [files]).map((f) =>
    String(f).trim(),
  );
  if (jsonFile !== undefined && jsonFile !== "") {
    let list: unknown;
    try {
      list = JSON.parse(await readFile(String(jsonFile), "utf8"));
    } catch (cause) {
      throw new InvalidArgumentError(
        `Cannot read --prefetch-files-json "${String(jsonFile)}": ${errorMessage(cause)}`,
        { cause },
      );
    }
    if (!Array.isArray(list) || !list.every((p) => typeof p === "string")) {
      throw new InvalidArgumentError(
        `Cannot read --prefetch-files-json "${String(jsonFile)}": expected a JSON array of strings`,
      );
    }
    out.push(...list.map((p) => p.trim()));
  }
  return out.filter((p) => p !== "");
}

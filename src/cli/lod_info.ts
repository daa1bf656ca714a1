import { defineCommand } from "citty";
import { readLod } from "../soci/lod_store.ts";
import { lodSummary } from "../soci/lod.ts";
import { cliContext } from "./context.ts";
import { artifactStore, printJson } from "./index_shared.ts";
import { lodLine, oneLod } from "./lod_shared.ts";
import { writeOut } from "./output.ts";

/**
 * `soci-ts lod info NAME [--ref REF] [--json]`: a stored load order document: with --json the document itself,
 * else a summary line, then per layer its ranges in first-touch order ("<ms>ms  <path>  <offset>+<length>").
 */
export default defineCommand({
  meta: { name: "info", description: "Show a stored load order document: its ranges per layer, in order" },
  args: {
    name: { type: "positional", description: "Workload name", required: true },
    ref: { type: "string", description: "Image reference (needed when several images have a document of NAME)" },
    json: { type: "boolean", description: "Print the document as JSON" },
  },
  async run({ args }) {
    const store = artifactStore(cliContext());
    const record = await oneLod(store, String(args.name), args.ref === undefined ? undefined : String(args.ref));
    const doc = await readLod(store, record);
    if (args.json) return printJson(doc);
    const s = lodSummary(doc);
    const lines = [
      lodLine(record, doc),
      `image ${doc.image.manifestDigest}, recorded ${doc.createdAt} over ${doc.durationMs} ms, document ${record.lodDigest}`,
    ];
    for (const [i, l] of doc.layers.entries()) {
      lines.push(
        `layer ${l.digest}: ${s.layers[i]!.ranges} ranges, ${s.layers[i]!.files} files, ${s.layers[i]!.bytes} bytes`,
      );
      for (const r of l.ranges) lines.push(`  ${String(r.atMs).padStart(7)}ms  ${r.path}  ${r.offset}+${r.length}`);
    }
    await writeOut(`${lines.join("\n")}\n`);
  },
});

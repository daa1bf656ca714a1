import { defineCommand } from "citty";
import { loadZtoc } from "../soci/ztoc_store.ts";
import { formatZtocInfoJson, ztocInfo } from "../ztoc/info.ts";
import { cliContext } from "./context.ts";
import { artifactStore, printTable } from "./index_shared.ts";
import { writeOut } from "./output.ts";

/** `soci-ts ztoc info DIGEST`: the zTOC's summary and files, with the JSON fields of `soci ztoc info`. */
export default defineCommand({
  meta: {
    name: "info",
    description: "Show a zTOC: version, build tool, spans and files (JSON fields as soci ztoc info)",
  },
  args: {
    digest: { type: "positional", description: "zTOC digest (sha256:…)", required: true },
    json: { type: "boolean", description: "Print JSON (the same fields as `soci ztoc info`)" },
  },
  async run({ args }) {
    const { ztoc, bytes } = await loadZtoc(artifactStore(cliContext()), String(args.digest));
    const info = ztocInfo(ztoc, { sizeBytes: bytes.length });
    if (args.json) return await writeOut(`${formatZtocInfoJson(info)}\n`);
    await writeOut(
      `version: ${info.version}\nbuild tool: ${info.build_tool}\nsize: ${info.size}\nspan size: ${info.span_size}\n` +
        `spans: ${info.num_spans}\nfiles: ${info.num_files} (${info.num_multi_span_files} span several spans)\n\n`,
    );
    await printTable(
      ["FILENAME", "OFFSET", "SIZE", "TYPE", "SPANS"],
      (info.files ?? []).map((f) => [
        f.filename,
        String(f.offset),
        String(f.size),
        f.type,
        `${f.start_span}-${f.end_span}`,
      ]),
    );
  },
});

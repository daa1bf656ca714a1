import { defineCommand } from "citty";
import { listLods, readLod } from "../soci/lod_store.ts";
import { lodSummary } from "../soci/lod.ts";
import { errorMessage } from "../util/errors.ts";
import { cliContext } from "./context.ts";
import { artifactStore, printJson, printTable } from "./index_shared.ts";

/** `soci-ts lod list [--ref REF] [--json]`: the load order documents in the local store, newest first. */
export default defineCommand({
  meta: { name: "list", description: "List load order documents (LODs) in the local artifact store" },
  args: {
    ref: { type: "string", description: "Only documents of this image reference" },
    json: { type: "boolean", description: "Print JSON records" },
  },
  async run({ args }) {
    const store = artifactStore(cliContext());
    const records = await listLods(store, args.ref === undefined ? {} : { ref: String(args.ref) });
    const rows = await Promise.all(
      records.map(async (r) => {
        try {
          return { record: r, summary: lodSummary(await readLod(store, r)) };
        } catch (err) {
          return { record: r, error: errorMessage(err) };
        }
      }),
    );
    if (args.json) {
      return printJson(
        rows.map((x) => ({
          ...x.record,
          ...(x.summary ? { ranges: x.summary.ranges, files: x.summary.files, bytes: x.summary.bytes } : {}),
          ...(x.error ? { error: x.error } : {}),
        })),
      );
    }
    await printTable(
      ["WORKLOAD", "IMAGE REF", "MANIFEST DIGEST", "RANGES", "FILES", "BYTES", "CREATED"],
      rows.map(({ record: r, summary: s, error }) => [
        r.workload,
        r.imageRef,
        r.subject.digest,
        s ? String(s.ranges) : `unreadable: ${error}`,
        s ? String(s.files) : "",
        s ? String(s.bytes) : "",
        r.createdAt,
      ]),
    );
  },
});

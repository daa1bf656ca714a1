import { defineCommand } from "citty";
import { parseReference } from "../registry/reference.ts";
import { RegistryLocation } from "../soci/image_location.ts";
import { listLods, pushLod } from "../soci/lod_store.ts";
import { checkWorkloadName } from "../soci/lod.ts";
import { NotFoundError } from "../util/errors.ts";
import { cliContext } from "./context.ts";
import { artifactStore, printJson } from "./index_shared.ts";
import { registryClient } from "./open_location.ts";
import { writeOut } from "./output.ts";

/**
 * `soci-ts lod push NAME REF`: push the stored load order document of workload NAME for the image REF resolves
 * to (host platform) as a referrer of that image manifest, the workload named in an annotation.
 */
export default defineCommand({
  meta: {
    name: "push",
    description: "Push a stored load order document to the image's registry (Referrers API or fallback tag)",
  },
  args: {
    name: { type: "positional", description: "Workload name", required: true },
    ref: { type: "positional", description: "Image: HOST/REPO[:TAG|@DIGEST]", required: true },
    json: { type: "boolean", description: "Print the result as JSON" },
  },
  async run({ args }) {
    const ctx = cliContext();
    const workload = checkWorkloadName(String(args.name));
    const store = artifactStore(ctx);
    const location = new RegistryLocation(registryClient(ctx), parseReference(String(args.ref)), String(args.ref));
    const image = await location.client.resolveImage(location.ref);
    const [record] = await listLods(store, { workload, manifestDigest: image.descriptor.digest });
    if (!record) {
      throw new NotFoundError(
        `Cannot push load order document "${workload}": none for image "${image.descriptor.digest}" ("${String(args.ref)}") in the local store; record one with "soci-ts mount --record-lod ${workload}"`,
      );
    }
    const { descriptor, pushed } = await pushLod(location, record, { store });
    if (args.json)
      return printJson({ workload, manifestDigest: record.subject.digest, artifactDigest: descriptor.digest, pushed });
    await writeOut(
      `${pushed ? "pushed" : "already present:"} load order document ${workload} as ${descriptor.digest}, referrer of ${record.subject.digest}\n`,
    );
  },
});

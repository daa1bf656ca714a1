import { defineCommand } from "citty";
import { pushIndexes } from "../soci/push.ts";
import { formatPlatform } from "../oci/platform.ts";
import { InvalidArgumentError } from "../util/errors.ts";
import { cliContext } from "./context.ts";
import { artifactStore, hostPlatform, platformsFrom, printJson } from "./index_shared.ts";
import { writeOut } from "./output.ts";
import { openLocation } from "./open_location.ts";

/** `soci-ts index push REF`: push the stored v1 index of each platform as a referrer of the image manifest. */
export default defineCommand({
  meta: {
    name: "push",
    description: "Push the locally stored v1 SOCI index of an image to its registry (Referrers API or fallback tag)",
  },
  args: {
    ref: { type: "positional", description: "Image: HOST/REPO[:TAG|@DIGEST] or oci:DIR[:TAG]", required: true },
    platform: {
      type: "string",
      alias: "p",
      description: "Platform(s), os/arch[/variant], comma-separated (default: the host's)",
    },
    allPlatforms: { type: "boolean", description: "Push the index of every platform" },
    existingIndex: {
      type: "string",
      description: "When the registry already lists a v1 index: skip or allow (default allow)",
    },
    json: { type: "boolean", description: "Print the result as JSON" },
  },
  async run({ args }) {
    const ctx = cliContext();
    const existing = args.existingIndex === undefined ? "allow" : String(args.existingIndex);
    if (existing !== "skip" && existing !== "allow") {
      throw new InvalidArgumentError(`Option "--existing-index" must be skip or allow, got "${existing}"`);
    }
    const pushed = await pushIndexes(openLocation(String(args.ref), ctx), {
      store: artifactStore(ctx),
      platforms: platformsFrom(args.platform),
      allPlatforms: Boolean(args.allPlatforms),
      hostPlatform: hostPlatform(),
      existing,
    });
    if (args.json) {
      await printJson(
        pushed.map((p) => ({
          indexDigest: p.indexDescriptor.digest,
          manifestDigest: p.image.descriptor.digest,
          platform: formatPlatform(p.image.platform),
          pushed: p.pushed,
          blobs: p.blobs,
        })),
      );
      return;
    }
    for (const p of pushed) {
      await writeOut(
        `${p.pushed ? "pushed" : "already present:"} index ${p.indexDescriptor.digest} for ${formatPlatform(p.image.platform)} image ${p.image.descriptor.digest}${p.pushed ? ` (${p.blobs} blobs uploaded)` : ""}\n`,
      );
    }
  },
});

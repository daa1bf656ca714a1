import { defineCommand } from "citty";
import { convertImage } from "../soci/convert.ts";
import { formatPlatform } from "../oci/platform.ts";
import { cliContext } from "./context.ts";
import { buildOptionsFrom, printJson, progressReporter } from "./index_shared.ts";
import { writeOut } from "./output.ts";
import { openLocation } from "./open_location.ts";

/**
 * `soci-ts convert SRC DST`: write the SOCI-enabled image (index manifest v2) of SRC to DST, a registry
 * reference or `oci:DIR:TAG`. The image stays runnable by any runtime; lazy loaders find the index through
 * the `com.amazon.soci.index-digest` annotation.
 */
export default defineCommand({
  meta: {
    name: "convert",
    description: "Write a SOCI-enabled image (SOCI index v2) of SRC to DST (registry reference or oci:DIR:TAG)",
  },
  args: {
    src: { type: "positional", description: "Source image: HOST/REPO[:TAG|@DIGEST] or oci:DIR[:TAG]", required: true },
    dst: { type: "positional", description: "Destination, with a tag: HOST/REPO:TAG or oci:DIR:TAG", required: true },
    spanSize: {
      type: "string",
      description:
        "Uncompressed bytes per span (default from config: 256KiB, the fastest in bench:lazy and bench:lod; 4MiB, SOCI's default, for indexes AWS SOCI reads: it fetches every checkpoint window of a zTOC before the first read)",
    },
    minLayerSize: {
      type: "string",
      description: "Skip layers smaller than this, compressed (default from config: 10MiB)",
    },
    platform: {
      type: "string",
      alias: "p",
      description: "Platform(s) to convert, comma-separated (default: the host's)",
    },
    allPlatforms: { type: "boolean", description: "Convert every platform" },
    tocAnnotation: {
      type: "boolean",
      description:
        "Also put each indexed layer's zTOC digest in its eStargz TOC annotation, so podman 5 asks the store for it",
    },
    json: { type: "boolean", description: "Print the result as JSON" },
  },
  async run({ args }) {
    const ctx = cliContext();
    const progress = progressReporter();
    let res: Awaited<ReturnType<typeof convertImage>>;
    try {
      res = await convertImage(openLocation(String(args.src), ctx), openLocation(String(args.dst), ctx), {
        ...buildOptionsFrom(args, ctx),
        onProgress: progress.onProgress,
        tocAnnotation: args.tocAnnotation === true,
      });
    } finally {
      progress.done();
    }
    if (args.json) {
      return printJson({
        indexDigest: res.descriptor.digest,
        images: res.images.map((i) => ({
          platform: formatPlatform(i.built.image.platform),
          manifestDigest: i.imageDescriptor.digest,
          sociIndexDigest: i.indexDescriptor.digest,
          ztocs: i.built.ztocs.length,
        })),
      });
    }
    for (const i of res.images) {
      await writeOut(
        `${formatPlatform(i.built.image.platform)}: image ${i.imageDescriptor.digest} with SOCI index ${i.indexDescriptor.digest} (${i.built.ztocs.length} zTOCs)\n`,
      );
    }
    await writeOut(`wrote ${String(args.dst)} (${res.descriptor.digest})\n`);
  },
});

/**
 * From an image location to the platform-specific images to index: an index (OCI index or Docker manifest
 * list) is narrowed to the platforms asked for (default: the host's), or to all of them with `allPlatforms`;
 * a single manifest is taken as is, its platform read from its config.
 */
import { isIndex } from "../oci/manifest.ts";
import { MediaType } from "../oci/media_types.ts";
import { formatPlatform, platformMatches } from "../oci/platform.ts";
import type { Descriptor, ImageConfig, ImageIndex, Manifest, Platform } from "../oci/types.ts";
import type { FetchedManifest } from "../registry/types.ts";
import { FormatError, NotFoundError } from "../util/errors.ts";
import type { ImageLocation } from "./image_location.ts";

/** One platform-specific image, with its manifest and config. */
export interface ResolvedImage {
  /** Descriptor of the image manifest (digest, size, mediaType). */
  descriptor: Descriptor;
  manifest: Manifest;
  /** Exact bytes of the manifest. */
  bytes: Uint8Array;
  config: ImageConfig;
  configBytes: Uint8Array;
  platform: Platform;
}

export interface ResolveOptions {
  /** Platforms wanted (default: `[hostPlatform]`). Ignored with `allPlatforms`. */
  platforms?: Platform[];
  /** Every platform of an index (attestations, "unknown/unknown", left out). */
  allPlatforms?: boolean;
  /** The platform used when none is given. */
  hostPlatform?: Platform;
  signal?: AbortSignal;
}

/** The root manifest of a location, and the platform images chosen from it. */
export interface Resolution {
  root: FetchedManifest;
  images: ResolvedImage[];
}

/**
 * Resolve a location to its images.
 * @throws NotFoundError when no manifest matches a platform asked for
 */
export async function resolveImages(location: ImageLocation, opts: ResolveOptions = {}): Promise<Resolution> {
  const signal = opts.signal;
  const root = await location.getRoot({ signal });
  if (!isIndex(root.manifest)) {
    return { root, images: [await loadImage(location, root, undefined, signal)] };
  }
  const index = root.manifest as ImageIndex;
  const candidates = index.manifests.filter(
    (d) =>
      d.mediaType !== MediaType.OCI_INDEX &&
      d.mediaType !== MediaType.DOCKER_MANIFEST_LIST &&
      d.platform !== undefined &&
      d.platform.os !== "unknown" &&
      d.artifactType === undefined,
  );
  let chosen: Descriptor[];
  if (opts.allPlatforms) {
    chosen = candidates;
    if (chosen.length === 0)
      throw new NotFoundError(`Cannot find an image in "${location.name}": the index lists no platforms`);
  } else {
    const wanted = opts.platforms?.length
      ? opts.platforms
      : [opts.hostPlatform ?? { os: "linux", architecture: "amd64" }];
    chosen = [];
    for (const want of wanted) {
      const d = candidates.find((c) => platformMatches(want, c.platform!));
      if (!d) {
        throw new NotFoundError(
          `Cannot find platform "${formatPlatform(want)}" in "${location.name}" (it has ${
            candidates.map((c) => `"${formatPlatform(c.platform!)}"`).join(", ") || "none"
          })`,
        );
      }
      if (!chosen.includes(d)) chosen.push(d);
    }
  }
  const images: ResolvedImage[] = [];
  for (const d of chosen) {
    const fetched = await location.getManifest(d.digest, { signal });
    images.push(await loadImage(location, fetched, d.platform, signal));
  }
  return { root, images };
}

// biome-ignore lint/complexity/useMaxParams: module-private helper
async function loadImage(
  location: ImageLocation,
  fetched: FetchedManifest,
  platform: Platform | undefined,
  signal: AbortSignal | undefined,
): Promise<ResolvedImage> {
  const manifest = fetched.manifest as Manifest;
  if (isIndex(fetched.manifest) || !manifest.config || !Array.isArray(manifest.layers)) {
    throw new FormatError(
      `Cannot index "${location.name}": "${fetched.descriptor.digest}" is not an image manifest`,
      0,
    );
  }
  const configBytes = await location.getBlob(manifest.config.digest, { signal });
  let config: ImageConfig;
  try {
    config = JSON.parse(new TextDecoder().decode(configBytes)) as ImageConfig;
  } catch (cause) {
    throw new FormatError(`Cannot parse image config "${manifest.config.digest}" of "${location.name}": not JSON`, 0, {
      cause,
    });
  }
  const p: Platform = platform
    ? { ...platform }
    : {
        architecture: config.architecture ?? "amd64",
        os: config.os ?? "linux",
        ...(config.variant ? { variant: config.variant } : {}),
      };
  return { descriptor: { ...fetched.descriptor }, manifest, bytes: fetched.bytes, config, configBytes, platform: p };
}

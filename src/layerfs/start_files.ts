/**
 * The files a container runtime reads at every container start, fetched as soon as the layer holding the image's
 * copy is open rather than by the start's own read: containerd's spec generation (ctr, CRI) and podman read
 * /etc/passwd and /etc/group from the image's root file system to resolve the user and its groups. Cold, that
 * read is a span round trip on the container's start path, after the pull (bench:containerd: ~50 ms between
 * containerd mounting the root file system and creating the task).
 *
 * `startFileRanges` finds, for each path, the copy the merged view of the image shows (image_paths.ts: the layer
 * tree's rules, overlayfs's merge, symlinks followed). Paths found nowhere, hidden, or not regular files are
 * skipped: this is a prefetch, never an error.
 */
import { type ImageLayers, resolveImagePaths } from "./image_paths.ts";

/** What every container start reads (see the file comment). */
export const START_FILES: readonly string[] = ["etc/passwd", "etc/group"];

/**
 * Where the visible copy of each of `paths` (clean relative paths, as "etc/passwd") is, as byte ranges
 * [start, end) of the uncompressed layer by layer digest, for an image's `layers` bottom first (`ztoc` undefined for
 * a layer that is not lazy). Layers without any are absent. (The layer maps them to its spans when it opens.)
 */
export function startFileRanges(
  layers: ImageLayers,
  paths: readonly string[] = START_FILES,
): Map<string, Array<[number, number]>> {
  const out = new Map<string, Array<[number, number]>>();
  for (const found of resolveImagePaths(layers, paths)) {
    if (!found || found.entry.uncompressedSize === 0) continue;
    const digest = layers[found.layer]!.digest;
    const ranges = out.get(digest) ?? [];
    ranges.push([found.entry.uncompressedOffset, found.entry.uncompressedOffset + found.entry.uncompressedSize]);
    out.set(digest, ranges);
  }
  return out;
}

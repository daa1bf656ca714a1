/**
 * Snapshot labels the snapshotter reads and writes, and containerd's label size rule.
 *
 * containerd passes a backend only `containerd.io/snapshot.ref` and keys under `containerd.io/snapshot/`
 * (FilterInheritedLabels, containerd-and-podman.md §1.4). Which of them a pull carries, and who sets them:
 * containerd-and-podman.md §2.1 and soci-formats-and-behaviour.md §4.2.
 */
import { InvalidArgumentError } from "../util/errors.ts";

/** The chain ID of the layer being unpacked; its presence on Prepare means "try to prepare it remotely". */
export const TARGET_SNAPSHOT_LABEL = "containerd.io/snapshot.ref";
/** Written on a snapshot committed over a lazy (remote) mount; restore() and Remove look for it. */
export const REMOTE_LABEL = "containerd.io/snapshot/remote";
/** The value of `REMOTE_LABEL` (stargz's and SOCI's spelling). */
export const REMOTE_LABEL_VALUE = "remote snapshot";
/** The image reference as pulled (CRI's AppendInfoHandlerWrapper). */
export const CRI_IMAGE_REF_LABEL = "containerd.io/snapshot/cri.image-ref";
/** The compressed digest of the layer. */
export const CRI_LAYER_DIGEST_LABEL = "containerd.io/snapshot/cri.layer-digest";
/** The image manifest's digest. */
export const CRI_MANIFEST_DIGEST_LABEL = "containerd.io/snapshot/cri.manifest-digest";
/** Comma-separated digests of this layer and the ones above it, truncated to fit the label limit. */
export const CRI_IMAGE_LAYERS_LABEL = "containerd.io/snapshot/cri.image-layers";
/** AWS SOCI: the SOCI index digest to use (may be present and empty). */
export const SOCI_INDEX_DIGEST_LABEL = "containerd.io/snapshot/remote/soci.index.digest";
/** AWS SOCI: the compressed size of the layer (its `soci image rpull` sets the layer descriptor's size). */
export const SOCI_SIZE_LABEL = "containerd.io/snapshot/remote/soci.size";
/** AWS SOCI: comma-separated sizes of the layers in `CRI_IMAGE_LAYERS_LABEL`. */
export const IMAGE_LAYERS_SIZE_LABEL = "containerd.io/snapshot/remote/image.layers.size";

/**
 * soci-ts: the workload whose load order document to replay when the layer is mounted lazily (set by
 * `soci-ts pull --lod NAME`, or on a pod's snapshots); absent → none.
 */
export const LOD_LABEL = "containerd.io/snapshot/soci-ts.lod";

/**
 * soci-ts: the workload whose load order document `serve` records from the reads of the layer, with the other
 * layers of the image mounted for the same recording (set by `soci-ts pull --record-lod NAME`); absent → the
 * first `[lod] record` rule matching the image, else none. Not acted on when a restart mounts the layer again.
 */
export const RECORD_LOD_LABEL = "containerd.io/snapshot/soci-ts.record-lod";

/** Largest size of one label, key plus value, in UTF-8 bytes (containerd's labels.Validate). */
export const MAX_LABEL_BYTES = 4096;

const utf8 = new TextEncoder();

/**
 * Checks every label against containerd's limit (key + value ≤ 4096 UTF-8 bytes). Throws InvalidArgumentError
 * naming the first key over it (cut to 128 characters so the message stays readable).
 */
export function validateLabels(labels: Readonly<Record<string, string>>): void {
  for (const [key, value] of Object.entries(labels)) {
    // Cheap bound first: a UTF-16 unit is at most 3 UTF-8 bytes.
    if ((key.length + value.length) * 3 <= MAX_LABEL_BYTES) continue;
    const bytes = utf8.encode(key).length + utf8.encode(value).length;
    if (bytes > MAX_LABEL_BYTES) {
      const shown = key.length > 128 ? `${key.slice(0, 128)}…` : key;
      throw new InvalidArgumentError(
        `Cannot accept label "${shown}": key and value are ${bytes} bytes, more than the limit of ${MAX_LABEL_BYTES}`,
      );
    }
  }
}

/** True when the labels mark a snapshot committed over a remote (lazy) mount. */
export function isRemoteSnapshot(labels: Readonly<Record<string, string>>): boolean {
  return labels[REMOTE_LABEL] !== undefined;
}

/**
 * True when the labels say enough for a RemoteFs to find the layer: the image reference and the layer digest
 * (CRI's labels; without them, e.g. a plain `ctr image pull` on containerd 1.6, a Prepare is always local).
 */
export function hasRemoteLayerLabels(labels: Readonly<Record<string, string>>): boolean {
  return !!labels[CRI_IMAGE_REF_LABEL] && !!labels[CRI_LAYER_DIGEST_LABEL];
}

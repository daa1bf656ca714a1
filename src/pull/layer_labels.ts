/**
 * The labels `soci-ts pull` puts on each layer's Prepare: what tells a remote snapshotter to mount the layer
 * lazily (containerd-and-podman.md §2.1, soci-formats-and-behaviour.md §4.2).
 *  - `containerd.io/snapshot.ref` = the layer's chain ID: the snapshot name the snapshotter commits under when
 *    it takes the layer remotely (it then answers ALREADY_EXISTS);
 *  - CRI's `containerd.io/snapshot/cri.{image-ref,manifest-digest,layer-digest,image-layers}`, which soci-ts's
 *    `serve` and AWS SOCI read;
 *  - AWS SOCI's `containerd.io/snapshot/remote/soci.index.digest` (the index, "" to let it discover one),
 *    `…/soci.size` (the layer's compressed size) and `…/image.layers.size` (the sizes of `cri.image-layers`),
 *    as its `soci image rpull` sets them (read from AWS SOCI 0.4.1's binary and source).
 *  - soci-ts's `containerd.io/snapshot/soci-ts.lod` = the workload whose load order document `serve` replays,
 *    when one was chosen (`soci-ts pull --lod NAME`), and `containerd.io/snapshot/soci-ts.record-lod` = the
 *    workload whose document `serve` records from what the image's containers read (`pull --record-lod NAME`).
 * `cri.image-layers` lists this layer and the ones above it, as many as fit in containerd's label limit
 * (key + value ≤ 4096 bytes), as containerd's AppendInfoHandlerWrapper does; `image.layers.size` follows it.
 */
import type { Descriptor } from "../oci/types.ts";
import {
  CRI_IMAGE_LAYERS_LABEL,
  CRI_IMAGE_REF_LABEL,
  CRI_LAYER_DIGEST_LABEL,
  CRI_MANIFEST_DIGEST_LABEL,
  IMAGE_LAYERS_SIZE_LABEL,
  LOD_LABEL,
  MAX_LABEL_BYTES,
  RECORD_LOD_LABEL,
  SOCI_INDEX_DIGEST_LABEL,
  SOCI_SIZE_LABEL,
  TARGET_SNAPSHOT_LABEL,
} from "../snapshot/labels.ts";

/** What `layerLabels` needs to know about the image. */
export interface LayerLabelsInput {
  /** The image reference as pulled (`host/repo:tag`). */
  imageRef: string;
  /** Digest of the platform's image manifest. */
  manifestDigest: string;
  /** The image's layers, bottom first. */
  layers: readonly Descriptor[];
  /** Chain ID of each layer (chain_ids.ts). */
  chainIds: readonly string[];
  /** The SOCI index found for the image ("" or absent: none, the snapshotter looks itself). */
  sociIndexDigest?: string;
  /** The workload whose load order document to replay (absent: no label, none). */
  lod?: string;
  /** The workload whose load order document to record (absent: no label). */
  recordLod?: string;
}

const utf8 = new TextEncoder();

/** The Prepare labels of layer `index` (see the file comment). */
export function layerLabels(input: LayerLabelsInput, index: number): Record<string, string> {
  const layer = input.layers[index]!;
  const digests: string[] = [];
  const sizes: string[] = [];
  let used = utf8.encode(CRI_IMAGE_LAYERS_LABEL).length;
  for (const l of input.layers.slice(index)) {
    const add = (digests.length > 0 ? 1 : 0) + l.digest.length;
    if (used + add > MAX_LABEL_BYTES) break;
    used += add;
    digests.push(l.digest);
    sizes.push(String(l.size));
  }
  return {
    [TARGET_SNAPSHOT_LABEL]: input.chainIds[index]!,
    [CRI_IMAGE_REF_LABEL]: input.imageRef,
    [CRI_MANIFEST_DIGEST_LABEL]: input.manifestDigest,
    [CRI_LAYER_DIGEST_LABEL]: layer.digest,
    [CRI_IMAGE_LAYERS_LABEL]: digests.join(","),
    [SOCI_INDEX_DIGEST_LABEL]: input.sociIndexDigest ?? "",
    [SOCI_SIZE_LABEL]: String(layer.size),
    [IMAGE_LAYERS_SIZE_LABEL]: sizes.join(","),
    ...(input.lod ? { [LOD_LABEL]: input.lod } : {}),
    ...(input.recordLod ? { [RECORD_LOD_LABEL]: input.recordLod } : {}),
  };
}

/**
 * The labels `soci-ts pull` puts on the blobs it writes to containerd's content store: the ones a real
 * `ctr image pull` leaves (measured against containerd 1.6.20, grpc-snapshotter-notes.md "The client side").
 * The `containerd.io/gc.ref.*` labels tell containerd's garbage collector what a blob keeps alive: an index its
 * platform manifests (`gc.ref.content.m.<i>`), a manifest its config (`gc.ref.content.config`) and layers
 * (`gc.ref.content.l.<i>`), a config the snapshot of its top layer (`gc.ref.snapshot.<snapshotter>`), so that
 * the image record alone keeps everything once the pull's lease is gone.
 */
import type { Manifest } from "../oci/types.ts";
import type { Reference } from "../registry/types.ts";

/** Prefix of the label naming where a blob came from: `<prefix>.<registry host without port>` = repository. */
export const DISTRIBUTION_SOURCE_LABEL_PREFIX = "containerd.io/distribution.source";
/** On a layer blob: the digest of its uncompressed tar (the diffID). */
export const UNCOMPRESSED_LABEL = "containerd.io/uncompressed";
/** Prefix of the garbage collector's reference labels to content. */
export const GC_REF_CONTENT_PREFIX = "containerd.io/gc.ref.content";
/** Prefix of the garbage collector's reference labels to snapshots (`<prefix>.<snapshotter>`). */
export const GC_REF_SNAPSHOT_PREFIX = "containerd.io/gc.ref.snapshot";
/** On a lease: when containerd may drop it by itself (RFC 3339). */
export const GC_EXPIRE_LABEL = "containerd.io/gc.expire";

/**
 * `containerd.io/distribution.source.<host>` = repository, as containerd spells it: the registry host without
 * its port (containerd takes `url.Hostname()`).
 */
export function distributionSourceLabel(ref: Reference): Record<string, string> {
  const host = ref.registry.replace(/:\d+$/, "").replace(/^\[(.*)\]$/, "$1");
  return { [`${DISTRIBUTION_SOURCE_LABEL_PREFIX}.${host}`]: ref.repository };
}

/** An index's labels: the platform manifests pulled (`gc.ref.content.m.<i>`) and the source. */
export function indexLabels(ref: Reference, manifestDigests: readonly string[]): Record<string, string> {
  const out = distributionSourceLabel(ref);
  for (const [i, d] of manifestDigests.entries()) out[`${GC_REF_CONTENT_PREFIX}.m.${i}`] = d;
  return out;
}

/** An image manifest's labels: its config, its layers and the source. */
export function manifestLabels(ref: Reference, manifest: Manifest): Record<string, string> {
  const out = distributionSourceLabel(ref);
  out[`${GC_REF_CONTENT_PREFIX}.config`] = manifest.config.digest;
  for (const [i, l] of manifest.layers.entries()) out[`${GC_REF_CONTENT_PREFIX}.l.${i}`] = l.digest;
  return out;
}

/** A config's labels: the snapshot of the top layer (its chain ID) in `snapshotter`, and the source. */
export function configLabels(ref: Reference, snapshotter: string, topChainId: string): Record<string, string> {
  return { ...distributionSourceLabel(ref), [`${GC_REF_SNAPSHOT_PREFIX}.${snapshotter}`]: topChainId };
}

/** A layer blob's labels: its diffID and the source. */
export function layerContentLabels(ref: Reference, diffId: string): Record<string, string> {
  return { ...distributionSourceLabel(ref), [UNCOMPRESSED_LABEL]: diffId };
}

/**
 * What the `lod` commands and `mount --record-lod` share: turning a recording into a stored load order
 * document, finding a stored one by name and image, and printing one.
 */
import type { MountedImage } from "../layerfs/image_mount.ts";
import { type LodRecorder, storeRecording } from "../layerfs/lod_recorder.ts";
import type { ArtifactStore } from "../soci/artifact_store.ts";
import { type LoadOrderDocument, lodSummary } from "../soci/lod.ts";
import { listLods, type LodRecord } from "../soci/lod_store.ts";
import { InvalidArgumentError, NotFoundError } from "../util/errors.ts";

/**
 * Store (in `opts.store`) what `recorder` saw on the lazy layers of `img` as workload `workload`'s LOD of the
 * image (lod_recorder.ts storeRecording). Returns the record and document, or undefined when the workload read
 * nothing of a lazy layer (nothing is stored then).
 */
export function saveRecording(
  recorder: LodRecorder,
  img: MountedImage,
  opts: { store: ArtifactStore; workload: string; imageRef: string; now?: () => Date },
): Promise<{ record: LodRecord; doc: LoadOrderDocument } | undefined> {
  const image = {
    manifest: img.manifest.descriptor,
    layers: img.layers.map(({ layer }) => ({ digest: layer.digest })),
    ztocs: img.ztocs,
  };
  return storeRecording(recorder, image, opts);
}

/**
 * The one local record of `workload` (of the image `ref` names, when given; the newest when several images
 * have one and no `ref` narrows them is an error).
 * @throws NotFoundError when there is none; InvalidArgumentError when several images have one and no `ref`
 */
export async function oneLod(store: ArtifactStore, workload: string, ref?: string): Promise<LodRecord> {
  const records = await listLods(store, { workload, ref });
  if (records.length === 0) {
    throw new NotFoundError(
      `Cannot find load order document "${workload}"${ref ? ` of "${ref}"` : ""} in the local store "${store.root}"`,
    );
  }
  const images = new Set(records.map((r) => r.subject.digest));
  if (images.size > 1) {
    throw new InvalidArgumentError(
      `Cannot choose load order document "${workload}": ${images.size} images have one (${records.map((r) => r.imageRef || r.subject.digest).join(", ")}); name one with --ref`,
    );
  }
  return records[0]!;
}

/** One line about a stored document: "<workload> <image> <n> ranges in <f> files, <bytes> bytes". */
export function lodLine(record: LodRecord, doc: LoadOrderDocument): string {
  const s = lodSummary(doc);
  return `${record.workload}  ${record.imageRef || record.subject.digest}  ${s.ranges} ranges in ${s.files} files, ${s.bytes} bytes, ${doc.layers.length} layers`;
}

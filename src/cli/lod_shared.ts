/**
 * What the `lod` commands and `mount --record-lod` share: turning a recording into a stored load order
 * document, finding a stored one by name and image, and printing one.
 */
import type { MountedImage } from "../layerfs/image_mount.ts";
import type { LodRecorder } from "../layerfs/lod_recorder.ts";
import type { ArtifactStore } from "../soci/artifact_store.ts";
import { buildLod, type LoadOrderDocument, lodSummary, type RecordedLayer } from "../soci/lod.ts";
import { listLods, type LodRecord, putLod } from "../soci/lod_store.ts";
import { InvalidArgumentError, NotFoundError } from "../util/errors.ts";

/**
 * Store (in `opts.store`) what `recorder` saw on the lazy layers of `img` as workload `workload`'s LOD of the image. Returns the
 * record and document, or undefined when the workload read nothing of a lazy layer (nothing is stored then).
 */
export async function saveRecording(
  recorder: LodRecorder,
  img: MountedImage,
  opts: { store: ArtifactStore; workload: string; imageRef: string; now?: () => Date },
): Promise<{ record: LodRecord; doc: LoadOrderDocument } | undefined> {
  const { store } = opts;
  const logs = recorder.logs();
  const layers: RecordedLayer[] = [];
  for (const { layer } of img.layers) {
    const ztoc = img.ztocs.get(layer.digest);
    const log = logs.get(layer.digest);
    if (ztoc && log) layers.push({ digest: layer.digest, ztoc, log });
  }
  const doc = buildLod({
    workload: opts.workload,
    manifestDigest: img.manifest.descriptor.digest,
    reference: opts.imageRef,
    createdAt: (opts.now?.() ?? new Date()).toISOString(),
    durationMs: recorder.durationMs,
    layers,
  });
  if (doc.layers.length === 0) return undefined;
  const record = await putLod(store, doc, { subject: img.manifest.descriptor, imageRef: opts.imageRef });
  return { record, doc };
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

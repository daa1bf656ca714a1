/**
 * Building SOCI indexes: one zTOC per image layer that is big enough and of a supported format, then the
 * index manifest listing them (see index.ts).
 *
 * Steps of `buildIndex(location, image)`:
 *  1. for each layer, in image order: skip it when smaller than `minLayerSizeBytes` (compressed size, as SOCI
 *     compares) or when its media type has no zinfo backend (zstd); else stream the blob through the zTOC
 *     builder (src/ztoc/builder.ts), which inflates it once, recording checkpoints every `spanSizeBytes`;
 *  2. encode each zTOC (FlatBuffers) and describe it with the layer annotations SOCI writes, plus soci-ts's
 *     checkpoint table for gzip layers (src/ztoc/checkpoint_table.ts), left out of every descriptor when the
 *     tables together would exceed `maxCheckpointTableBytes`;
 *  3. with `prefetchPaths`, one prefetch artifact per indexed layer holding any of them (prefetch.ts);
 *  4. assemble the index: zTOC descriptors in image order, then the prefetch artifacts; v1 with the image
 *     manifest as subject, v2 without;
 *  5. fail with FailedPreconditionError when every layer was skipped (SOCI's ErrEmptyIndex).
 * Nothing is stored here; `createIndexes` (create.ts) stores, records and pushes.
 */
import { MediaType } from "../oci/media_types.ts";
import type { Descriptor } from "../oci/types.ts";
import { FailedPreconditionError, FormatError, InvalidArgumentError } from "../util/errors.ts";
import type { Ztoc } from "../ztoc/types.ts";
import { buildZtoc } from "../ztoc/builder.ts";
import { ANNOTATION_CHECKPOINT_TABLE, buildCheckpointTable, encodeCheckpointTable } from "../ztoc/checkpoint_table.ts";
import { sha256Digest } from "../util/digest.ts";
import type { ImageLocation } from "./image_location.ts";
import {
  createIndex,
  DEFAULT_BUILD_TOOL_IDENTIFIER,
  DEFAULT_MIN_LAYER_SIZE_BYTES,
  DEFAULT_SPAN_SIZE_BYTES,
  encodeIndex,
  type SociIndex,
  type SociIndexVersion,
  ztocDescriptor,
} from "./index.ts";
import { buildPrefetchArtifacts, type LayerPrefetchArtifact } from "./prefetch.ts";
import type { ResolvedImage } from "./resolve_images.ts";

/** How a layer's media type is indexed: a zinfo backend name, or undefined when it cannot be. */
export type LayerFormat = "gzip" | "uncompressed";

/**
 * Layer media types → zinfo backend, as SOCI maps containerd's DiffCompression names: gzip types to gzip,
 * plain tar (and unknown types) to the tar backend; zstd has none (skipped, the index is sparse).
 */
const LAYER_FORMATS: Record<string, LayerFormat | undefined> = {
  [MediaType.OCI_LAYER_GZIP]: "gzip",
  [MediaType.OCI_LAYER_NONDIST_GZIP]: "gzip",
  [MediaType.DOCKER_LAYER_GZIP]: "gzip",
  [MediaType.DOCKER_LAYER_FOREIGN_GZIP]: "gzip",
  [MediaType.OCI_LAYER]: "uncompressed",
  "application/vnd.oci.image.layer.nondistributable.v1.tar": "uncompressed",
  [MediaType.OCI_LAYER_ZSTD]: undefined,
  "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": undefined,
};

/** The zinfo backend of a layer media type; undefined for zstd. Unknown types are treated as plain tar. */
export function layerFormat(mediaType: string): LayerFormat | undefined {
  return mediaType in LAYER_FORMATS ? LAYER_FORMATS[mediaType] : "uncompressed";
}

/** Progress of one layer: compressed bytes consumed so far of `totalBytes`. */
export interface LayerProgress {
  layerDigest: string;
  /** 0-based position of the layer in the image. */
  layerIndex: number;
  doneBytes: number;
  totalBytes: number;
}

export interface BuildOptions {
  /** Uncompressed bytes per span (default 4 MiB). */
  spanSizeBytes?: number;
  /** Layers with a smaller compressed size are skipped (default 10 MiB; 0 indexes every layer). */
  minLayerSizeBytes?: number;
  /** Written into every zTOC and the index (default "AWS SOCI CLI v0.2"). */
  buildToolIdentifier?: string;
  /**
   * Annotate each gzip zTOC's descriptor with its checkpoint table (src/ztoc/checkpoint_table.ts), so mounts
   * fetch checkpoint windows as spans need them instead of the whole zTOC first (default true). SOCI ignores it.
   */
  checkpointTable?: boolean;
  /**
   * Checkpoint tables grow the index by about 66 bytes per checkpoint; an index whose tables would take more than
   * this many bytes in all gets none (registries cap manifests, commonly at 4 MiB), and mounts fetch its zTOCs
   * whole. Default 2 MiB (some 32 000 checkpoints: 32 GiB of layers at 1 MiB spans).
   */
  maxCheckpointTableBytes?: number;
  /**
   * Files (paths in the image) whose spans are listed in prefetch artifacts, one per layer that holds any
   * (SOCI's `--prefetch-file`). A path no indexed layer has fails the build. Default none.
   */
  prefetchPaths?: readonly string[];
  /**
   * Inflate gzip layers (and read their tar headers) on a thread of their own while the builder digests spans
   * and encodes TOC entries (see buildZtoc's `inflateThread`). Default: for layers of at least
   * INFLATE_THREAD_MIN_LAYER_BYTES, where the overlap pays for starting the thread.
   */
  inflateThread?: boolean;
  /** Called as layer bytes are consumed. */
  onProgress?: (p: LayerProgress) => void;
  signal?: AbortSignal;
}

/** A built zTOC and the layer it indexes. */
export interface LayerZtoc {
  layer: Descriptor;
  ztoc: Ztoc;
  /** Encoded zTOC (FlatBuffers). */
  bytes: Uint8Array;
  /** The zTOC's descriptor as listed in the index. */
  descriptor: Descriptor;
}

/** A layer the builder did not index, and why. */
export interface SkippedLayer {
  layer: Descriptor;
  reason: string;
}

/** Compressed size from which a gzip layer is inflated on a thread of its own by default (16 MiB). */
export const INFLATE_THREAD_MIN_LAYER_BYTES = 16 << 20;

/** Default BuildOptions.maxCheckpointTableBytes. */
export const DEFAULT_MAX_CHECKPOINT_TABLE_BYTES = 2 * 1024 * 1024;

/** A built index, not stored yet. */
export interface BuiltIndex {
  version: SociIndexVersion;
  image: ResolvedImage;
  index: SociIndex;
  bytes: Uint8Array;
  descriptor: Descriptor;
  ztocs: LayerZtoc[];
  /** Prefetch artifacts, in image layer order (empty without `prefetchPaths`). */
  prefetch: LayerPrefetchArtifact[];
  skipped: SkippedLayer[];
}

/** Check and default the build options. */
export function buildSettings(
  opts: BuildOptions,
): Required<Omit<BuildOptions, "onProgress" | "signal" | "prefetchPaths" | "inflateThread">> {
  const spanSizeBytes = opts.spanSizeBytes ?? DEFAULT_SPAN_SIZE_BYTES;
  const minLayerSizeBytes = opts.minLayerSizeBytes ?? DEFAULT_MIN_LAYER_SIZE_BYTES;
  if (!Number.isSafeInteger(spanSizeBytes) || spanSizeBytes <= 0) {
    throw new InvalidArgumentError(
      `Cannot build SOCI index: span size "${opts.spanSizeBytes}" is not a positive integer`,
    );
  }
  if (!Number.isSafeInteger(minLayerSizeBytes) || minLayerSizeBytes < 0) {
    throw new InvalidArgumentError(
      `Cannot build SOCI index: minimum layer size "${opts.minLayerSizeBytes}" is not a non-negative integer`,
    );
  }
  return {
    spanSizeBytes,
    minLayerSizeBytes,
    buildToolIdentifier: opts.buildToolIdentifier ?? DEFAULT_BUILD_TOOL_IDENTIFIER,
    checkpointTable: opts.checkpointTable ?? true,
    maxCheckpointTableBytes: opts.maxCheckpointTableBytes ?? DEFAULT_MAX_CHECKPOINT_TABLE_BYTES,
  };
}

/**
 * Build the zTOC of one layer from a stream of its blob bytes.
 * @throws the zTOC builder's format errors (GzipFormatError, TarFormatError) naming the layer
 */
export async function buildLayerZtoc(
  stream: ReadableStream<Uint8Array>,
  layer: Descriptor,
  opts: BuildOptions & { layerIndex?: number } = {},
): Promise<LayerZtoc> {
  const settings = buildSettings(opts);
  const format = layerFormat(layer.mediaType);
  if (format === undefined) {
    throw new FailedPreconditionError(
      `Cannot build zTOC of layer "${layer.digest}": media type "${layer.mediaType}" is not supported`,
    );
  }
  const onProgress = opts.onProgress;
  let built: Awaited<ReturnType<typeof buildZtoc>>;
  try {
    built = await buildZtoc(stream, {
      algorithm: format,
      spanSizeBytes: settings.spanSizeBytes,
      buildToolIdentifier: settings.buildToolIdentifier,
      inflateThread: opts.inflateThread ?? layer.size >= INFLATE_THREAD_MIN_LAYER_BYTES,
      onProgress:
        onProgress &&
        ((doneBytes) =>
          onProgress({
            layerDigest: layer.digest,
            layerIndex: opts.layerIndex ?? 0,
            doneBytes,
            totalBytes: layer.size,
          })),
      signal: opts.signal,
    });
  } catch (cause) {
    if (cause instanceof Error && cause.name === "AbortError") throw cause;
    throw rename(cause, `Cannot build zTOC of layer "${layer.digest}"`);
  }
  const { ztoc, bytes, digest } = built;
  if (ztoc.compressedArchiveSize !== layer.size) {
    throw new InvalidArgumentError(
      `Cannot build zTOC of layer "${layer.digest}": the blob has ${ztoc.compressedArchiveSize} bytes, its descriptor says ${layer.size}`,
    );
  }
  const table = settings.checkpointTable ? buildCheckpointTable(bytes) : undefined;
  const descriptor = ztocDescriptor(
    { digest, size: bytes.length },
    {
      layer,
      spanSizeBytes: settings.spanSizeBytes,
      extra: {
        ...(table ? { [ANNOTATION_CHECKPOINT_TABLE]: encodeCheckpointTable(table) } : {}),
      },
    },
  );
  return { layer, ztoc, bytes, descriptor };
}

/** Build the index of one platform image (see the steps at the top of this file). */
export async function buildIndex(
  location: ImageLocation,
  image: ResolvedImage,
  opts: BuildOptions & { version: SociIndexVersion },
): Promise<BuiltIndex> {
  const settings = buildSettings(opts);
  const ztocs: LayerZtoc[] = [];
  const skipped: SkippedLayer[] = [];
  // 1-2. One zTOC per eligible layer, in image order.
  for (const [i, layer] of image.manifest.layers.entries()) {
    opts.signal?.throwIfAborted();
    if (layer.size < settings.minLayerSizeBytes) {
      skipped.push({
        layer,
        reason: `smaller than the minimum layer size (${layer.size} < ${settings.minLayerSizeBytes} bytes)`,
      });
      continue;
    }
    if (layerFormat(layer.mediaType) === undefined) {
      skipped.push({ layer, reason: `media type "${layer.mediaType}" is not supported (expect tar or gzip)` });
      continue;
    }
    const stream = await location.getBlobStream(layer.digest, { signal: opts.signal });
    ztocs.push(await buildLayerZtoc(stream, layer, { ...opts, layerIndex: i }));
  }
  // 2. (the tables' total bound)
  dropLargeCheckpointTables(ztocs, settings.maxCheckpointTableBytes);
  // 5. An index without zTOCs is refused, as SOCI does.
  if (ztocs.length === 0) {
    throw new FailedPreconditionError(
      `Cannot build SOCI index of "${location.name}" (${image.descriptor.digest}): every layer was skipped (${skipped
        .map((s) => `${s.layer.digest}: ${s.reason}`)
        .join("; ")}); lower --min-layer-size`,
    );
  }
  // 3. Prefetch artifacts.
  const prefetch = opts.prefetchPaths?.length ? buildPrefetchArtifacts(ztocs, opts.prefetchPaths) : [];
  // 4. The index manifest.
  const subject =
    opts.version === "v1"
      ? { mediaType: image.descriptor.mediaType, digest: image.descriptor.digest, size: image.descriptor.size }
      : undefined;
  const index = createIndex(opts.version, [...ztocs.map((z) => z.descriptor), ...prefetch.map((p) => p.descriptor)], {
    ...(subject ? { subject } : {}),
    buildToolIdentifier: settings.buildToolIdentifier,
  });
  const bytes = encodeIndex(index);
  const descriptor: Descriptor = { mediaType: MediaType.OCI_MANIFEST, digest: sha256Digest(bytes), size: bytes.length };
  return { version: opts.version, image, index, bytes, descriptor, ztocs, prefetch, skipped };
}

/** Remove every zTOC's checkpoint table when together they exceed `maxBytes` (see BuildOptions). */
function dropLargeCheckpointTables(ztocs: LayerZtoc[], maxBytes: number): void {
  const total = ztocs.reduce((n, z) => n + (z.descriptor.annotations?.[ANNOTATION_CHECKPOINT_TABLE]?.length ?? 0), 0);
  if (total <= maxBytes) return;
  for (const z of ztocs) delete z.descriptor.annotations?.[ANNOTATION_CHECKPOINT_TABLE];
}

/** The same error class, its message prefixed with what was being done (offset kept for format errors). */
function rename(err: unknown, prefix: string): unknown {
  if (!(err instanceof Error)) return err;
  const msg = `${prefix}: ${err.message.replace(/^Cannot build zTOC: /, "")}`;
  if (err instanceof FormatError) return new (err.constructor as typeof FormatError)(msg, err.offset, { cause: err });
  const Ctor = err.constructor as new (m: string, o?: ErrorOptions) => Error;
  try {
    return new Ctor(msg, { cause: err });
  } catch {
    return err;
  }
}

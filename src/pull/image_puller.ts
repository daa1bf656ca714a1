/**
 * `pullImage`: a lazy pull through containerd's own gRPC API, as `soci image rpull` and `ctr-remote rpull` do
 * it: what `ctr image pull` does, plus the labels that let a remote snapshotter (soci-ts `serve`, AWS SOCI, …)
 * take layers without downloading them.
 *
 * Steps:
 *   1. Connect and take a lease: what the pull writes stays out of containerd's garbage collection until the
 *      image record holds it (the lease also expires by itself after `leaseExpireMs`, should the process die).
 *      A containerd that does not answer, or a namespace it refuses, fails here (step 2's requests, already
 *      sent, are then dropped).
 *   2. Resolve the reference: the root manifest or index, the platform's manifest; then its config (diffIDs)
 *      and step 3 at once, as both need only the manifest.
 *   3. Look for a SOCI index (the v2 annotation, else v1 referrers): its digest goes into AWS SOCI's label, and
 *      the layers it covers are the ones a remote snapshotter will likely take (not downloaded ahead).
 *   4. Write the index, manifest and config to the content store with the labels a real pull leaves (at once,
 *      while step 5 runs: the snapshotter needs none of them; a failed write ends the pull before the next layer).
 *   5. Unpack each layer in order through the snapshotter:
 *      a. a committed snapshot of its chain ID exists already: nothing to do;
 *      b. Prepare with the remote-snapshot labels: ALREADY_EXISTS means the snapshotter took it remotely;
 *      c. else download it (several range requests in flight, started ahead for the next layers while this one
 *         is applied), write it to the content store, Apply it through the mounts Prepare returned, Commit it
 *         as its chain ID (a failed apply removes the active snapshot).
 *   6. Create (or replace) the image record.
 *   7. Release the lease, whether the pull succeeded or not.
 * Every call to containerd and the registry is bounded by a deadline; `signal` cancels the whole pull. The gRPC
 * clients load while step 2's first requests are on the wire.
 */
import type { ContainerdClient } from "../grpc/containerd_client.ts";
import type { uploadContent } from "../grpc/content_upload.ts";
import type { SnapshotsClient } from "../grpc/snapshots_client.ts";
import type { Mount } from "../grpc/snapshots_types.ts";
import { isIndexMediaType } from "../oci/media_types.ts";
import { formatPlatform, selectPlatform } from "../oci/platform.ts";
import type { Descriptor, ImageConfig, ImageIndex, Manifest, Platform } from "../oci/types.ts";
import { formatReference } from "../registry/reference.ts";
import type { FetchedManifest, Reference } from "../registry/types.ts";
import type { ImageLocation } from "../soci/image_location.ts";
import {
  ANNOTATION_IMAGE_LAYER_DIGEST,
  ANNOTATION_INDEX_DIGEST,
  decodeIndex,
  SOCI_INDEX_V1_ARTIFACT_TYPE,
  ztocDescriptors,
} from "../soci/index.ts";
import {
  AlreadyExistsError,
  errorMessage,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
} from "../util/errors.ts";
import { TARGET_SNAPSHOT_LABEL } from "../snapshot/labels.ts";
import { silentLogger, type Logger } from "../util/log.ts";
import { chainIds } from "./chain_ids.ts";
import { configLabels, GC_EXPIRE_LABEL, indexLabels, layerContentLabels, manifestLabels } from "./content_labels.ts";
import { layerLabels } from "./layer_labels.ts";
import { DEFAULT_PARALLEL_RANGES, DEFAULT_RANGE_BYTES, rangeDownload } from "./range_download.ts";

/** Snapshotters that never take a layer remotely: every layer is downloaded ahead with them. */
export const LOCAL_SNAPSHOTTERS: ReadonlySet<string> = new Set([
  "overlayfs",
  "native",
  "btrfs",
  "zfs",
  "devmapper",
  "aufs",
  "blockfile",
]);

/** Default deadline of one unary call to containerd. */
export const DEFAULT_CALL_TIMEOUT_MS = 60_000;
/** Default deadline of a Prepare (a remote snapshotter mounts the layer before it answers). */
export const DEFAULT_PREPARE_TIMEOUT_MS = 5 * 60_000;
/** Default deadline of one diff Apply (unpacking a big layer takes a while). */
export const DEFAULT_APPLY_TIMEOUT_MS = 30 * 60_000;
/** Default life of the pull's lease should the process die before releasing it. */
export const DEFAULT_LEASE_EXPIRE_MS = 60 * 60_000;
/** Default number of layers downloaded at once. */
export const DEFAULT_PARALLEL_LAYERS = 3;

/** containerd's gRPC clients (grpc-js and its protobufs). */
interface GrpcClients {
  ContainerdClient: typeof ContainerdClient;
  SnapshotsClient: typeof SnapshotsClient;
  uploadContent: typeof uploadContent;
}

let grpcClients: Promise<GrpcClients> | undefined;

/**
 * The gRPC clients, loaded on first use: loading grpc-js costs ~0.1 s of CPU at start, which a pull spends while
 * its first registry requests are on the wire (see pullImage) instead of before them.
 */
function loadGrpcClients(): Promise<GrpcClients> {
  grpcClients ??= Promise.all([
    import("../grpc/containerd_client.ts"),
    import("../grpc/snapshots_client.ts"),
    import("../grpc/content_upload.ts"),
  ]).then(([c, s, u]) => ({
    ContainerdClient: c.ContainerdClient,
    SnapshotsClient: s.SnapshotsClient,
    uploadContent: u.uploadContent,
  }));
  return grpcClients;
}

/** How each layer ended up. */
export type LayerOutcome = "remote" | "downloaded" | "present";

/** A layer's progress, for a progress display. */
export interface LayerProgress {
  index: number;
  digest: string;
  size: number;
  /** What is happening to it now. */
  state: "preparing" | "remote" | "present" | "downloading" | "applying" | "downloaded";
  /** Bytes downloaded so far (downloading). */
  doneBytes: number;
}

/** Options of `pullImage`. */
export interface PullOptions {
  /** containerd's socket: an absolute path or `unix:///path`. */
  address: string;
  /** containerd namespace. */
  namespace: string;
  /** Snapshotter to unpack with (a proxy plugin name such as "soci", or "overlayfs"). */
  snapshotter: string;
  /** The platform to pull from an index. */
  platform: Platform;
  /** The image in its registry (a RegistryLocation: its reference names the image record). */
  location: ImageLocation & { readonly ref: Reference };
  signal?: AbortSignal;
  logger?: Logger;
  onProgress?: (p: LayerProgress) => void;
  /** Deadline of unary calls (default 60 s); Prepare and Apply have their own below. */
  callTimeoutMs?: number;
  prepareTimeoutMs?: number;
  applyTimeoutMs?: number;
  leaseExpireMs?: number;
  /** Bytes per range request (default 4 MiB) and range requests in flight per layer (default 4). */
  rangeBytes?: number;
  parallelRanges?: number;
  /** Layers downloaded at once (default 3). */
  parallelLayers?: number;
  /** The workload whose load order document the snapshotter replays (label `containerd.io/snapshot/soci-ts.lod`). */
  lod?: string;
  /**
   * The workload whose load order document the snapshotter records from what the image's containers read (label
   * `containerd.io/snapshot/soci-ts.record-lod`); only the layers it is asked to prepare (not those present).
   */
  recordLod?: string;
}

/** What `pullImage` did. */
export interface PullResult {
  /** The image record's name. */
  name: string;
  /** Digest of the platform's image manifest. */
  manifestDigest: string;
  /** The SOCI index found, if any. */
  sociIndexDigest?: string;
  layers: Array<{ digest: string; size: number; outcome: LayerOutcome }>;
  /** Layer bytes downloaded from the registry. */
  downloadedBytes: number;
}

/** The resolved image (step 2). */
interface Resolved {
  root: FetchedManifest;
  manifest: FetchedManifest;
  config: { descriptor: Descriptor; bytes: Uint8Array; parsed: ImageConfig };
}

/**
 * Pulls `opts.location` into containerd (see the file comment).
 * @throws UnavailableError "Cannot pull …: containerd does not answer at …" when containerd is not there;
 *   InvalidArgumentError when containerd refuses the namespace; the registry's errors (NotFoundError,
 *   UnavailableError, …) as "Cannot pull <ref>: …"; the signal's reason when it fires
 */
export async function pullImage(opts: PullOptions): Promise<PullResult> {
  const ref = opts.location.ref;
  const name = formatReference(ref);
  const log = opts.logger ?? silentLogger;
  const callTimeoutMs = opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  const signal = opts.signal;
  const call = { signal, timeoutMs: callTimeoutMs };
  const t0 = performance.now();
  const mark = (step: string) => log.debug("Pull step done", { step, ms: Math.round(performance.now() - t0) });
  const leaseId = `soci-ts-pull-${crypto.randomUUID()}`;
  let leased = false;
  // Ends what the steps started and no longer need when the pull ends (a step that failed leaves the others
  // running: the index search beside the config, content writes beside one that failed or beside the unpack,
  // layers fetched ahead).
  const ended = new AbortController();
  const steps = signal ? AbortSignal.any([signal, ended.signal]) : ended.signal;
  // Step 2's manifest requests go out while the gRPC clients load and step 1 waits for containerd; dropped if
  // step 1 fails.
  const resolving = registryStep(name, () => resolveManifest(opts, steps));
  resolving.catch(() => {}); // awaited in step 2
  let grpc: GrpcClients;
  try {
    // The manifest request is handed to fetch without waiting for I/O when its credentials come from files (read
    // synchronously) or nowhere: let it leave before loading grpc-js takes the thread (it went out ~50 ms late).
    // A credential helper's process is waited for all the same.
    await new Promise((r) => setImmediate(r));
    grpc = await loadGrpcClients();
    mark("grpc loaded");
  } catch (err) {
    ended.abort();
    throw err;
  }
  const containerd = new grpc.ContainerdClient(opts.address, { namespace: opts.namespace, timeoutMs: callTimeoutMs });
  try {
    // 1.
    const expires = new Date(Date.now() + (opts.leaseExpireMs ?? DEFAULT_LEASE_EXPIRE_MS)).toISOString();
    try {
      await containerd.createLease(leaseId, { [GC_EXPIRE_LABEL]: expires }, call);
    } catch (err) {
      throw containerdError(name, opts, err);
    }
    leased = true;
    mark("lease");
    containerd.useLease(leaseId);
    const snapshots = new grpc.SnapshotsClient(opts.address, {
      namespace: opts.namespace,
      snapshotter: opts.snapshotter,
      lease: leaseId,
      timeoutMs: callTimeoutMs,
    });
    try {
      // 2. and 3.
      const resolved = await resolving;
      mark("manifest");
      const local = LOCAL_SNAPSHOTTERS.has(opts.snapshotter);
      const finding = local ? Promise.resolve(undefined) : findSociIndex(opts, resolved.manifest, log, steps);
      finding.catch(() => {}); // rejects only when aborted; awaited below
      const image: Resolved = {
        ...resolved,
        config: await registryStep(name, () => fetchConfig(opts, resolved.manifest, steps)),
      };
      mark("config");
      const soci = await finding;
      mark("soci index");
      const manifest = image.manifest.manifest as Manifest;
      const diffIds = image.config.parsed.rootfs?.diff_ids ?? [];
      if (diffIds.length !== manifest.layers.length) {
        throw new InvalidArgumentError(
          `Cannot pull "${name}": its config lists ${diffIds.length} diff IDs for ${manifest.layers.length} layers`,
        );
      }
      const chains = chainIds(diffIds);
      // 4.
      // The snapshotter needs none of them: they are written while step 5 runs, and awaited before step 6.
      const put = (d: Descriptor, bytes: Uint8Array, labels: Record<string, string>) =>
        putBlob(containerd, d, [bytes], labels, steps);
      const putting = Promise.all([
        image.root !== image.manifest
          ? put(image.root.descriptor, image.root.bytes, indexLabels(ref, [image.manifest.descriptor.digest]))
          : undefined,
        put(image.manifest.descriptor, image.manifest.bytes, manifestLabels(ref, manifest)),
        put(image.config.descriptor, image.config.bytes, configLabels(ref, opts.snapshotter, chains.at(-1) ?? "")),
      ]);
      let putFailed = false;
      putting.catch(() => {
        putFailed = true; // thrown by the await below, before the next layer or step 6
      });
      // 5.
      const result: PullResult = {
        name,
        manifestDigest: image.manifest.descriptor.digest,
        sociIndexDigest: soci?.digest,
        layers: [],
        downloadedBytes: 0,
      };
      const downloads = new Map<number, Promise<void>>();
      const download = (i: number): Promise<void> => {
        let d = downloads.get(i);
        if (!d) {
          const ahead = { ...opts, signal: steps };
          d = downloadLayer(containerd, ahead, manifest.layers[i]!, i, layerContentLabels(ref, diffIds[i]!), (n) => {
            result.downloadedBytes += n;
          });
          d.catch(() => {}); // awaited when the layer is applied
          downloads.set(i, d);
        }
        return d;
      };
      const parallelLayers = Math.max(1, opts.parallelLayers ?? DEFAULT_PARALLEL_LAYERS);
      // Layers likely taken remotely are not downloaded ahead: only once their Prepare says otherwise.
      const likelyRemote = (i: number) => !local && (soci?.layers.has(manifest.layers[i]!.digest) ?? false);
      const labelInput = {
        imageRef: name,
        manifestDigest: image.manifest.descriptor.digest,
        layers: manifest.layers,
        chainIds: chains,
        sociIndexDigest: soci?.digest,
        lod: opts.lod,
        recordLod: opts.recordLod,
      };
      for (const [i, layer] of manifest.layers.entries()) {
        if (putFailed) await putting;
        const progress = (state: LayerProgress["state"], doneBytes = 0) =>
          opts.onProgress?.({ index: i, digest: layer.digest, size: layer.size, state, doneBytes });
        const outcome = await unpackLayer({
          snapshots,
          containerd,
          opts,
          layer,
          chainId: chains[i]!,
          parent: i === 0 ? "" : chains[i - 1]!,
          labels: layerLabels(labelInput, i),
          expectedDiffId: diffIds[i]!,
          progress,
          fetch: () => {
            for (let j = i + 1; j < manifest.layers.length && j < i + parallelLayers; j++)
              if (!likelyRemote(j)) void download(j);
            return download(i);
          },
        });
        result.layers.push({ digest: layer.digest, size: layer.size, outcome });
        log.debug("Layer unpacked", { layer: layer.digest, outcome, ms: Math.round(performance.now() - t0) });
      }
      await putting;
      mark("content written");
      // 6.
      const record = {
        name,
        labels: {},
        target: {
          mediaType: image.root.descriptor.mediaType,
          digest: image.root.descriptor.digest,
          size: image.root.descriptor.size,
        },
      };
      try {
        await containerd.createImage(record, call);
      } catch (err) {
        if (!(err instanceof AlreadyExistsError)) throw err;
        await containerd.updateImage(record, call);
      }
      return result;
    } finally {
      snapshots.close();
    }
  } finally {
    ended.abort();
    // 7.
    if (leased) {
      await containerd.deleteLease(leaseId, { timeoutMs: callTimeoutMs }).catch((err) => {
        log.warn("Cannot release the pull's lease; containerd drops it when it expires", {
          lease: leaseId,
          expires: opts.leaseExpireMs ?? DEFAULT_LEASE_EXPIRE_MS,
          cause: errorMessage(err),
        });
      });
    }
    containerd.close();
  }
}

/**
 * A failure of step 1, named: containerd not there, or the namespace refused. The reason is containerd's (or
 * grpc-js's) own words, shortened to the connect error for an absent containerd; the cause keeps the status.
 */
function containerdError(name: string, opts: PullOptions, err: unknown): unknown {
  const status = (err as { cause?: { code?: number; details?: string } }).cause;
  const details = status?.details ?? errorMessage(err);
  const cause = status ? { code: status.code, details } : err;
  if (err instanceof UnavailableError) {
    const reason = /connect E[A-Z]+/.exec(details)?.[0] ?? details;
    return new UnavailableError(
      `Cannot pull "${name}": containerd does not answer at "${opts.address}" (--address): ${reason}`,
      { cause },
    );
  }
  if (err instanceof InvalidArgumentError || /namespace/.test(details)) {
    return new InvalidArgumentError(
      `Cannot pull "${name}": containerd refuses namespace "${opts.namespace}" (--namespace): ${details}`,
      { cause },
    );
  }
  return err;
}

/** Runs a registry step; its failure reads "Cannot pull <name>: <why>", with the same class. */
async function registryStep<T>(name: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    if (!(err instanceof Error) || err.message.startsWith(`Cannot pull "${name}"`)) throw err;
    const Cls = (err.constructor as new (m: string, o?: ErrorOptions) => Error) ?? Error;
    let wrapped: Error;
    try {
      wrapped = new Cls(`Cannot pull "${name}": ${errorMessage(err)}`, { cause: err });
    } catch {
      wrapped = new Error(`Cannot pull "${name}": ${errorMessage(err)}`, { cause: err });
    }
    throw wrapped;
  }
}

/** Step 2: root and platform manifest. */
async function resolveManifest(opts: PullOptions, signal?: AbortSignal): Promise<Omit<Resolved, "config">> {
  const loc = opts.location;
  const root = await loc.getRoot({ signal });
  let manifest = root;
  if (isIndexMediaType(root.descriptor.mediaType) || "manifests" in root.manifest) {
    const index = root.manifest as ImageIndex;
    const pick = selectPlatform(index.manifests, opts.platform);
    if (!pick) {
      throw new NotFoundError(
        `the index has no manifest for platform ${formatPlatform(opts.platform)} (--platform); it has ${index.manifests
          .map((m) => (m.platform ? formatPlatform(m.platform) : "?"))
          .join(", ")}`,
      );
    }
    manifest = await loc.getManifest(pick.digest, { signal });
  }
  return { root, manifest };
}

/** Step 2: the platform manifest's config. */
async function fetchConfig(
  opts: PullOptions,
  manifest: FetchedManifest,
  signal?: AbortSignal,
): Promise<Resolved["config"]> {
  const m = manifest.manifest as Manifest;
  const bytes = await opts.location.getBlob(m.config.digest, { signal, size: m.config.size });
  const parsed = JSON.parse(new TextDecoder().decode(bytes)) as ImageConfig;
  return { descriptor: m.config, bytes, parsed };
}

/** Step 3: the SOCI index's digest and the layers it covers; undefined when there is none (or it cannot be read). */
// biome-ignore lint/complexity/useMaxParams: module-private helper
async function findSociIndex(
  opts: PullOptions,
  manifest: FetchedManifest,
  log: Logger,
  signal?: AbortSignal,
): Promise<{ digest: string; layers: Set<string> } | undefined> {
  const loc = opts.location;
  try {
    let digest = (manifest.manifest as Manifest).annotations?.[ANNOTATION_INDEX_DIGEST];
    if (!digest) {
      const found = await loc.referrers(manifest.descriptor.digest, {
        signal,
        artifactType: SOCI_INDEX_V1_ARTIFACT_TYPE,
      });
      digest = found[0]?.digest;
    }
    if (!digest) return undefined;
    const index = decodeIndex((await loc.getManifest(digest, { signal })).bytes);
    const layers = new Set(ztocDescriptors(index).map((d) => d.annotations?.[ANNOTATION_IMAGE_LAYER_DIGEST] ?? ""));
    return { digest, layers };
  } catch (err) {
    if (signal?.aborted) throw err;
    log.debug("No usable SOCI index found; the snapshotter looks for one itself", { cause: errorMessage(err) });
    return undefined;
  }
}

/** Writes a blob to the content store (labels set also when it was there already). */
// biome-ignore lint/complexity/useMaxParams: module-private helper
async function putBlob(
  containerd: ContainerdClient,
  d: Descriptor,
  data: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  labels: Record<string, string>,
  signal?: AbortSignal,
  onProgress?: (acked: number) => void,
): Promise<void> {
  const { uploadContent } = await loadGrpcClients();
  const r = await uploadContent(
    () => containerd.openWrite(signal),
    { ref: `soci-ts-${d.digest}`, expected: d.digest, total: d.size, labels, data },
    {
      signal,
      onProgress,
      // Another pull writing the same blob holds the ref; when it commits, the blob is there.
      committed: () =>
        containerd.contentInfo(d.digest, { signal }).then(
          () => true,
          (err) => {
            if (err instanceof NotFoundError) return false;
            throw err;
          },
        ),
    },
  );
  if (r.existed) await containerd.setContentLabels(d.digest, labels, { signal });
}

/** Step 5c's download: the layer's blob into the content store (skipped when it is there). */
// biome-ignore lint/complexity/useMaxParams: module-private helper
async function downloadLayer(
  containerd: ContainerdClient,
  opts: PullOptions,
  layer: Descriptor,
  index: number,
  labels: Record<string, string>,
  onBytes: (n: number) => void,
): Promise<void> {
  const signal = opts.signal;
  try {
    await containerd.contentInfo(layer.digest, { signal });
    await containerd.setContentLabels(layer.digest, labels, { signal });
    return;
  } catch (err) {
    if (!(err instanceof NotFoundError)) throw err;
  }
  let done = 0;
  const data = rangeDownload(opts.location, layer, {
    rangeBytes: opts.rangeBytes ?? DEFAULT_RANGE_BYTES,
    parallel: opts.parallelRanges ?? DEFAULT_PARALLEL_RANGES,
    signal,
    onBytes: (n) => {
      done += n;
      onBytes(n);
      opts.onProgress?.({ index, digest: layer.digest, size: layer.size, state: "downloading", doneBytes: done });
    },
  });
  await registryStep(formatReference(opts.location.ref), () => putBlob(containerd, layer, data, labels, signal));
}

/** Step 5 for one layer. */
async function unpackLayer(a: {
  snapshots: SnapshotsClient;
  containerd: ContainerdClient;
  opts: PullOptions;
  layer: Descriptor;
  chainId: string;
  parent: string;
  labels: Record<string, string>;
  expectedDiffId: string;
  progress: (state: LayerProgress["state"], doneBytes?: number) => void;
  fetch: () => Promise<void>;
}): Promise<LayerOutcome> {
  const { snapshots, opts, layer, chainId } = a;
  const signal = opts.signal;
  // a.
  try {
    await snapshots.stat({ key: chainId }, { signal });
    a.progress("present");
    return "present";
  } catch (err) {
    if (!(err instanceof NotFoundError)) throw err;
  }
  // b.
  a.progress("preparing");
  const key = `extract-${crypto.randomUUID()} ${chainId}`;
  let mounts: Mount[];
  try {
    mounts = await snapshots.prepare(
      { key, parent: a.parent, labels: a.labels },
      { signal, timeoutMs: opts.prepareTimeoutMs ?? DEFAULT_PREPARE_TIMEOUT_MS },
    );
  } catch (err) {
    if (!(err instanceof AlreadyExistsError)) throw err;
    a.progress("remote");
    return "remote";
  }
  // c.
  try {
    await a.fetch();
    a.progress("applying", layer.size);
    const applied = await a.containerd.applyDiff(
      { mediaType: layer.mediaType, digest: layer.digest, size: layer.size, annotations: layer.annotations },
      mounts,
      { signal, timeoutMs: opts.applyTimeoutMs ?? DEFAULT_APPLY_TIMEOUT_MS },
    );
    if (applied.digest !== a.expectedDiffId) {
      throw new InvalidArgumentError(
        `Cannot unpack layer "${layer.digest}": it unpacked to "${applied.digest}", the config says "${a.expectedDiffId}"`,
      );
    }
    try {
      await snapshots.commit({ name: chainId, key, labels: { [TARGET_SNAPSHOT_LABEL]: chainId } }, { signal });
    } catch (err) {
      if (!(err instanceof AlreadyExistsError)) throw err;
      await snapshots.remove({ key }).catch(() => {});
    }
  } catch (err) {
    await snapshots.remove({ key }, { timeoutMs: opts.callTimeoutMs }).catch(() => {});
    throw err;
  }
  a.progress("downloaded", layer.size);
  return "downloaded";
}

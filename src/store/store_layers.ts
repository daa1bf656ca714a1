/**
 * `StoreLayers`: the podman store's layers without FUSE: which layers it offers, their `info`, their lazy trees,
 * and podman's use counts.
 *
 * A layer is named by (image reference, digest), as podman names it: podman 4 (containers/storage 1.43) names a
 * layer by its compressed digest; podman 5.1+ (containers/image 5.31+) by the TOC digest of its descriptor's
 * annotation, and only for layers that carry one: `convert --toc-annotation` writes the layer's zTOC digest there
 * (ANNOTATION_TOC_DIGEST), which this store takes when it is the digest of that layer's zTOC in the image's index,
 * and reports back as `toc-digest` in `info` (c/image compares the two). `layer(ref, digest)` steps:
 *   1. A layer already open under that name answers at once (no registry request: containers started later look
 *      `diff` up again).
 *   2. Resolve the image through the shared ImageResolver (manifest for the host platform, SOCI index discovery:
 *      local store first, then v2, then v1, as configured; cached and single-flight; with `lod`, that workload's
 *      load order document: podman passes no labels, so the store chooses by config, the first `[lod] replay`
 *      rule matching the reference, else `[store] lod` for every image) and read its config for the layers'
 *      diff ids.
 *   3. Decline (undefined, so podman pulls the layer itself) an image without an index, a digest that is not
 *      one of its layers nor the annotated zTOC digest of one, a layer without a zTOC, or an image config
 *      without its diff id.
 *   4. On the image's first resolution, open every layer it offers at once, in parallel: podman 4 looks its
 *      layers up one after the other under one lock, so each would otherwise wait for the one before.
 *   5. Open the layer through the shared LayerManager (span cache, background fetch; shared with the containerd
 *      snapshotter by digest and repository) and answer at once: its load order document's spans (the layer
 *      manager's replay) and then its prefetch artifact's (store_prefetch.ts) are fetched in the background, reads
 *      first, while podman commits the image and starts the container. (A mount waits for them instead.)
 * Steps 2-5 are bounded by `timeoutMs`.
 *
 * Use counts (c/storage 1.43): CREATE of `<layer>/use` is +1 (at lookup and when the layer is stored),
 * RMDIR of `<layer>` is −1 (end of the pull, and when podman deletes its layer). They are kept in `usesFile`
 * across restarts: a layer podman holds stays open however long a container runs on it. A count back at 0 closes
 * the layer at once (its span cache entries become the first evicted); a layer opened but never used (a lookup
 * without a pull, or a layer opened ahead in step 4 that podman did not take) is closed `lingerMs` after its
 * last lookup.
 */
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { acquireOptionsFor, type ImageResolver, type ResolvedImage } from "../layerfs/image_resolver.ts";
import type { LayerHandle, LayerManager } from "../layerfs/layer_manager.ts";
import { MediaType } from "../oci/media_types.ts";
import type { ImageConfig } from "../oci/types.ts";
import type { Reference, RegistryClient } from "../registry/types.ts";
import { ANNOTATION_IMAGE_LAYER_DIGEST, ANNOTATION_TOC_DIGEST } from "../soci/index.ts";
import { chooseLod, type LodRules } from "../soci/lod_rules.ts";
import { raceSignal } from "../util/abort.ts";
import { isSha256Digest } from "../util/digest.ts";
import { errorMessage, UnavailableError } from "../util/errors.ts";
import { silentLogger, type Logger } from "../util/log.ts";
import type { Node } from "../vfs/node.ts";
import { InodeSlots, viewTree } from "./layer_view.ts";
import { StorePrefetch } from "./store_prefetch.ts";

/** What c/storage reads from `info` (its `Layer` JSON; id, parent and created are its own). */
export interface LayerInfo {
  "compressed-diff-digest": string;
  "compressed-size": number;
  "diff-digest": string;
  "diff-size"?: number;
  /** c/storage's archive.Compression: 0 none, 2 gzip, 4 zstd. */
  compression: number;
  /** The TOC digest podman 5 looked the layer up by (its zTOC's digest); absent for podman 4's lookups. */
  "toc-digest"?: string;
}

/** A layer the store offers, open. */
export interface StoreLayer {
  readonly info: LayerInfo;
  /** The layer's tree, inode numbers moved into a range of its own (layer_view.ts). */
  readonly diff: Node;
  /** Bytes [start, end) of the compressed blob, from the registry. */
  readBlob(start: number, end: number, signal: AbortSignal): Promise<Uint8Array>;
}

/** One layer of the store, as podman names it. */
export interface StoreLayerStatus {
  ref: string;
  digest: string;
  /** podman's use count. */
  uses: number;
  /** True while the layer is open (or opening). */
  open: boolean;
}

/** What StoreLayers is built with; `usesFile`, `timeoutMs`, `lingerMs` and `logger` have defaults. */
export interface StoreLayersOptions {
  manager: LayerManager;
  resolver: ImageResolver;
  /** JSON file keeping the use counts across restarts; absent → kept in memory only. */
  usesFile?: string;
  /** Milliseconds steps 2-5 may take for one lookup (default 30 000; config `mount_timeout_sec`). */
  timeoutMs?: number;
  /** Milliseconds a layer nobody uses stays open after its last lookup (default 120 000). */
  lingerMs?: number;
  /**
   * Workload whose load order document to replay for every image that has one (config `[store] lod`); absent:
   * the resolver's own choice (none in serve).
   */
  lod?: string;
  /** Rules choosing the workload by image reference (config `[lod] replay`), tried before `lod`. */
  lodRules?: LodRules;
  /** Background prefetch of prefetch artifacts (config `[prefetch]`; defaults as StorePrefetchOptions). */
  prefetch?: { maxConcurrency?: number; timeoutMs?: number };
  /** Called after each layer it opens (serve: a full collection once a burst settles, service/quiet_gc.ts). */
  afterOpen?: () => void;
  logger?: Logger;
}

/** An open layer as the store holds it: what podman sees, the layer manager's handle, its prefetch's stop. */
type Opened = StoreLayer & { handle: LayerHandle; stopPrefetch: () => Promise<void> };

interface Entry {
  ref: string;
  digest: string;
  uses: number;
  opening?: Promise<Opened>;
  linger?: ReturnType<typeof setTimeout>;
}

/** c/storage's compression of a layer media type: 2 gzip, 4 zstd, 0 none. */
function compressionOf(mediaType: string): number {
  if (mediaType.endsWith("gzip")) return 2;
  if (mediaType === MediaType.OCI_LAYER_ZSTD) return 4;
  return 0;
}

export class StoreLayers {
  readonly #o: Required<Omit<StoreLayersOptions, "usesFile" | "lod" | "lodRules" | "prefetch" | "afterOpen">> &
    Pick<StoreLayersOptions, "usesFile" | "lod" | "lodRules" | "afterOpen">;
  readonly #prefetch: StorePrefetch;
  readonly #entries = new Map<string, Entry>();
  readonly #slots = new InodeSlots();
  /** One inode range per open layer object (shared by the references that name it). */
  readonly #bases = new WeakMap<object, number>();
  /** Diff ids of a resolution's image config, once per resolution. */
  readonly #diffIds = new WeakMap<ResolvedImage, Promise<string[]>>();
  #saving: Promise<void> = Promise.resolve();
  #closed = false;

  private constructor(opts: StoreLayersOptions) {
    this.#o = {
      ...opts,
      timeoutMs: opts.timeoutMs ?? 30_000,
      lingerMs: opts.lingerMs ?? 120_000,
      logger: opts.logger ?? silentLogger,
    };
    this.#prefetch = new StorePrefetch({ gate: opts.manager.gate, ...opts.prefetch, logger: this.#o.logger });
  }

  /**
   * StoreLayers with the use counts of `usesFile` (a missing file is no counts; an unreadable one is logged and
   * taken as none).
   */
  static async open(opts: StoreLayersOptions): Promise<StoreLayers> {
    const s = new StoreLayers(opts);
    if (opts.usesFile) {
      try {
        const saved = JSON.parse(await readFile(opts.usesFile, "utf8")) as Array<[string, string, number]>;
        for (const [ref, digest, uses] of saved) {
          if (typeof ref === "string" && typeof digest === "string" && Number.isSafeInteger(uses) && uses > 0)
            s.#entries.set(key(ref, digest), { ref, digest, uses });
        }
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT")
          s.#o.logger.warn("Cannot read the store's use counts; starting from none", {
            file: opts.usesFile,
            cause: errorMessage(err),
          });
      }
    }
    return s;
  }

  /**
   * The layer `digest` of image `ref` (steps 1-5), or undefined when the store declines it.
   * @throws UnavailableError when the registry does not answer within the timeout; what resolving throws
   */
  async layer(ref: string, digest: string, signal?: AbortSignal): Promise<StoreLayer | undefined> {
    if (this.#closed) return undefined;
    // 1.
    const known = this.#entries.get(key(ref, digest));
    if (known?.opening) {
      this.#touch(known);
      return known.opening;
    }
    const timeout = AbortSignal.timeout(this.#o.timeoutMs);
    const bounded = signal ? AbortSignal.any([signal, timeout]) : timeout;
    try {
      // 2.
      const lod = chooseLod(ref, {
        rules: this.#o.lodRules,
        fallback: this.#o.lod === undefined ? undefined : { workload: this.#o.lod, by: "[store] lod" },
      });
      const image = await this.#o.resolver.resolve(ref, { signal: bounded, lod: lod?.workload, lodBy: lod?.by });
      const diffIds = await this.#diffIdsOf(image, bounded);
      // 3.
      const offered = (d: string) => offeredLayer(image, diffIds, d);
      const byToc = tocNames(image);
      const wanted = byToc.get(digest) ?? digest;
      if (!offered(wanted)) {
        this.#o.logger.debug("Store declines layer", { ref, layer: digest, index: image.found !== undefined });
        return undefined;
      }
      // 4. (the wanted layer first; the others by the name the wanted one was asked by). Another lookup may have
      // opened it while this one waited in the resolution: #open then answers with that opening.
      const entry = this.#entry(ref, digest);
      const mine = this.#open(entry, image, diffIds, wanted);
      const names = new Map([...byToc].map(([toc, layer]) => [layer, toc]));
      for (const l of image.layers) {
        if (l.digest === wanted || !offered(l.digest)) continue;
        const name = wanted !== digest ? names.get(l.digest) : l.digest;
        if (!name) continue;
        this.#open(this.#entry(ref, name), image, diffIds, l.digest).catch(() => {});
      }
      // 5.
      return await raceSignal(mine, bounded);
    } catch (err) {
      if (timeout.aborted) {
        throw new UnavailableError(
          `Cannot open layer "${digest}" of "${ref}" for the store: no answer within ${this.#o.timeoutMs} ms (${errorMessage(err)})`,
          { cause: err },
        );
      }
      throw err;
    }
  }

  /** Count one use (CREATE of `use`). */
  use(ref: string, digest: string): void {
    const e = this.#entry(ref, digest);
    e.uses++;
    this.#touch(e);
    this.#save();
  }

  /** Count one release (RMDIR of the layer directory); the last one closes the layer. */
  async release(ref: string, digest: string): Promise<void> {
    const e = this.#entries.get(key(ref, digest));
    if (!e) return;
    if (e.uses > 0) e.uses--;
    this.#save();
    if (e.uses === 0) await this.#close(e, "released by podman");
  }

  /** Every layer with a use count or open, for status and tests. */
  status(): StoreLayerStatus[] {
    return [...this.#entries.values()].map((e) => ({
      ref: e.ref,
      digest: e.digest,
      uses: e.uses,
      open: e.opening !== undefined,
    }));
  }

  /** Close every open layer (the counts are kept for the next start) and wait for the counts to be saved. */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all([...this.#entries.values()].map((e) => this.#close(e, "store stopping", true)));
    await this.#saving;
  }

  #entry(ref: string, digest: string): Entry {
    const k = key(ref, digest);
    let e = this.#entries.get(k);
    if (!e) {
      e = { ref, digest, uses: 0 };
      this.#entries.set(k, e);
    }
    return e;
  }

  /**
   * Open layer `layerDigest` of `image` for `entry` (named by that digest, or by its zTOC's for podman 5); an entry
   * already opening answers with that opening (a second acquire would never be released).
   */
  // biome-ignore lint/complexity/useMaxParams: private helper
  #open(entry: Entry, image: ResolvedImage, diffIds: string[], layerDigest: string): Promise<Opened> {
    if (entry.opening) {
      this.#touch(entry);
      return entry.opening;
    }
    const opening = (async (): Promise<Opened> => {
      // The artifact's spans are the store's to prefetch (in the background); the document's, the manager's.
      const { prefetchSpans, ...acquire } = acquireOptionsFor(image, layerDigest);
      const handle = await this.#o.manager.acquire(acquire);
      this.#o.afterOpen?.();
      const stopPrefetch = this.#prefetch.start(handle.layer, prefetchSpans ?? [], handle.replayed);
      const layer = handle.layer;
      let base = this.#bases.get(layer);
      if (base === undefined) {
        base = this.#slots.take();
        this.#bases.set(layer, base);
      }
      const desc = image.layers.find((l) => l.digest === layerDigest)!;
      const ztoc = image.found!.ztocs.get(layerDigest)!;
      const info: LayerInfo = {
        "compressed-diff-digest": desc.digest,
        "compressed-size": desc.size,
        "diff-digest": diffIds[image.layers.indexOf(desc)]!,
        ...(ztoc.uncompressedArchiveSize > 0 ? { "diff-size": ztoc.uncompressedArchiveSize } : {}),
        compression: compressionOf(desc.mediaType),
        ...(entry.digest !== layerDigest ? { "toc-digest": entry.digest } : {}),
      };
      const { client, ref } = image.location;
      this.#o.logger.info("Store layer open", { ref: entry.ref, layer: entry.digest, uses: entry.uses });
      return {
        handle,
        stopPrefetch,
        info,
        diff: viewTree(layer.root, base),
        readBlob: blobReader(client, ref, desc.digest),
      };
    })();
    entry.opening = opening;
    this.#touch(entry);
    opening.catch((err) => {
      if (entry.opening !== opening) return;
      entry.opening = undefined;
      this.#o.logger.warn("Cannot open store layer", { ref: entry.ref, layer: entry.digest, cause: errorMessage(err) });
      this.#forgetIfIdle(entry);
    });
    return opening;
  }

  /** A lookup or use: an open layer nobody uses is closed `lingerMs` after the last one. */
  #touch(e: Entry): void {
    clearTimeout(e.linger);
    e.linger = undefined;
    if (e.uses > 0 || !e.opening || this.#closed) return;
    e.linger = setTimeout(() => {
      e.linger = undefined;
      if (e.uses === 0) void this.#close(e, "not used");
    }, this.#o.lingerMs);
    e.linger.unref?.();
  }

  async #close(e: Entry, why: string, keepEntry = false): Promise<void> {
    clearTimeout(e.linger);
    e.linger = undefined;
    const opening = e.opening;
    e.opening = undefined;
    if (!keepEntry) this.#forgetIfIdle(e);
    if (!opening) return;
    const opened = await opening.catch(() => undefined);
    if (!opened) return;
    await opened.stopPrefetch();
    await opened.handle.done();
    this.#o.logger.info("Store layer closed", { ref: e.ref, layer: e.digest, why });
  }

  #forgetIfIdle(e: Entry): void {
    if (e.uses === 0 && !e.opening && this.#entries.get(key(e.ref, e.digest)) === e)
      this.#entries.delete(key(e.ref, e.digest));
  }

  #diffIdsOf(image: ResolvedImage, signal: AbortSignal): Promise<string[]> {
    let p = this.#diffIds.get(image);
    if (!p) {
      const config = (image.manifest.manifest as { config?: { digest?: string; size?: number } }).config;
      p = (async () => {
        if (!image.found || !config?.digest) return [];
        const bytes = await image.location.getBlob(config.digest, { signal, size: config.size });
        const parsed = JSON.parse(new TextDecoder().decode(bytes)) as ImageConfig;
        const ids = parsed.rootfs?.diff_ids;
        return Array.isArray(ids) ? ids.map(String) : [];
      })();
      this.#diffIds.set(image, p);
      p.catch(() => {
        if (this.#diffIds.get(image) === p) this.#diffIds.delete(image);
      });
    }
    return raceSignal(p, signal);
  }

  /** Write the counts (in order, each write replacing the file whole). */
  #save(): void {
    const file = this.#o.usesFile;
    if (!file) return;
    const counts = [...this.#entries.values()].filter((e) => e.uses > 0).map((e) => [e.ref, e.digest, e.uses]);
    this.#saving = this.#saving.then(async () => {
      try {
        await mkdir(dirname(file), { recursive: true });
        const tmp = `${file}.tmp`;
        await writeFile(tmp, JSON.stringify(counts));
        await rename(tmp, file);
      } catch (err) {
        this.#o.logger.warn("Cannot save the store's use counts", { file, cause: errorMessage(err) });
      }
    });
  }
}

/**
 * Range reads of blob `digest`: made apart from `#open`'s async function, whose closures would hold every variable
 * of it (the image's zTOCs among them) for as long as the layer is open.
 */
function blobReader(client: RegistryClient, ref: Reference, digest: string): Opened["readBlob"] {
  return (start, end, signal) => client.readRange(ref, digest, start, end, { signal });
}

function key(ref: string, digest: string): string {
  return `${ref}\n${digest}`;
}

/**
 * Layer digests by TOC digest: each layer whose descriptor's TOC annotation is the digest of its zTOC in the
 * image's index (a TOC annotation naming anything else is not this store's to answer).
 */
function tocNames(image: ResolvedImage): Map<string, string> {
  const out = new Map<string, string>();
  const ztocDigests = new Map(
    (image.found?.index.layers ?? []).map((d) => [d.annotations?.[ANNOTATION_IMAGE_LAYER_DIGEST], d.digest]),
  );
  for (const l of image.layers) {
    const toc = l.annotations?.[ANNOTATION_TOC_DIGEST];
    if (toc && ztocDigests.get(l.digest) === toc) out.set(toc, l.digest);
  }
  return out;
}

/** True when the store offers layer `digest` of the image: indexed, with a zTOC and a diff id. */
function offeredLayer(image: ResolvedImage, diffIds: string[], digest: string): boolean {
  const i = image.layers.findIndex((l) => l.digest === digest);
  return (
    i >= 0 &&
    image.found?.ztocs.has(digest) === true &&
    diffIds.length === image.layers.length &&
    isSha256Digest(diffIds[i] ?? "")
  );
}

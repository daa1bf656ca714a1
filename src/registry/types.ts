/**
 * The registry client's public surface (implemented in src/registry/client.ts). Consumers (soci, layerfs,
 * cli) depend on this interface, so tests may hand them a client pointed at a fault-injecting proxy.
 */
import type { Descriptor, ImageIndex, Manifest, Platform } from "../oci/types.ts";

/** A parsed image reference, normalized the way Docker does (docker.io/library/… by default). */
export interface Reference {
  /** Registry host with optional port, e.g. "docker.io", "127.0.0.1:5000". */
  registry: string;
  /** Repository path, e.g. "library/debian". */
  repository: string;
  tag?: string;
  digest?: string;
}

/** A manifest or index as fetched: the exact bytes, their digest and media type, and the parsed JSON. */
export interface FetchedManifest {
  descriptor: Descriptor;
  bytes: Uint8Array;
  manifest: Manifest | ImageIndex;
}

export interface RequestOptions {
  signal?: AbortSignal;
}

/** Options of a range read. */
export interface RangeReadOptions extends RequestOptions {
  /**
   * Called as the range's bytes arrive with those received so far, from the range's start (a view, unchanged
   * by later calls); starts over from fewer bytes when the request is retried. Bytes read in one piece (a
   * backend that cannot stream) are reported once or not at all: the returned bytes are what counts.
   */
  onProgress?: (prefix: Uint8Array) => void;
}

export interface RegistryClient {
  /** HEAD a manifest by tag or digest; NotFoundError when absent. */
  headManifest(ref: Reference, opts?: RequestOptions): Promise<Descriptor>;
  /** GET a manifest or index by tag or digest (the digest is verified). */
  getManifest(ref: Reference, opts?: RequestOptions): Promise<FetchedManifest>;
  /**
   * Resolve a reference to one platform's image manifest (an index is narrowed by `platform`, default
   * the host's linux/<arch>).
   */
  resolveImage(ref: Reference, opts?: RequestOptions & { platform?: Platform }): Promise<FetchedManifest>;
  /** PUT a manifest under a tag or its digest; returns its descriptor. */
  putManifest(ref: Reference, bytes: Uint8Array, mediaType: string, opts?: RequestOptions): Promise<Descriptor>;
  /** GET a whole blob, verified against its digest. */
  getBlob(ref: Reference, digest: string, opts?: RequestOptions & { size?: number }): Promise<Uint8Array>;
  /** GET a blob as a stream (not buffered; the digest is verified as it ends). */
  getBlobStream(ref: Reference, digest: string, opts?: RequestOptions): Promise<ReadableStream<Uint8Array>>;
  /** HEAD a blob; NotFoundError when absent. */
  headBlob(ref: Reference, digest: string, opts?: RequestOptions): Promise<{ size: number }>;
  /** Bytes [start, end) of a blob with HTTP Range requests (206 or 200 both handled). */
  readRange(ref: Reference, digest: string, start: number, end: number, opts?: RangeReadOptions): Promise<Uint8Array>;
  /** Several ranges in one request where the server supports multipart/byteranges, else one each. */
  readRanges(
    ref: Reference,
    digest: string,
    ranges: Array<[start: number, end: number]>,
    opts?: RequestOptions,
  ): Promise<Uint8Array[]>;
  /** Upload a blob (skipped when the registry has it). */
  pushBlob(
    ref: Reference,
    bytes: Uint8Array,
    opts?: RequestOptions & { digest?: string; chunkSize?: number; mediaType?: string },
  ): Promise<Descriptor>;
  /**
   * Referrers of a manifest digest: the Referrers API, falling back to the `sha256-<hex>` tag schema;
   * filtered by artifactType when given.
   */
  referrers(ref: Reference, digest: string, opts?: RequestOptions & { artifactType?: string }): Promise<Descriptor[]>;
  /** Push a manifest that has a `subject`, and maintain the fallback tag when the registry lacks the API. */
  pushReferrer(ref: Reference, bytes: Uint8Array, mediaType: string, opts?: RequestOptions): Promise<Descriptor>;
}

/**
 * The read side shared by a registry repository and an OCI image layout (`oci:DIR[:TAG]`), bound to one
 * image: the index builder and the lazy filesystem read either alike. Made by `openImageSource`
 * (src/registry/open_image_source.ts).
 */
export interface ImageSource {
  /** What it was opened from, for messages: "oci:/dir:tag" or "host/repo:tag". */
  readonly name: string;
  /**
   * The image manifest this source names, narrowed to one platform when it is an index (default
   * linux/<host arch>). NotFoundError when the tag or platform is missing.
   */
  resolve(opts?: RequestOptions & { platform?: Platform }): Promise<FetchedManifest>;
  /** A manifest or index by tag or digest (verified). */
  getManifest(target: string, opts?: RequestOptions): Promise<FetchedManifest>;
  /** A whole blob, verified. */
  getBlob(digest: string, opts?: RequestOptions & { size?: number }): Promise<Uint8Array>;
  /** A blob as a stream, verified as it ends. */
  getBlobStream(digest: string, opts?: RequestOptions): Promise<ReadableStream<Uint8Array>>;
  /** A blob's size; NotFoundError when absent. */
  headBlob(digest: string, opts?: RequestOptions): Promise<{ size: number }>;
  /**
   * Bytes [start, end) of a blob (not verified: the caller checks spans); `onProgress` as RegistryClient's (a
   * source that reads in one piece may never call it).
   */
  readRange(digest: string, start: number, end: number, opts?: RangeReadOptions): Promise<Uint8Array>;
  /** Several ranges of a blob, in the order asked. */
  readRanges(digest: string, ranges: Array<[start: number, end: number]>, opts?: RequestOptions): Promise<Uint8Array[]>;
  /** Referrers of a manifest digest, filtered by artifactType when given. */
  referrers(digest: string, opts?: RequestOptions & { artifactType?: string }): Promise<Descriptor[]>;
}

/** The write side: where `convert` puts SOCI indexes and images (a registry repository or an OCI layout). */
export interface ImageTarget {
  /** Stores a blob (skipped when present); `digest`, when given, must match. */
  putBlob(bytes: Uint8Array, opts?: RequestOptions & { mediaType?: string; digest?: string }): Promise<Descriptor>;
  /** Stores a manifest or index, under `tag` when given (else by digest only). */
  putManifest(bytes: Uint8Array, mediaType: string, opts?: RequestOptions & { tag?: string }): Promise<Descriptor>;
  /** Points `tag` at a manifest that is already stored. */
  tag(tag: string, descriptor: Descriptor, opts?: RequestOptions): Promise<void>;
  /** Stores a manifest with a `subject` so that `referrers(subject)` lists it. */
  pushReferrer(bytes: Uint8Array, mediaType: string, opts?: RequestOptions): Promise<Descriptor>;
}

/** Both sides, as `openImageSource` returns them. */
export interface ImageStore extends ImageSource, ImageTarget {}

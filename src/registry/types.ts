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
  getBlob(ref: Reference, digest: string, opts?: RequestOptions): Promise<Uint8Array>;
  /** GET a blob as a stream (not buffered; the digest is verified as it ends). */
  getBlobStream(ref: Reference, digest: string, opts?: RequestOptions): Promise<ReadableStream<Uint8Array>>;
  /** HEAD a blob; NotFoundError when absent. */
  headBlob(ref: Reference, digest: string, opts?: RequestOptions): Promise<{ size: number }>;
  /** Bytes [start, end) of a blob with HTTP Range requests (206 or 200 both handled). */
  readRange(ref: Reference, digest: string, start: number, end: number, opts?: RequestOptions): Promise<Uint8Array>;
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

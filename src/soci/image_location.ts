/**
 * Where an image lives, as the SOCI commands see it: a repository in a registry (`HOST/REPO[:TAG|@DIGEST]`)
 * or an OCI image layout directory (`oci:DIR[:TAG]`). One interface for reading manifests and blobs and for
 * writing them back, so building, pushing and converting work the same on both.
 *
 * The registry side delegates to a RegistryClient (src/registry/types.ts); the layout side reads and writes
 * the directory with node:fs (atomic writes, as the artifact store does). Both run under Deno.
 */
import { mkdirSync, existsSync, createReadStream } from "node:fs";
import { readFile, open } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { MediaType } from "../oci/media_types.ts";
import type { Descriptor, ImageIndex, Manifest } from "../oci/types.ts";
import type { FetchedManifest, Reference, RegistryClient, RequestOptions } from "../registry/types.ts";
import { DigestMismatchError, FormatError, InvalidArgumentError, NotFoundError } from "../util/errors.ts";
import { atomicWrite, digestHex, sha256Digest } from "./artifact_store.ts";
import { goIndex } from "../oci/go_json.ts";

/** Annotation naming a tag inside an OCI layout's index.json. */
export const ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name";

const INDEX_TYPES: readonly string[] = [MediaType.OCI_INDEX, MediaType.DOCKER_MANIFEST_LIST];

export interface ImageLocation {
  /** "oci:DIR:TAG" or "HOST/REPO:TAG", for messages and records. */
  readonly name: string;
  /** The tag this location names, if any. */
  readonly tag: string | undefined;
  /** The manifest or index the location names (its tag, digest, or the layout's only image). */
  getRoot(opts?: RequestOptions): Promise<FetchedManifest>;
  /** A manifest or index by digest, verified. */
  getManifest(digest: string, opts?: RequestOptions): Promise<FetchedManifest>;
  /** A whole blob, verified. */
  getBlob(digest: string, opts?: RequestOptions): Promise<Uint8Array>;
  /** A blob as a stream (verified by the registry client where it streams from a registry). */
  getBlobStream(digest: string, size: number, opts?: RequestOptions): Promise<ReadableStream<Uint8Array>>;
  /** Bytes [start, end) of a blob. */
  readRange(digest: string, start: number, end: number, opts?: RequestOptions): Promise<Uint8Array>;
  hasBlob(digest: string, opts?: RequestOptions): Promise<boolean>;
  /** Store a blob (skipped when present); returns its digest. */
  putBlob(bytes: Uint8Array, opts?: RequestOptions): Promise<string>;
  /** Store a manifest or index under its digest, and under `tag` when given. */
  putManifest(bytes: Uint8Array, mediaType: string, opts?: RequestOptions & { tag?: string }): Promise<Descriptor>;
  /** Referrers of a manifest digest, filtered by artifact type. */
  referrers(digest: string, opts?: RequestOptions & { artifactType?: string }): Promise<Descriptor[]>;
  /** Store a manifest that has a subject so that `referrers` finds it. */
  pushReferrer(bytes: Uint8Array, mediaType: string, opts?: RequestOptions): Promise<Descriptor>;
}

/** True when a spec names an OCI layout (`oci:DIR[:TAG]`). */
export function isLayoutSpec(spec: string): boolean {
  return spec.startsWith("oci:");
}

/**
 * Parse `oci:DIR[:TAG]`. The tag is what follows the last ':' when that part has no '/'.
 * @throws InvalidArgumentError when DIR is empty
 */
export function parseLayoutSpec(spec: string): { dir: string; tag: string | undefined } {
  const rest = spec.slice("oci:".length);
  const colon = rest.lastIndexOf(":");
  let dir = rest;
  let tag: string | undefined;
  if (colon > 0 && !rest.slice(colon + 1).includes("/")) {
    dir = rest.slice(0, colon);
    tag = rest.slice(colon + 1) || undefined;
  }
  if (!dir) throw new InvalidArgumentError(`Cannot parse image location "${spec}": the directory is empty`);
  return { dir, tag };
}

// ---------------------------------------------------------------------------------------------------------
// OCI image layout

/** An OCI image layout directory (image-spec image-layout.md). Created on first write. */
export class OciLayoutLocation implements ImageLocation {
  readonly name: string;
  readonly dir: string;
  readonly tag: string | undefined;

  constructor(dir: string, tag?: string) {
    this.dir = dir;
    this.tag = tag;
    this.name = `oci:${dir}${tag ? `:${tag}` : ""}`;
  }

  async getRoot(): Promise<FetchedManifest> {
    const index = await this.#readIndexJson();
    const entries = this.tag === undefined
      ? index.manifests
      : index.manifests.filter((d) => d.annotations?.[ANNOTATION_REF_NAME] === this.tag);
    if (entries.length === 0) {
      throw new NotFoundError(`Cannot find image "${this.name}": no manifest ${this.tag ? `tagged "${this.tag}"` : "in the layout"}`);
    }
    if (entries.length > 1) {
      throw new InvalidArgumentError(`Cannot choose an image in "${this.name}": ${entries.length} manifests match, name a tag`);
    }
    return this.getManifest(entries[0]!.digest);
  }

  async getManifest(digest: string): Promise<FetchedManifest> {
    const bytes = await this.getBlob(digest);
    return parseFetched(bytes, digest, this.name);
  }

  async getBlob(digest: string): Promise<Uint8Array> {
    let bytes: Uint8Array;
    try {
      bytes = new Uint8Array(await readFile(this.#blobPath(digest)));
    } catch (cause) {
      throw new NotFoundError(`Cannot read blob "${digest}" of "${this.name}": not in the layout`, { cause });
    }
    const actual = sha256Digest(bytes);
    if (actual !== digest) {
      throw new DigestMismatchError(`Cannot read blob "${digest}" of "${this.name}": bytes hash to "${actual}"`, digest, actual);
    }
    return bytes;
  }

  async getBlobStream(digest: string): Promise<ReadableStream<Uint8Array>> {
    const path = this.#blobPath(digest);
    if (!existsSync(path)) throw new NotFoundError(`Cannot read blob "${digest}" of "${this.name}": not in the layout`);
    const node = createReadStream(path, { highWaterMark: 1 << 20 });
    return Readable.toWeb(node) as unknown as ReadableStream<Uint8Array>;
  }

  async readRange(digest: string, start: number, end: number): Promise<Uint8Array> {
    let fh;
    try {
      fh = await open(this.#blobPath(digest), "r");
    } catch (cause) {
      throw new NotFoundError(`Cannot read blob "${digest}" of "${this.name}": not in the layout`, { cause });
    }
    try {
      const out = new Uint8Array(end - start);
      let got = 0;
      while (got < out.length) {
        const { bytesRead } = await fh.read(out, got, out.length - got, start + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      if (got < out.length) {
        throw new InvalidArgumentError(`Cannot read bytes [${start}, ${end}) of blob "${digest}": it ends at ${start + got}`);
      }
      return out;
    } finally {
      await fh.close();
    }
  }

  async hasBlob(digest: string): Promise<boolean> {
    return existsSync(this.#blobPath(digest));
  }

  async putBlob(bytes: Uint8Array): Promise<string> {
    const digest = sha256Digest(bytes);
    this.#ensureLayout();
    if (!existsSync(this.#blobPath(digest))) atomicWrite(this.#blobPath(digest), bytes);
    return digest;
  }

  async putManifest(bytes: Uint8Array, mediaType: string, opts: { tag?: string } = {}): Promise<Descriptor> {
    const digest = await this.putBlob(bytes);
    const desc: Descriptor = { mediaType, digest, size: bytes.length };
    if (opts.tag !== undefined) {
      const index = await this.#readIndexJson().catch(() => emptyIndex());
      const manifests = index.manifests.filter((d) => d.annotations?.[ANNOTATION_REF_NAME] !== opts.tag);
      manifests.push({ ...desc, annotations: { [ANNOTATION_REF_NAME]: opts.tag } });
      this.#writeIndexJson({ ...index, manifests });
    }
    return desc;
  }

  async referrers(digest: string, opts: { artifactType?: string } = {}): Promise<Descriptor[]> {
    const index = await this.#readIndexJson().catch(() => emptyIndex());
    const out: Descriptor[] = [];
    for (const d of index.manifests) {
      if (d.mediaType !== MediaType.OCI_MANIFEST) continue;
      let m: Manifest;
      try {
        m = JSON.parse(new TextDecoder().decode(await this.getBlob(d.digest))) as Manifest;
      } catch {
        continue;
      }
      if (m.subject?.digest !== digest) continue;
      const artifactType = m.artifactType ?? m.config.mediaType;
      if (opts.artifactType && artifactType !== opts.artifactType) continue;
      out.push({ mediaType: d.mediaType, digest: d.digest, size: d.size, artifactType });
    }
    return out;
  }

  async pushReferrer(bytes: Uint8Array, mediaType: string): Promise<Descriptor> {
    const desc = await this.putManifest(bytes, mediaType);
    const index = await this.#readIndexJson().catch(() => emptyIndex());
    if (!index.manifests.some((d) => d.digest === desc.digest)) {
      this.#writeIndexJson({ ...index, manifests: [...index.manifests, desc] });
    }
    return desc;
  }

  #blobPath(digest: string): string {
    return join(this.dir, "blobs", "sha256", digestHex(digest));
  }

  async #readIndexJson(): Promise<ImageIndex> {
    let text: string;
    try {
      text = await readFile(join(this.dir, "index.json"), "utf8");
    } catch (cause) {
      throw new NotFoundError(`Cannot open OCI layout "${this.dir}": no index.json`, { cause });
    }
    try {
      const ix = JSON.parse(text) as ImageIndex;
      if (!Array.isArray(ix.manifests)) throw new Error("no manifests array");
      return ix;
    } catch (cause) {
      throw new FormatError(`Cannot parse "${join(this.dir, "index.json")}": not an OCI image index`, 0, { cause });
    }
  }

  #writeIndexJson(index: ImageIndex): void {
    this.#ensureLayout();
    atomicWrite(join(this.dir, "index.json"), new TextEncoder().encode(goIndex({ ...index, schemaVersion: 2 })));
  }

  #ensureLayout(): void {
    mkdirSync(join(this.dir, "blobs", "sha256"), { recursive: true });
    if (!existsSync(join(this.dir, "oci-layout"))) {
      atomicWrite(join(this.dir, "oci-layout"), new TextEncoder().encode('{"imageLayoutVersion":"1.0.0"}'));
    }
    if (!existsSync(join(this.dir, "index.json"))) {
      atomicWrite(join(this.dir, "index.json"), new TextEncoder().encode(goIndex(emptyIndex())));
    }
  }
}

function emptyIndex(): ImageIndex {
  return { schemaVersion: 2, mediaType: MediaType.OCI_INDEX, manifests: [] };
}

/** Parse manifest/index bytes already verified against `digest`. */
export function parseFetched(bytes: Uint8Array, digest: string, where: string): FetchedManifest {
  let json: Manifest | ImageIndex;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes)) as Manifest | ImageIndex;
  } catch (cause) {
    throw new FormatError(`Cannot parse manifest "${digest}" of "${where}": not UTF-8 JSON`, 0, { cause });
  }
  if (typeof json !== "object" || json === null || json.schemaVersion !== 2) {
    throw new FormatError(`Cannot parse manifest "${digest}" of "${where}": schemaVersion is not 2`, 0);
  }
  const isIdx = Array.isArray((json as ImageIndex).manifests);
  const mediaType = json.mediaType ?? (isIdx ? MediaType.OCI_INDEX : MediaType.OCI_MANIFEST);
  return { descriptor: { mediaType, digest, size: bytes.length }, bytes, manifest: json };
}

/** True when a fetched manifest is an index (OCI index or Docker manifest list). */
export function isIndexManifest(m: FetchedManifest): m is FetchedManifest & { manifest: ImageIndex } {
  return INDEX_TYPES.includes(m.descriptor.mediaType) || Array.isArray((m.manifest as ImageIndex).manifests);
}

// ---------------------------------------------------------------------------------------------------------
// Registry

/** A registry repository, through a RegistryClient. */
export class RegistryLocation implements ImageLocation {
  readonly name: string;
  readonly tag: string | undefined;
  readonly client: RegistryClient;
  readonly ref: Reference;

  constructor(client: RegistryClient, ref: Reference, name: string) {
    this.client = client;
    this.ref = ref;
    this.tag = ref.tag;
    this.name = name;
  }

  getRoot(opts?: RequestOptions): Promise<FetchedManifest> {
    if (!this.ref.tag && !this.ref.digest) {
      return this.client.getManifest({ ...this.ref, tag: "latest" }, opts);
    }
    return this.client.getManifest(this.ref, opts);
  }

  getManifest(digest: string, opts?: RequestOptions): Promise<FetchedManifest> {
    return this.client.getManifest({ registry: this.ref.registry, repository: this.ref.repository, digest }, opts);
  }

  getBlob(digest: string, opts?: RequestOptions): Promise<Uint8Array> {
    return this.client.getBlob(this.ref, digest, opts);
  }

  getBlobStream(digest: string, _size: number, opts?: RequestOptions): Promise<ReadableStream<Uint8Array>> {
    return this.client.getBlobStream(this.ref, digest, opts);
  }

  readRange(digest: string, start: number, end: number, opts?: RequestOptions): Promise<Uint8Array> {
    return this.client.readRange(this.ref, digest, start, end, opts);
  }

  async hasBlob(digest: string, opts?: RequestOptions): Promise<boolean> {
    try {
      await this.client.headBlob(this.ref, digest, opts);
      return true;
    } catch (err) {
      if (err instanceof NotFoundError) return false;
      throw err;
    }
  }

  async putBlob(bytes: Uint8Array, opts?: RequestOptions): Promise<string> {
    return (await this.client.pushBlob(this.ref, bytes, opts)).digest;
  }

  async putManifest(bytes: Uint8Array, mediaType: string, opts: RequestOptions & { tag?: string } = {}): Promise<Descriptor> {
    const digest = sha256Digest(bytes);
    const target: Reference = { registry: this.ref.registry, repository: this.ref.repository };
    if (opts.tag !== undefined) target.tag = opts.tag;
    else target.digest = digest;
    return this.client.putManifest(target, bytes, mediaType, opts);
  }

  referrers(digest: string, opts?: RequestOptions & { artifactType?: string }): Promise<Descriptor[]> {
    return this.client.referrers(this.ref, digest, opts);
  }

  pushReferrer(bytes: Uint8Array, mediaType: string, opts?: RequestOptions): Promise<Descriptor> {
    // Without the tag: the client would also tag the referrer, moving the image's tag to the index.
    return this.client.pushReferrer({ registry: this.ref.registry, repository: this.ref.repository }, bytes, mediaType, opts);
  }
}

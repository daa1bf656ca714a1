/** An ImageStore bound to one repository of a registry, over any RegistryClient. */
import type { Descriptor, Platform } from "../oci/types.ts";
import { formatReference, manifestTarget, withDefaultTag } from "./reference.ts";
import type {
  FetchedManifest,
  ImageStore,
  RangeReadOptions,
  Reference,
  RegistryClient,
  RequestOptions,
} from "./types.ts";
import { isDigest } from "../util/digest.ts";

/** The registry side of `openImageSource`: `ref` names the image, its tag or digest is what `resolve` reads. */
export class RegistryImageStore implements ImageStore {
  readonly name: string;
  readonly ref: Reference;
  readonly #client: RegistryClient;

  constructor(client: RegistryClient, ref: Reference) {
    this.#client = client;
    this.ref = withDefaultTag(ref);
    this.name = formatReference(this.ref);
  }

  #repo(): Reference {
    return { registry: this.ref.registry, repository: this.ref.repository };
  }

  #at(target: string): Reference {
    return isDigest(target) ? { ...this.#repo(), digest: target } : { ...this.#repo(), tag: target };
  }

  resolve(opts?: RequestOptions & { platform?: Platform }): Promise<FetchedManifest> {
    return this.#client.resolveImage(this.#at(manifestTarget(this.ref)), opts);
  }
  getManifest(target: string, opts?: RequestOptions): Promise<FetchedManifest> {
    return this.#client.getManifest(this.#at(target), opts);
  }
  getBlob(digest: string, opts?: RequestOptions & { size?: number }): Promise<Uint8Array> {
    return this.#client.getBlob(this.#repo(), digest, opts);
  }
  getBlobStream(digest: string, opts?: RequestOptions): Promise<ReadableStream<Uint8Array>> {
    return this.#client.getBlobStream(this.#repo(), digest, opts);
  }
  headBlob(digest: string, opts?: RequestOptions): Promise<{ size: number }> {
    return this.#client.headBlob(this.#repo(), digest, opts);
  }
  // biome-ignore lint/complexity/useMaxParams: the ImageStore readRange shape (digest, start, end, options) every backend implements
  readRange(digest: string, start: number, end: number, opts?: RangeReadOptions): Promise<Uint8Array> {
    return this.#client.readRange(this.#repo(), digest, start, end, opts);
  }
  readRanges(digest: string, ranges: Array<[number, number]>, opts?: RequestOptions): Promise<Uint8Array[]> {
    return this.#client.readRanges(this.#repo(), digest, ranges, opts);
  }
  referrers(digest: string, opts?: RequestOptions & { artifactType?: string }): Promise<Descriptor[]> {
    return this.#client.referrers(this.#repo(), digest, opts);
  }
  putBlob(bytes: Uint8Array, opts?: RequestOptions & { mediaType?: string; digest?: string }): Promise<Descriptor> {
    return this.#client.pushBlob(this.#repo(), bytes, opts);
  }
  putManifest(bytes: Uint8Array, mediaType: string, opts: RequestOptions & { tag?: string } = {}): Promise<Descriptor> {
    return this.#client.putManifest(
      opts.tag ? { ...this.#repo(), tag: opts.tag } : this.#repo(),
      bytes,
      mediaType,
      opts,
    );
  }
  async tag(tag: string, descriptor: Descriptor, opts?: RequestOptions): Promise<void> {
    const m = await this.#client.getManifest({ ...this.#repo(), digest: descriptor.digest }, opts);
    await this.#client.putManifest({ ...this.#repo(), tag }, m.bytes, m.descriptor.mediaType, opts);
  }
  pushReferrer(bytes: Uint8Array, mediaType: string, opts?: RequestOptions): Promise<Descriptor> {
    return this.#client.pushReferrer(this.#repo(), bytes, mediaType, opts);
  }
}

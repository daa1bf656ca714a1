/**
 * An OCI image layout directory (image-spec `image-layout.md`) as an ImageStore, the way umoci and skopeo
 * write it:
 *   DIR/oci-layout            {"imageLayoutVersion":"1.0.0"}
 *   DIR/index.json            an image index; tags are `org.opencontainers.image.ref.name` annotations
 *   DIR/blobs/<alg>/<hex>     content-addressed blobs (manifests too)
 * Reads verify digests (ranges excepted); writes go to a temp file that is fsynced and renamed into place,
 * and index.json updates are serialized within the process, written as Go's encoding/json writes an
 * ocispec.Index (src/oci/go_json.ts, so its bytes match SOCI's and umoci's) and replaced atomically.
 */
import { randomUUID } from "node:crypto";
import { mkdir, open, readFile, rename, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { goIndex } from "../oci/go_json.ts";
import { isIndex, parseManifest, artifactTypeOf, encodeJson } from "../oci/manifest.ts";
import { isIndexMediaType, isManifestMediaType, MediaType } from "../oci/media_types.ts";
import { formatPlatform, platformForArch, selectPlatform } from "../oci/platform.ts";
import type { Descriptor, ImageIndex, Platform } from "../oci/types.ts";
import { Digester, parseDigest, sha256Digest, verifyDigest } from "../util/digest.ts";
import {
  DigestMismatchError,
  FailedPreconditionError,
  fsErrorReason,
  InvalidArgumentError,
  NotFoundError,
} from "../util/errors.ts";
import { checkRanges } from "./ranges.ts";
import type { FetchedManifest, ImageStore, RequestOptions } from "./types.ts";

/** The annotation holding a tag in index.json. */
export const REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name";

/** Options of `OciLayout.open` and of the constructor. */
export interface OciLayoutOptions {
  /** `open` only: create the layout (oci-layout, empty index.json) when DIR has none (default false). */
  create?: boolean;
  /** The platform `resolve` picks from an index (default linux/<host arch>). */
  defaultPlatform?: Platform;
}

/**
 * An OCI image layout, optionally bound to a tag (`oci:DIR:TAG`). `new OciLayout(dir)` checks nothing and
 * creates the layout on its first write (reads of a missing layout throw NotFoundError); `OciLayout.open`
 * checks the `oci-layout` file first.
 */
export class OciLayout implements ImageStore {
  readonly name: string;
  readonly dir: string;
  readonly tagName?: string;
  readonly #platform: Platform;
  #indexLock: Promise<unknown> = Promise.resolve();
  #created: Promise<void> | undefined;

  constructor(dir: string, tag?: string, opts: Pick<OciLayoutOptions, "defaultPlatform"> = {}) {
    this.dir = dir;
    this.tagName = tag;
    this.name = `oci:${dir}${tag ? `:${tag}` : ""}`;
    this.#platform = opts.defaultPlatform ?? platformForArch(process.arch);
  }

  /**
   * Opens DIR as a layout (creating it with `create`). Throws NotFoundError when DIR has no `oci-layout`
   * file (and `create` is off), FailedPreconditionError for an unsupported layout version.
   */
  static async open(dir: string, tag?: string, opts: OciLayoutOptions = {}): Promise<OciLayout> {
    const layout = new OciLayout(dir, tag, opts);
    let marker: string;
    try {
      marker = await readFile(join(dir, "oci-layout"), "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw layoutError(dir, "oci-layout", err);
      if (!opts.create)
        throw new NotFoundError(`Cannot open OCI layout "${dir}": it has no "oci-layout" file`, { cause: err });
      await layout.#create();
      return layout;
    }
    let version: unknown;
    try {
      version = (JSON.parse(marker) as { imageLayoutVersion?: unknown }).imageLayoutVersion;
    } catch (err) {
      throw new FailedPreconditionError(`Cannot open OCI layout "${dir}": "oci-layout" is not JSON`, { cause: err });
    }
    if (version !== "1.0.0")
      throw new FailedPreconditionError(
        `Cannot open OCI layout "${dir}": imageLayoutVersion is "${String(version)}", expected "1.0.0"`,
      );
    return layout;
  }

  /** The path of a blob. */
  blobPath(digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.dir, "blobs", algorithm, hex);
  }

  /** index.json, parsed. NotFoundError when the layout has none. */
  async readIndex(): Promise<ImageIndex> {
    const path = join(this.dir, "index.json");
    const bytes = await readFile(path).then(
      (b) => new Uint8Array(b),
      (err) => {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw layoutError(this.dir, "index.json", err);
        throw new NotFoundError(`Cannot open OCI layout "${this.dir}": it has no index.json`, { cause: err });
      },
    );
    const { manifest } = parseManifest(bytes, { what: `index "${path}"` });
    if (!isIndex(manifest))
      throw new FailedPreconditionError(`Cannot read OCI layout "${this.dir}": index.json has no "manifests"`);
    return manifest;
  }

  /** Tags of index.json, in order. */
  async tags(): Promise<string[]> {
    return (await this.readIndex()).manifests
      .map((d) => d.annotations?.[REF_NAME_ANNOTATION])
      .filter((t): t is string => !!t);
  }

  // ------------------------------------------------------------------------------------------------- reads

  async resolve(opts: RequestOptions & { platform?: Platform } = {}): Promise<FetchedManifest> {
    const top = await this.getRoot();
    if (!isIndex(top.manifest)) return top;
    const want = opts.platform ?? this.#platform;
    const pick =
      selectPlatform(top.manifest.manifests, want) ??
      (top.manifest.manifests.length === 1 && !top.manifest.manifests[0]!.platform
        ? top.manifest.manifests[0]
        : undefined);
    if (!pick) {
      const have = top.manifest.manifests.map((d) => (d.platform ? formatPlatform(d.platform) : "?")).join(", ");
      throw new NotFoundError(
        `Cannot resolve "${this.name}" for platform "${formatPlatform(want)}": the index offers ${have || "nothing"}`,
      );
    }
    const one = await this.getManifest(pick.digest, opts);
    if (isIndex(one.manifest))
      throw new FailedPreconditionError(`Cannot resolve "${this.name}": nested index "${pick.digest}"`);
    return one;
  }

  /**
   * The manifest or index the layout names, not narrowed to a platform: the bound tag, else the only entry
   * of index.json. NotFoundError when the tag is missing or index.json is empty, InvalidArgumentError
   * ("name a tag") when there is no tag and index.json lists several manifests.
   */
  async getRoot(_opts?: RequestOptions): Promise<FetchedManifest> {
    if (this.tagName) return this.getManifest(this.tagName);
    const index = await this.readIndex();
    if (index.manifests.length === 0)
      throw new NotFoundError(`Cannot find an image in OCI layout "${this.dir}": index.json lists no manifests`);
    if (index.manifests.length > 1) {
      const tags = index.manifests.map((d) => d.annotations?.[REF_NAME_ANNOTATION] ?? d.digest).join(", ");
      throw new InvalidArgumentError(
        `Cannot choose an image in "${this.name}": index.json lists ${index.manifests.length} manifests (${tags}); name a tag ("oci:DIR:TAG")`,
      );
    }
    return this.getManifest(index.manifests[0]!.digest);
  }

  async getManifest(target: string, _opts?: RequestOptions): Promise<FetchedManifest> {
    const index = await this.readIndex();
    let desc: Descriptor | undefined;
    if (target.includes(":")) {
      parseDigest(target);
      desc = index.manifests.find((d) => d.digest === target);
    } else {
      desc = [...index.manifests].reverse().find((d) => d.annotations?.[REF_NAME_ANNOTATION] === target);
      if (!desc) {
        const tags = (await this.tags()).join(", ");
        throw new NotFoundError(
          `Cannot find tag "${target}" in OCI layout "${this.dir}": it has ${tags ? `tags ${tags}` : "no tags"}`,
        );
      }
    }
    const digest = desc?.digest ?? target;
    const bytes = await this.getBlob(digest);
    const { manifest, mediaType } = parseManifest(bytes, {
      contentType: desc?.mediaType,
      what: `manifest "${digest}" of "${this.name}"`,
    });
    return { descriptor: { mediaType, digest, size: bytes.length }, bytes, manifest };
  }

  async getBlob(digest: string, _opts?: RequestOptions): Promise<Uint8Array> {
    const bytes = new Uint8Array(await this.#readFile(digest));
    verifyDigest(bytes, digest, { what: `blob "${digest}" of OCI layout "${this.dir}"` });
    return bytes;
  }

  /**
   * The blob as a byte stream (`type: "bytes"`): a BYOB reader's buffer is filled straight from the file, so a
   * consumer that reads into the same buffer again and again (the zTOC builder) costs no allocation per chunk;
   * a default reader gets chunks of up to 1 MiB. The bytes are hashed as they are read, and the stream errors
   * with DigestMismatchError at its end when they do not hash to `digest`.
   */
  async getBlobStream(digest: string, _opts?: RequestOptions): Promise<ReadableStream<Uint8Array>> {
    const what = `blob "${digest}" of OCI layout "${this.dir}"`;
    const digester = new Digester(parseDigest(digest).algorithm);
    const path = this.blobPath(digest);
    const fh = await open(path, "r").catch((err) => {
      throw this.#missing(digest, err);
    });
    // The handle is closed exactly once: at the end, on a read error, or when the reader cancels.
    let closed = false;
    const close = async () => {
      if (closed) return;
      closed = true;
      await fh.close().catch(() => {});
    };
    let size: number;
    try {
      size = (await fh.stat()).size;
    } catch (err) {
      await close();
      throw err;
    }
    let pos = 0;
    return new ReadableStream({
      type: "bytes",
      autoAllocateChunkSize: 1 << 20,
      async pull(c: ReadableByteStreamController) {
        // With autoAllocateChunkSize there is always a request, default readers included.
        const req = c.byobRequest!;
        try {
          const v = req.view!;
          const view = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
          const want = Math.min(view.length, size - pos);
          const { bytesRead } = want === 0 ? { bytesRead: 0 } : await fh.read(view, 0, want, pos);
          if (bytesRead === 0) {
            await close();
            const mismatch = digester.mismatch(digest, what);
            if (mismatch) {
              c.error(mismatch);
              return;
            }
            c.close();
            req.respond(0);
            return;
          }
          pos += bytesRead;
          digester.update(view.subarray(0, bytesRead));
          req.respond(bytesRead);
        } catch (err) {
          await close();
          c.error(err);
        }
      },
      cancel: close,
    });
  }

  async headBlob(digest: string, _opts?: RequestOptions): Promise<{ size: number }> {
    try {
      return { size: (await stat(this.blobPath(digest))).size };
    } catch (err) {
      throw this.#missing(digest, err);
    }
  }

  // biome-ignore lint/complexity/useMaxParams: the ImageStore readRange shape (digest, start, end, options) every backend implements
  async readRange(digest: string, start: number, end: number, _opts?: RequestOptions): Promise<Uint8Array> {
    return (await this.readRanges(digest, [[start, end]]))[0]!;
  }

  async readRanges(digest: string, ranges: Array<[number, number]>, _opts?: RequestOptions): Promise<Uint8Array[]> {
    const what = `blob "${digest}" of OCI layout "${this.dir}"`;
    checkRanges(ranges, what);
    const fh = await open(this.blobPath(digest), "r").catch((err) => {
      throw this.#missing(digest, err);
    });
    try {
      const size = (await fh.stat()).size;
      const out: Uint8Array[] = [];
      for (const [s, e] of ranges) {
        if (e > size)
          throw new InvalidArgumentError(`Cannot read range [${s}, ${e}) of ${what}: the blob has only ${size} bytes`);
        const buf = new Uint8Array(e - s);
        let got = 0;
        while (got < buf.length) {
          const { bytesRead } = await fh.read(buf, got, buf.length - got, s + got);
          if (bytesRead === 0)
            throw new FailedPreconditionError(`Cannot read range [${s}, ${e}) of ${what}: file ended early`);
          got += bytesRead;
        }
        out.push(buf);
      }
      return out;
    } finally {
      await fh.close();
    }
  }

  /** Manifests of index.json whose `subject` is `digest` (the layout has no referrers API; we scan). */
  async referrers(digest: string, opts: RequestOptions & { artifactType?: string } = {}): Promise<Descriptor[]> {
    parseDigest(digest);
    const out: Descriptor[] = [];
    const seen = new Set<string>();
    for (const d of (await this.readIndex()).manifests) {
      if (seen.has(d.digest) || !(isManifestMediaType(d.mediaType) || isIndexMediaType(d.mediaType))) continue;
      seen.add(d.digest);
      const { manifest } = parseManifest(await this.getBlob(d.digest), { contentType: d.mediaType });
      if (manifest.subject?.digest !== digest) continue;
      const entry: Descriptor = { mediaType: d.mediaType, digest: d.digest, size: d.size };
      const at = artifactTypeOf(manifest);
      if (at) entry.artifactType = at;
      if (manifest.annotations) entry.annotations = manifest.annotations;
      if (!opts.artifactType || entry.artifactType === opts.artifactType) out.push(entry);
    }
    return out;
  }

  // ------------------------------------------------------------------------------------------------ writes

  async putBlob(
    bytes: Uint8Array,
    opts: RequestOptions & { mediaType?: string; digest?: string } = {},
  ): Promise<Descriptor> {
    const digest = sha256Digest(bytes);
    if (opts.digest && opts.digest !== digest) {
      throw new DigestMismatchError(
        `Cannot put blob "${opts.digest}" into OCI layout "${this.dir}": its bytes hash to "${digest}"`,
        opts.digest,
        digest,
      );
    }
    const path = this.blobPath(digest);
    const exists = await stat(path).then(
      (s) => s.size === bytes.length,
      () => false,
    );
    if (!exists) {
      this.#created ??= this.#create();
      await this.#created;
      await atomicWrite(path, bytes);
    }
    return { mediaType: opts.mediaType ?? MediaType.OCTET_STREAM, digest, size: bytes.length };
  }

  /** Stores a manifest as a blob, and lists it in index.json under `tag` when given (replacing the tag's old entry). */
  async putManifest(
    bytes: Uint8Array,
    mediaType: string,
    opts: RequestOptions & { tag?: string } = {},
  ): Promise<Descriptor> {
    parseManifest(bytes, { contentType: mediaType, what: `manifest for OCI layout "${this.dir}"` });
    const { digest, size } = await this.putBlob(bytes, { mediaType });
    const desc: Descriptor = { mediaType, digest, size };
    if (opts.tag !== undefined) await this.tag(opts.tag, desc);
    return desc;
  }

  async tag(tag: string, descriptor: Descriptor, _opts?: RequestOptions): Promise<void> {
    if (!/^[\w][\w.-]{0,127}$/.test(tag))
      throw new InvalidArgumentError(
        `Cannot tag "${descriptor.digest}" in OCI layout "${this.dir}": tag "${tag}" is not valid`,
      );
    await this.headBlob(descriptor.digest);
    await this.#updateIndex((index) =>
      addToIndex(index, { mediaType: descriptor.mediaType, digest: descriptor.digest, size: descriptor.size }, tag),
    );
  }

  async pushReferrer(bytes: Uint8Array, mediaType: string, opts?: RequestOptions): Promise<Descriptor> {
    const { manifest } = parseManifest(bytes, { contentType: mediaType });
    if (!manifest.subject)
      throw new InvalidArgumentError(
        `Cannot put referrer into OCI layout "${this.dir}": the manifest has no "subject"`,
      );
    const desc = await this.putManifest(bytes, mediaType, opts);
    await this.#updateIndex((index) => addToIndex(index, desc));
    return desc;
  }

  // ----------------------------------------------------------------------------------------------- helpers

  async #readFile(digest: string): Promise<Buffer> {
    try {
      return await readFile(this.blobPath(digest));
    } catch (err) {
      throw this.#missing(digest, err);
    }
  }

  #missing(digest: string, err: unknown): Error {
    if ((err as NodeJS.ErrnoException).code === "ENOENT")
      return new NotFoundError(`Cannot find blob "${digest}" in OCI layout "${this.dir}"`, { cause: err });
    if ((err as NodeJS.ErrnoException).code === "ENOTDIR") return layoutError(this.dir, "", err);
    return new FailedPreconditionError(
      `Cannot read blob "${digest}" of OCI layout "${this.dir}": ${fsErrorReason(err)}`,
    );
  }

  /** Creates DIR/blobs/sha256, oci-layout and an empty index.json where missing. */
  async #create(): Promise<void> {
    try {
      await mkdir(join(this.dir, "blobs", "sha256"), { recursive: true });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const why = code === "ENOTDIR" || code === "EEXIST" ? "it or a parent is not a directory" : fsErrorReason(err);
      throw new FailedPreconditionError(`Cannot create OCI layout "${this.dir}": ${why}`);
    }
    const files: Array<[string, Uint8Array]> = [
      ["oci-layout", encodeJson({ imageLayoutVersion: "1.0.0" })],
      [
        "index.json",
        new TextEncoder().encode(goIndex({ schemaVersion: 2, mediaType: MediaType.OCI_INDEX, manifests: [] })),
      ],
    ];
    for (const [name, bytes] of files) {
      if (
        !(await stat(join(this.dir, name)).then(
          () => true,
          () => false,
        ))
      )
        await atomicWrite(join(this.dir, name), bytes);
    }
  }

  /** Read-modify-write of index.json, one at a time within this process, replaced atomically. */
  #updateIndex(change: (index: ImageIndex) => ImageIndex): Promise<void> {
    const next = this.#indexLock.then(async () => {
      this.#created ??= this.#create();
      await this.#created;
      const index = change(await this.readIndex());
      await atomicWrite(join(this.dir, "index.json"), new TextEncoder().encode(goIndex(index)));
    });
    this.#indexLock = next.catch(() => {});
    return next;
  }
}

/**
 * The error for a layout file that cannot be read for another reason than being absent: "Cannot open OCI
 * layout "DIR": not a directory" when DIR (or a parent) is a file, else naming the file and the reason.
 * The reason stands in for Node's message, which is not kept as the cause (it would repeat it, raw).
 */
function layoutError(dir: string, file: string, err: unknown): Error {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ENOTDIR") return new FailedPreconditionError(`Cannot open OCI layout "${dir}": not a directory`);
  if (code === "EISDIR") return new FailedPreconditionError(`Cannot open OCI layout "${dir}": ${file} is a directory`);
  return new FailedPreconditionError(
    `Cannot open OCI layout "${dir}": cannot read ${file || "it"}: ${fsErrorReason(err)}`,
  );
}

/** index.json with `desc` added: a tag moves to it; an untagged descriptor is added once. */
function addToIndex(index: ImageIndex, desc: Descriptor, tag?: string): ImageIndex {
  let manifests = index.manifests;
  if (tag) {
    manifests = manifests.filter((d) => d.annotations?.[REF_NAME_ANNOTATION] !== tag);
    manifests.push({ ...desc, annotations: { [REF_NAME_ANNOTATION]: tag } });
  } else if (!manifests.some((d) => d.digest === desc.digest)) {
    manifests = [...manifests, desc];
  }
  return { ...index, schemaVersion: 2, mediaType: index.mediaType ?? MediaType.OCI_INDEX, manifests };
}

/**
 * Writes `bytes` to `path` so that readers see either nothing or all of it: a temp file in the same
 * directory, fsynced, renamed into place, then the directory fsynced so the new name survives a crash.
 */
async function atomicWrite(path: string, bytes: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${randomUUID()}`;
  try {
    const fh = await open(tmp, "wx", 0o644);
    try {
      await fh.writeFile(bytes);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  // Some file systems refuse fsync on a directory; the rename is atomic all the same.
  await open(dirname(path), "r")
    .then((dh) => dh.sync().finally(() => dh.close()))
    .catch(() => {});
}

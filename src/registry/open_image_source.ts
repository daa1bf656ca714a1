/**
 * `openImageSource("oci:DIR[:TAG]" | "[docker://]host/repo[:tag][@digest]", opts)`: one entry point for
 * the index builder, `convert` and the lazy filesystem to read (and write) an image wherever it lives.
 */
import { OciLayout } from "./oci_layout.ts";
import { HttpRegistryClient, type RegistryClientOptions } from "./client.ts";
import { parseReference } from "./reference.ts";
import { RegistryImageStore } from "./registry_image_store.ts";
import type { ImageStore, RegistryClient } from "./types.ts";
import { InvalidArgumentError } from "../util/errors.ts";

/** Options of `openImageSource`: the registry client's, plus layout creation and a shared client. */
export interface OpenImageSourceOptions extends RegistryClientOptions {
  /** Use this client for registry references (share its token and redirect caches) instead of a new one. */
  client?: RegistryClient;
  /** For `oci:` references: create the layout when the directory has none (default false). */
  create?: boolean;
}

/**
 * Opens an image by reference string. `oci:DIR[:TAG]` is an OCI image layout (the first ":" after "oci:"
 * separates the tag, as skopeo does, so DIR cannot contain ":"); anything else, optionally prefixed with
 * `docker://`, is a registry reference (tag "latest" when it has neither tag nor digest).
 * Throws InvalidArgumentError for a malformed reference, NotFoundError for a missing layout.
 */
export async function openImageSource(refString: string, opts: OpenImageSourceOptions = {}): Promise<ImageStore> {
  if (refString.startsWith("oci:")) {
    const rest = refString.slice(4);
    const i = rest.indexOf(":");
    const dir = i >= 0 ? rest.slice(0, i) : rest;
    const tag = i >= 0 ? rest.slice(i + 1) : undefined;
    if (!dir) throw new InvalidArgumentError(`Cannot open "${refString}": the OCI layout directory is empty`);
    if (tag !== undefined && !/^[\w][\w.-]{0,127}$/.test(tag)) throw new InvalidArgumentError(`Cannot open "${refString}": tag "${tag}" is not valid`);
    return OciLayout.open(dir, tag, { create: opts.create, defaultPlatform: opts.defaultPlatform });
  }
  const ref = parseReference(refString.startsWith("docker://") ? refString.slice(9) : refString);
  return new RegistryImageStore(opts.client ?? new HttpRegistryClient(opts), ref);
}

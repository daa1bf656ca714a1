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
 * Splits `oci:DIR[:TAG]` (undefined when `spec` does not start with "oci:"). The tag is what follows the
 * last ":" when that part has no "/", so "oci:/a/b:v1" is DIR "/a/b" and TAG "v1" as with skopeo, and DIR
 * may contain ":" when a tag follows. Throws InvalidArgumentError for an empty DIR or an invalid TAG.
 */
export function parseLayoutSpec(spec: string): { dir: string; tag: string | undefined } | undefined {
  if (!spec.startsWith("oci:")) return undefined;
  const rest = spec.slice("oci:".length);
  const colon = rest.lastIndexOf(":");
  const tagged = colon > 0 && !rest.slice(colon + 1).includes("/");
  const dir = tagged ? rest.slice(0, colon) : rest;
  const tag = (tagged && rest.slice(colon + 1)) || undefined;
  if (!dir) throw new InvalidArgumentError(`Cannot open "${spec}": the OCI layout directory is empty`);
  if (tag !== undefined && !/^[\w][\w.-]{0,127}$/.test(tag))
    throw new InvalidArgumentError(`Cannot open "${spec}": tag "${tag}" is not valid`);
  return { dir, tag };
}

/**
 * Opens an image by reference string. `oci:DIR[:TAG]` is an OCI image layout (see `parseLayoutSpec`);
 * anything else, optionally prefixed with `docker://`, is a registry reference (tag "latest" when it has
 * neither tag nor digest). Throws InvalidArgumentError for a malformed reference, NotFoundError for a
 * missing layout.
 */
export async function openImageSource(refString: string, opts: OpenImageSourceOptions = {}): Promise<ImageStore> {
  const layout = parseLayoutSpec(refString);
  if (layout)
    return OciLayout.open(layout.dir, layout.tag, { create: opts.create, defaultPlatform: opts.defaultPlatform });
  const ref = parseReference(refString.startsWith("docker://") ? refString.slice(9) : refString);
  return new RegistryImageStore(opts.client ?? new HttpRegistryClient(opts), ref);
}

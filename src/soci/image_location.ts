/**
 * Where an image lives, as the SOCI commands see it: a repository in a registry (`HOST/REPO[:TAG|@DIGEST]`)
 * or an OCI image layout directory (`oci:DIR[:TAG]`). It is the registry layer's ImageStore (one interface
 * for reading manifests and blobs and writing them back, so building, pushing and converting work the same
 * on both) plus the root manifest the location names, unresolved, and the tag it names.
 *
 * The layout side is src/registry/oci_layout.ts itself; the registry side is RegistryImageStore with the
 * client exposed for the lazy filesystem. Both run under Deno.
 */
import { manifestTarget } from "../registry/reference.ts";
import { RegistryImageStore } from "../registry/registry_image_store.ts";
import type {
  FetchedManifest,
  ImageSource,
  ImageStore,
  Reference,
  RegistryClient,
  RequestOptions,
} from "../registry/types.ts";
import { NotFoundError } from "../util/errors.ts";

/** An image store bound to an image: what `oci:DIR[:TAG]` or `HOST/REPO[:TAG|@DIGEST]` names. */
export interface ImageLocation extends ImageStore {
  /** The tag this location names, if any. */
  readonly tagName?: string;
  /**
   * The manifest or index the location names (its tag, its digest, or a layout's only image), not narrowed
   * to a platform. NotFoundError when it is missing; InvalidArgumentError when a layout needs a tag.
   */
  getRoot(opts?: RequestOptions): Promise<FetchedManifest>;
}

/** True when `digest` is stored at `location` (headBlob without the NotFoundError). */
export async function hasBlob(location: ImageSource, digest: string, opts?: RequestOptions): Promise<boolean> {
  try {
    await location.headBlob(digest, opts);
    return true;
  } catch (err) {
    if (err instanceof NotFoundError) return false;
    throw err;
  }
}

/** A registry repository, through a RegistryClient; `name` is the reference as the user wrote it. */
export class RegistryLocation extends RegistryImageStore implements ImageLocation {
  override readonly name: string;
  readonly tagName: string | undefined;
  readonly client: RegistryClient;

  constructor(client: RegistryClient, ref: Reference, name: string) {
    super(client, ref);
    this.client = client;
    this.tagName = ref.tag;
    this.name = name;
  }

  /** The manifest or index of the reference's digest, else its tag, else "latest". */
  getRoot(opts?: RequestOptions): Promise<FetchedManifest> {
    return this.getManifest(manifestTarget(this.ref), opts);
  }
}

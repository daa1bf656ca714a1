/**
 * Opening an image location for the commands that read images: a registry reference or `oci:DIR[:TAG]`, with
 * the process's registry client configured from the config tree (`[http]`, `[resolver.host]`, `docker_config`).
 */
import { HttpRegistryClient } from "../registry/client.ts";
import { OciLayout } from "../registry/oci_layout.ts";
import { parseLayoutSpec } from "../registry/open_image_source.ts";
import { parseReference } from "../registry/reference.ts";
import type { RegistryClient } from "../registry/types.ts";
import { registryClientOptions } from "../service/registry_options.ts";
import { type ImageLocation, RegistryLocation } from "../soci/image_location.ts";
import type { CliContext } from "./context.ts";

let client: RegistryClient | undefined;

/** The registry client of this process, configured from `[http]`, `[resolver.host]` and `docker_config`. */
export function registryClient(ctx: CliContext): RegistryClient {
  client ??= new HttpRegistryClient(registryClientOptions(ctx.config, { logger: ctx.logger, env: process.env }));
  return client;
}

/**
 * Open `oci:DIR[:TAG]` or a registry reference.
 * @throws InvalidArgumentError when the reference cannot be parsed
 */
export function openLocation(spec: string, ctx: CliContext): ImageLocation {
  const layout = parseLayoutSpec(spec);
  if (layout) return new OciLayout(layout.dir, layout.tag);
  const ref = parseReference(spec);
  return new RegistryLocation(registryClient(ctx), ref, spec);
}

/**
 * Image references parsed the way Docker's `reference.ParseNormalizedNamed` does:
 * `[host[:port]/]path[:tag][@digest]`, where the first component is a host only if it contains "." or ":" or
 * is "localhost"; otherwise the registry is docker.io and a one-component path gets "library/".
 */
import { InvalidArgumentError } from "../util/errors.ts";
import { isDigest } from "../util/digest.ts";
import type { Reference } from "./types.ts";

/** Docker Hub's canonical name, and the host that actually serves its API. */
export const DOCKER_HUB = "docker.io";
export const DOCKER_HUB_API_HOST = "registry-1.docker.io";

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const HOST =
  /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$/;

/**
 * Parses an image reference. Defaults: registry "docker.io", "library/" for one-component Docker Hub names.
 * No tag is filled in (callers decide whether "latest" applies; see `withDefaultTag`).
 * Throws InvalidArgumentError naming the reference and what is wrong with it.
 */
export function parseReference(s: string): Reference {
  const fail = (why: string): never => {
    throw new InvalidArgumentError(`Cannot parse image reference "${s}": ${why}`);
  };
  if (s.length === 0) fail("it is empty");
  if (s.length > 255 + 64) fail("it is too long");
  let rest = s;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!isDigest(digest)) fail(`digest "${digest}" is not "sha256:<64 hex digits>"`);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(":");
  if (colon > rest.lastIndexOf("/")) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) fail(`tag "${tag}" is not valid`);
  }
  let registry = DOCKER_HUB;
  let path = rest;
  const slash = rest.indexOf("/");
  const first = slash >= 0 ? rest.slice(0, slash) : "";
  if (
    slash >= 0 &&
    (first.includes(".") || first.includes(":") || first === "localhost" || first !== first.toLowerCase())
  ) {
    registry = first;
    path = rest.slice(slash + 1);
    if (!HOST.test(registry)) fail(`registry host "${registry}" is not valid`);
  }
  if (registry === "index.docker.io") registry = DOCKER_HUB;
  if (path.length === 0) fail("the repository name is empty");
  if (path !== path.toLowerCase()) fail(`repository "${path}" must be lowercase`);
  for (const c of path.split("/")) if (!COMPONENT.test(c)) fail(`repository component "${c}" is not valid`);
  if (registry === DOCKER_HUB && !path.includes("/")) path = `library/${path}`;
  const ref: Reference = { registry, repository: path };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

/** The reference with tag "latest" when it has neither tag nor digest. */
export function withDefaultTag(ref: Reference): Reference {
  return ref.tag || ref.digest ? ref : { ...ref, tag: "latest" };
}

/** `registry/repository[:tag][@digest]`, the canonical (fully qualified) form. */
export function formatReference(ref: Reference): string {
  return `${ref.registry}/${ref.repository}${ref.tag ? `:${ref.tag}` : ""}${ref.digest ? `@${ref.digest}` : ""}`;
}

/** `registry/repository`, for messages. */
export function repoName(ref: Reference): string {
  return `${ref.registry}/${ref.repository}`;
}

/** The tag or digest a manifest request uses: digest wins over tag; "latest" when neither. */
export function manifestTarget(ref: Reference): string {
  return ref.digest ?? ref.tag ?? "latest";
}

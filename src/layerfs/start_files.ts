/**
 * The files a container runtime reads at every container start, fetched as soon as the layer holding the image's
 * copy is open rather than by the start's own read: containerd's spec generation (ctr, CRI) and podman read
 * /etc/passwd and /etc/group from the image's root file system to resolve the user and its groups. Cold, that
 * read is a span round trip on the container's start path, after the pull (bench:containerd: ~50 ms between
 * containerd mounting the root file system and creating the task).
 *
 * `startFileRanges` finds, for each path, the copy the merged view of the image shows, by the rules the layer's
 * tree is built with (metadata.ts): walking the layers top down, within a layer the last entry of a name wins,
 * as `tar -x` leaves it: the file's own entry (a regular file, or a hardlink to an earlier entry of the same
 * layer; a hardlink without one is skipped, as the tree skips it) shows it; its whiteout, or a whiteout of a
 * parent or a parent that is not a directory, coming later hides it and every layer below; an opaque parent
 * (not the root, whose opaque marker overlayfs ignores) hides the layers below only. A layer without a zTOC
 * (fetched whole) ends the search, since what it holds is not known here (and its copy would be local). Names
 * are cleaned as the tree cleans them (absolute and escaping names are skipped). Paths found nowhere, hidden, or
 * not regular files are skipped: this is a prefetch, never an error.
 */
import type { FileMetadata, Ztoc } from "../ztoc/types.ts";
import { cleanPath } from "./metadata.ts";

/** What every container start reads (see the file comment). */
export const START_FILES: readonly string[] = ["etc/passwd", "etc/group"];

/**
 * Where the visible copy of each of `paths` (clean relative paths, as "etc/passwd") is, as byte ranges
 * [start, end) of the uncompressed layer by layer digest, for an image's `layers` bottom first (`ztoc` undefined for
 * a layer that is not lazy). Layers without any are absent. (The layer maps them to its spans when it opens.)
 */
export function startFileRanges(
  layers: ReadonlyArray<{ digest: string; ztoc?: Ztoc }>,
  paths: readonly string[] = START_FILES,
): Map<string, Array<[number, number]>> {
  const out = new Map<string, Array<[number, number]>>();
  const pending = new Set(paths.map((_, i) => i));
  for (let l = layers.length - 1; l >= 0 && pending.size > 0; l--) {
    const { digest, ztoc } = layers[l]!;
    if (!ztoc) break;
    for (const [i, what] of lookUp(ztoc.toc, paths, pending)) {
      pending.delete(i);
      if (what === "hidden" || what.uncompressedSize === 0) continue;
      const ranges = out.get(digest) ?? [];
      ranges.push([what.uncompressedOffset, what.uncompressedOffset + what.uncompressedSize]);
      out.set(digest, ranges);
    }
  }
  return out;
}

const SLASH = 0x2f;

/** How one TOC name matters to a path being looked for. */
type Hit =
  | { path: number; kind: "entry" }
  /** The path's whiteout, or a parent's: hides it and everything below. */
  | { path: number; kind: "whiteout" }
  /** An opaque marker of a parent directory: hides the layers below only. */
  | { path: number; kind: "opaque" }
  /** An entry named like a parent directory: it hides the path unless it is a directory. */
  | { path: number; kind: "parent" };

/** `dir/.wh.base` for `dir/base`. */
function whiteoutOf(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash < 0 ? `.wh.${path}` : `${path.slice(0, slash)}/.wh.${path.slice(slash + 1)}`;
}

/**
 * What one layer says about each pending path, in one pass over its TOC in order (the last word on a name wins):
 * the regular file it shows, or "hidden"; paths it says nothing about are absent.
 */
function lookUp(
  toc: readonly FileMetadata[],
  paths: readonly string[],
  pending: ReadonlySet<number>,
): Map<number, FileMetadata | "hidden"> {
  const hits = new Map<string, Hit[]>();
  const add = (name: string, hit: Hit) => {
    const list = hits.get(name);
    if (list) list.push(hit);
    else hits.set(name, [hit]);
  };
  for (const i of pending) {
    const p = paths[i]!;
    add(p, { path: i, kind: "entry" });
    add(whiteoutOf(p), { path: i, kind: "whiteout" });
    const parts = p.split("/");
    for (let k = 1; k < parts.length; k++) {
      const parent = parts.slice(0, k).join("/");
      add(parent, { path: i, kind: "parent" });
      add(whiteoutOf(parent), { path: i, kind: "whiteout" });
      add(`${parent}/.wh..wh..opq`, { path: i, kind: "opaque" });
    }
  }
  /** The last word of this layer on each path: the regular file it shows (a hardlink's target) or "hidden". */
  const last = new Map<number, FileMetadata | "hidden">();
  const opaque = new Set<number>();
  // Only names whose last component is one of these can matter: the others are passed over without cleaning
  // their names or allocating (11,240 entries in two layers: 19 -> 7 ms cold, 5-8 -> 0.2-0.8 ms warm).
  /** The last components that matter, by their last character. */
  const byLastChar = new Map<number, string[]>();
  for (const c of new Set([...hits.keys()].map((n) => n.slice(n.lastIndexOf("/") + 1)))) {
    const code = c.charCodeAt(c.length - 1);
    byLastChar.set(code, [...(byLastChar.get(code) ?? []), c]);
  }
  const mayMatter = (name: string) => {
    const end = name.charCodeAt(name.length - 1) === SLASH ? name.length - 1 : name.length;
    const candidates = byLastChar.get(name.charCodeAt(end - 1));
    if (!candidates) return false;
    for (const c of candidates) {
      const at = end - c.length;
      if (at >= 0 && name.startsWith(c, at) && (at === 0 || name.charCodeAt(at - 1) === SLASH)) return true;
    }
    return false;
  };
  for (let index = 0; index < toc.length; index++) {
    const m = toc[index]!;
    if (!mayMatter(m.name)) continue;
    const parts = cleanPath(m.name);
    if (!parts) continue;
    const name = parts.join("/");
    const list = hits.get(name);
    if (list) {
      for (const h of list) {
        switch (h.kind) {
          case "entry": {
            if (m.type !== "hardlink") {
              last.set(h.path, m.type === "reg" ? m : "hidden");
              break;
            }
            // A hardlink shows its target as it stood; one without a target is skipped (what was there stays).
            const target = earlierRegular(toc, index, m.linkname);
            if (target) last.set(h.path, target);
            break;
          }
          case "whiteout":
            last.set(h.path, "hidden");
            break;
          case "opaque":
            opaque.add(h.path);
            break;
          case "parent":
            if (m.type !== "dir") last.set(h.path, "hidden");
            break;
        }
      }
    }
  }
  const out = new Map<number, FileMetadata | "hidden">();
  for (const i of pending) {
    const w = last.get(i);
    if (w !== undefined) out.set(i, w);
    else if (opaque.has(i)) out.set(i, "hidden");
  }
  return out;
}

/**
 * The entry a hardlink at `index` names, as it stood then: the last entry of that name before it, when a regular
 * file (a link names an earlier entry of its layer, tar's rule); else undefined.
 */
function earlierRegular(toc: readonly FileMetadata[], index: number, linkname: string): FileMetadata | undefined {
  const target = cleanPath(linkname)?.join("/");
  if (target === undefined) return undefined;
  for (let i = index - 1; i >= 0; i--) {
    const m = toc[i]!;
    if (cleanPath(m.name)?.join("/") === target) return m.type === "reg" ? m : undefined;
  }
  return undefined;
}

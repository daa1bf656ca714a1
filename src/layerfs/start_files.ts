/**
 * The files a container runtime reads at every container start, fetched as soon as the layer holding the image's
 * copy is open rather than by the start's own read: containerd's spec generation (ctr, CRI) and podman read
 * /etc/passwd and /etc/group from the image's root file system to resolve the user and its groups. Cold, that
 * read is a span round trip on the container's start path, after the pull (bench:containerd: ~50 ms between
 * containerd mounting the root file system and creating the task).
 *
 * `startFileRanges` finds, for each path, the copy the merged view of the image shows: walking the layers top
 * down, the first layer with an entry of that name (a regular file, or a hardlink to one in the same layer) has
 * it; a whiteout of it or of a parent, an opaque parent, or a parent that is not a directory hides the layers
 * below; a layer without a zTOC (fetched whole) ends the search, since what it holds is not known here (and its
 * copy would be local). Paths found nowhere, hidden, or not regular files are skipped: this is a prefetch, never
 * an error.
 */
import type { FileMetadata, Ztoc } from "../ztoc/types.ts";

/** What every container start reads (see the file comment). */
export const START_FILES: readonly string[] = ["etc/passwd", "etc/group"];

/** How one TOC name matters to a path being looked for. */
type Hit =
  | { path: number; kind: "entry" }
  | { path: number; kind: "hides" }
  /** An entry named like a parent directory: it hides the path unless it is a directory. */
  | { path: number; kind: "parent" };

/**
 * Where the visible copy of each of `paths` (relative, as "etc/passwd") is, as byte ranges [start, end) of the
 * uncompressed layer by layer digest, for an image's `layers` bottom first (`ztoc` undefined for a layer that is
 * not lazy). Layers without any are absent. (The layer maps them to its spans when it opens.)
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
    const found = lookUp(ztoc.toc, paths, pending);
    for (const [i, what] of found) {
      pending.delete(i);
      if (what === "hidden") continue;
      const file = what.type === "hardlink" ? hardlinkTarget(ztoc.toc, what) : what;
      if (file?.type !== "reg" || file.uncompressedSize === 0) continue;
      const ranges = out.get(digest) ?? [];
      ranges.push([file.uncompressedOffset, file.uncompressedOffset + file.uncompressedSize]);
      out.set(digest, ranges);
    }
  }
  return out;
}

/** A TOC name without "./" or "/" in front or "/" behind (names are compared, never resolved). */
function clean(name: string): string {
  let s = name;
  while (s.startsWith("./")) s = s.slice(2);
  while (s.startsWith("/")) s = s.slice(1);
  while (s.endsWith("/")) s = s.slice(0, -1);
  return s;
}

/** `dir/.wh.base` for `dir/base`. */
function whiteoutOf(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash < 0 ? `.wh.${path}` : `${path.slice(0, slash)}/.wh.${path.slice(slash + 1)}`;
}

/**
 * What one layer says about each pending path, in one pass over its TOC: its own entry (the last of that name, as
 * `tar -x` leaves it, wins over anything hiding it in the same layer) or "hidden"; paths it says nothing about
 * are absent.
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
    add(whiteoutOf(p), { path: i, kind: "hides" });
    add(".wh..wh..opq", { path: i, kind: "hides" });
    const parts = p.split("/");
    for (let k = 1; k < parts.length; k++) {
      const parent = parts.slice(0, k).join("/");
      add(parent, { path: i, kind: "parent" });
      add(whiteoutOf(parent), { path: i, kind: "hides" });
      add(`${parent}/.wh..wh..opq`, { path: i, kind: "hides" });
    }
  }
  const own = new Map<number, FileMetadata>();
  const hidden = new Set<number>();
  for (const m of toc) {
    const list = hits.get(clean(m.name));
    if (!list) continue;
    for (const h of list) {
      if (h.kind === "entry") own.set(h.path, m);
      else if (h.kind === "hides" || m.type !== "dir") hidden.add(h.path);
    }
  }
  const out = new Map<number, FileMetadata | "hidden">();
  for (const i of pending) {
    const m = own.get(i);
    if (m) out.set(i, m);
    else if (hidden.has(i)) out.set(i, "hidden");
  }
  return out;
}

/** The regular file a hardlink names in the same layer (following links to links), or undefined. */
function hardlinkTarget(toc: readonly FileMetadata[], link: FileMetadata): FileMetadata | undefined {
  let file: FileMetadata | undefined = link;
  for (let hops = 0; file?.type === "hardlink" && hops < 32; hops++) {
    const target = clean(file.linkname);
    let next: FileMetadata | undefined;
    for (const m of toc) if (clean(m.name) === target) next = m;
    file = next;
  }
  return file?.type === "reg" ? file : undefined;
}

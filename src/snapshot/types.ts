/**
 * The values the snapshotter hands the gRPC layer, shaped after containerd's snapshots v1 API
 * (containerd-and-podman.md §1.3): `Info`, `Kind`, `Mount`, `Usage`.
 */

/** A snapshot's kind: `active` (writable, Prepare), `view` (read-only, View) or `committed` (Commit). */
export type Kind = "active" | "view" | "committed";

/** What Stat, Update and List return about a snapshot. */
export interface SnapshotInfo {
  /** The key of an active or view snapshot, the name of a committed one (opaque: containerd rewrites them). */
  name: string;
  /** Name of the committed parent, "" when there is none. */
  parent: string;
  kind: Kind;
  labels: Record<string, string>;
  created: Date;
  updated: Date;
}

/** One mount containerd performs (containerd.types.Mount). */
export interface Mount {
  /** "bind" or "overlay". */
  type: string;
  /** The directory to bind, or "overlay". */
  source: string;
  /** Options as mount(8) takes them: "ro", "rbind", "lowerdir=…". */
  options: string[];
}

/** Disk use of a snapshot: bytes allocated (blocks × 512) and distinct inodes. */
export interface Usage {
  size: number;
  inodes: number;
}

/**
 * `RemoteFs`: what the snapshotter needs from a lazy loader, and nothing more. The snapshot area owns this
 * interface and never imports FUSE, vfs or layerfs; the service (rank 4) hands it an implementation built on
 * the layer manager (one FUSE mount per layer), and the unit tests a fake.
 *
 * Labels are the snapshot's labels as containerd passed them to Prepare (and as stored at commit, so a restart
 * can mount the same layer again): `containerd.io/snapshot.ref`, `containerd.io/snapshot/cri.image-ref`,
 * `…/cri.layer-digest`, `…/cri.manifest-digest`, `…/cri.image-layers`, and AWS SOCI's
 * `containerd.io/snapshot/remote/soci.index.digest` when present (snapshot/labels.ts names them).
 */

/** Lazily mounts, checks and unmounts single layers at directories the snapshotter chooses. */
export interface RemoteFs {
  /**
   * Mounts the layer the labels name, read-only and lazily, at `mountpoint` (an existing empty directory), and
   * resolves once it can be read. Throws when the layer cannot be served remotely: NotFoundError when the image
   * has no SOCI index or the layer has no zTOC (the snapshotter then makes a normal snapshot and containerd
   * downloads the layer), InvalidArgumentError for labels that do not name a layer, UnavailableError when the
   * registry cannot be reached within the mount timeout. Nothing is left mounted when it throws. `restoring`:
   * the layer was mounted before and is mounted again at a restart (what its labels ask to begin once, a
   * recording, is not begun again).
   */
  mount(
    mountpoint: string,
    labels: Readonly<Record<string, string>>,
    opts?: { signal?: AbortSignal; restoring?: boolean },
  ): Promise<void>;
  /**
   * Checks a mount made by `mount`: resolves when it is served and its blob can still be reached; throws
   * NotFoundError when nothing is mounted there by this RemoteFs, UnavailableError when the registry cannot be
   * reached (bounded by the fetch timeout, never a hang).
   */
  check(mountpoint: string): Promise<void>;
  /** Unmounts `mountpoint` and releases its layer; resolves without error when nothing is mounted there. */
  unmount(mountpoint: string): Promise<void>;
}

/**
 * The containerd snapshots API as plain TypeScript: the messages a snapshotter sees (decoded from
 * proto/containerd/services/snapshots/v1/snapshots.proto) and `SnapshotsHandlers`, the interface the snapshot
 * logic implements and `serveSnapshots` (snapshots_server.ts) serves over gRPC. Nothing here knows about gRPC:
 * handlers take and return these types and throw the classes of src/util/errors.ts, which the server maps to
 * status codes once (see `statusOf` in snapshots_server.ts).
 *
 * Keys and names arrive as containerd's metadata layer rewrote them (`default/12/extract-… sha256:…`,
 * `default/13/sha256:…`): treat them as opaque strings. The `snapshotter` field every request carries (the proxy
 * plugin's name) is not passed on.
 */

/** Kind of a snapshot, as the enum's names on the wire. */
export type SnapshotKind = "UNKNOWN" | "VIEW" | "ACTIVE" | "COMMITTED";

/** The kinds, in wire order (UNKNOWN = 0 … COMMITTED = 3). */
export const SNAPSHOT_KINDS: readonly SnapshotKind[] = ["UNKNOWN", "VIEW", "ACTIVE", "COMMITTED"];

/** A snapshot's metadata (containerd's `Info`). */
export interface Info {
  /** Key of an active/view snapshot or name of a committed one. */
  name: string;
  /** Name of the committed parent; "" for none. */
  parent: string;
  kind: SnapshotKind;
  /** When the snapshot was created; millisecond precision on the way out (protobuf Timestamp on the wire). */
  createdAt: Date;
  /** When the snapshot was last changed. */
  updatedAt: Date;
  /** Labels; containerd passes only `containerd.io/snapshot.ref` and `containerd.io/snapshot/…` keys. */
  labels: Record<string, string>;
}

/** One mount(2) call containerd performs to use a snapshot (containerd's `types.Mount`). */
export interface Mount {
  /** Filesystem type: "bind", "overlay", … */
  type: string;
  /** Source device or directory. */
  source: string;
  /** Target relative to the mount root; "" for the root itself (what containerd 1.6/1.7 expect). */
  target: string;
  /** mount(8)-style options: "ro", "rbind", "lowerdir=…". */
  options: string[];
}

/** Disk used by a snapshot (containerd's `UsageResponse`; int64 on the wire). */
export interface Usage {
  /** Bytes. */
  size: number;
  inodes: number;
}

/** What every handler call gets besides its request. */
export interface CallContext {
  /**
   * The `containerd-namespace` metadata value, when the call carried one. Never rely on it: GC calls carry none,
   * and containerd 1.6.20 forwards none at all to a proxy snapshotter (seen with `ctr snapshots prepare`: only
   * `user-agent` arrives); the namespace is also the first part of every key and name.
   */
  namespace?: string;
  /**
   * Fires when the call ends before the handler does: the client cancelled it, its deadline passed, the
   * connection dropped, or the server was closed. The reply is discarded then; handlers should stop their work.
   */
  signal: AbortSignal;
}

/** Prepare (an active, writable snapshot) or View (a read-only one) on top of `parent`. */
export interface PrepareRequest {
  key: string;
  /** "" for a snapshot without parent. */
  parent: string;
  labels: Record<string, string>;
}

/** Commit the active snapshot `key` as the committed snapshot `name`. */
export interface CommitRequest {
  name: string;
  key: string;
  labels: Record<string, string>;
}

/** Names one snapshot (Mounts, Remove, Stat, Usage). */
export interface KeyRequest {
  key: string;
}

/**
 * Update a snapshot's labels. `info` has no times: containerd sends zero timestamps, and the snapshotter keeps
 * its own. `paths` is the field mask: `"labels"` (replace all) or `"labels.<key>"` (set one; an absent or empty
 * value deletes it); empty means replace all labels. Any other path is the handler's InvalidArgumentError.
 */
export interface UpdateRequest {
  info: Omit<Info, "createdAt" | "updatedAt">;
  paths: string[];
}

/** List snapshots; a snapshot is listed when any filter matches (containerd filter syntax), or all when none. */
export interface ListRequest {
  filters: string[];
}

/**
 * The snapshot logic behind the gRPC service. Every method may throw the classes of src/util/errors.ts:
 * NotFoundError (unknown key), AlreadyExistsError (key or name taken), InvalidArgumentError,
 * FailedPreconditionError (e.g. Remove of a snapshot with children: containerd's GC tolerates only this),
 * UnavailableError, UnimplementedError; anything else reaches containerd as UNKNOWN with its message.
 */
export interface SnapshotsHandlers {
  /** Creates an active snapshot and returns the mounts that make it writable. */
  prepare(req: PrepareRequest, ctx: CallContext): Promise<Mount[]>;
  /** Creates a read-only view of `parent` and returns its mounts. */
  view(req: PrepareRequest, ctx: CallContext): Promise<Mount[]>;
  /** Mounts of an existing active snapshot or view. */
  mounts(req: KeyRequest, ctx: CallContext): Promise<Mount[]>;
  /** Commits active snapshot `key` as `name`; `key` is gone afterwards. */
  commit(req: CommitRequest, ctx: CallContext): Promise<void>;
  /** Removes a snapshot (FailedPreconditionError when it has children). */
  remove(req: KeyRequest, ctx: CallContext): Promise<void>;
  /** The snapshot's Info (NotFoundError when unknown). */
  stat(req: KeyRequest, ctx: CallContext): Promise<Info>;
  /** Changes labels as `paths` says and returns the updated Info. */
  update(req: UpdateRequest, ctx: CallContext): Promise<Info>;
  /** Every snapshot a filter matches; the server streams them in batches of at most 100. */
  list(req: ListRequest, ctx: CallContext): AsyncIterable<Info> | Promise<Iterable<Info>>;
  /** Disk usage of a snapshot; a lazily mounted one may report zeros. */
  usage(req: KeyRequest, ctx: CallContext): Promise<Usage>;
  /** Frees what no snapshot uses any more; throw UnimplementedError when there is nothing to do that way. */
  cleanup(ctx: CallContext): Promise<void>;
}

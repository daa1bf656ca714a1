/**
 * The gRPC snapshots service's handlers (grpc/snapshots_types.ts) over the Snapshotter (snapshot/snapshotter.ts):
 * field shapes converted, nothing decided here. Errors pass through as the util/errors classes; the gRPC layer
 * maps them to status codes once.
 */
import type { Info, Mount as WireMount, SnapshotKind, SnapshotsHandlers } from "../grpc/snapshots_types.ts";
import { AlreadyExistsError } from "../util/errors.ts";
import type { Snapshotter } from "../snapshot/snapshotter.ts";
import type { Kind, Mount, SnapshotInfo } from "../snapshot/types.ts";
import { snapshotOperationDurationMs, snapshotOperationFailures } from "../util/metrics.ts";

const KIND: Record<Kind, SnapshotKind> = { active: "ACTIVE", view: "VIEW", committed: "COMMITTED" };

function info(i: SnapshotInfo): Info {
  return {
    name: i.name,
    parent: i.parent,
    kind: KIND[i.kind],
    createdAt: i.created,
    updatedAt: i.updated,
    labels: i.labels,
  };
}

function mounts(ms: Mount[]): WireMount[] {
  return ms.map((m) => ({ type: m.type, source: m.source, target: "", options: m.options }));
}

/**
 * `f` with its calls timed into `soci_ts_snapshot_operation_duration_milliseconds{operation}` and its failures
 * counted in `soci_ts_snapshot_operation_failures_total{operation}` (but a Prepare's AlreadyExists: that is the
 * remote-snapshot handshake succeeding).
 */
function timed<A extends unknown[], R>(operation: string, f: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
  const duration = snapshotOperationDurationMs.labels(operation);
  const failures = snapshotOperationFailures.labels(operation);
  return async (...args) => {
    const t0 = performance.now();
    try {
      return await f(...args);
    } catch (err) {
      if (!(operation === "prepare" && err instanceof AlreadyExistsError)) failures.inc();
      throw err;
    } finally {
      duration.observe(performance.now() - t0);
    }
  };
}

/** Handlers that serve `snapshotter` to containerd, each timed (see `timed`). */
export function snapshotsHandlers(snapshotter: Snapshotter): SnapshotsHandlers {
  const h = plainHandlers(snapshotter);
  return Object.fromEntries(
    Object.entries(h).map(([op, f]) => [op, timed(op, f as (...a: unknown[]) => Promise<unknown>)]),
  ) as unknown as SnapshotsHandlers;
}

function plainHandlers(snapshotter: Snapshotter): SnapshotsHandlers {
  return {
    prepare: async (req, ctx) => mounts(await snapshotter.prepare(req, ctx)),
    view: async (req, ctx) => mounts(await snapshotter.view(req, ctx)),
    mounts: async (req, ctx) => mounts(await snapshotter.mounts(req.key, ctx)),
    commit: (req, ctx) => snapshotter.commit(req, ctx),
    remove: (req, ctx) => snapshotter.remove(req.key, ctx),
    stat: async (req, ctx) => info(await snapshotter.stat(req.key, ctx)),
    update: async (req, ctx) =>
      info(await snapshotter.update({ name: req.info.name, labels: req.info.labels }, req.paths, ctx)),
    list: async (req, ctx) => (await snapshotter.list(req.filters, ctx)).map(info),
    usage: (req, ctx) => snapshotter.usage(req.key, ctx),
    cleanup: (ctx) => snapshotter.cleanup(ctx),
  };
}

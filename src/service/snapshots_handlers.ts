/**
 * The gRPC snapshots service's handlers (grpc/snapshots_types.ts) over the Snapshotter (snapshot/snapshotter.ts):
 * field shapes converted, nothing decided here. Errors pass through as the util/errors classes; the gRPC layer
 * maps them to status codes once.
 */
import type { Info, Mount as WireMount, SnapshotKind, SnapshotsHandlers } from "../grpc/snapshots_types.ts";
import type { Snapshotter } from "../snapshot/snapshotter.ts";
import type { Kind, Mount, SnapshotInfo } from "../snapshot/types.ts";

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

/** Handlers that serve `snapshotter` to containerd. */
export function snapshotsHandlers(snapshotter: Snapshotter): SnapshotsHandlers {
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

/**
 * Conversions between the objects proto_services.ts encodes and decodes (snake_case fields, int64 as decimal strings,
 * enums as names, Timestamp as {seconds, nanos}; see snapshots_definition.ts) and the plain types of
 * snapshots_types.ts. Used by both the server and the client, so both sides agree on every field.
 */
import { SNAPSHOT_KINDS, type Info, type Mount, type SnapshotKind, type Usage } from "./snapshots_types.ts";

/** google.protobuf.Timestamp as proto_services.ts decodes it (seconds is an int64: a string on decode). */
export interface WireTimestamp {
  seconds: string | number;
  nanos: number;
}

/** containerd's Info as proto_services.ts decodes it. */
export interface WireInfo {
  name: string;
  parent: string;
  kind: string | number;
  created_at: WireTimestamp | null;
  updated_at: WireTimestamp | null;
  labels: Record<string, string>;
}

/** containerd's Mount on the wire (same field names). */
export type WireMount = Mount;

/** containerd's UsageResponse on the wire. */
export interface WireUsage {
  size: string | number;
  inodes: string | number;
}

/** A Date as a Timestamp; nanos is always in 0..999,999,999, also before 1970. Throws on an invalid Date. */
export function timestampToWire(date: Date): WireTimestamp {
  const ms = date.getTime();
  if (!Number.isFinite(ms)) throw new Error(`Cannot encode timestamp: "${String(date)}" is not a valid date`);
  const seconds = Math.floor(ms / 1000);
  return { seconds: String(seconds), nanos: (ms - seconds * 1000) * 1_000_000 };
}

/** A Timestamp as a Date, truncated to milliseconds; an absent one is the epoch. */
export function timestampFromWire(ts: WireTimestamp | null | undefined): Date {
  if (!ts) return new Date(0);
  return new Date(Number(ts.seconds) * 1000 + Math.floor((ts.nanos ?? 0) / 1_000_000));
}

/** A plain copy of a string map (decoded maps, handlers' label objects). */
export function labelsCopy(labels: Record<string, string> | null | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(labels ?? {})) out[k] = String(v);
  return out;
}

/** Info for the wire. */
export function infoToWire(info: Info): WireInfo {
  return {
    name: info.name,
    parent: info.parent,
    kind: info.kind,
    created_at: timestampToWire(info.createdAt),
    updated_at: timestampToWire(info.updatedAt),
    labels: labelsCopy(info.labels),
  };
}

/** A kind from the wire; a number no name is known for reads as "UNKNOWN". */
export function kindFromWire(kind: string | number | null | undefined): SnapshotKind {
  if (typeof kind === "number") return SNAPSHOT_KINDS[kind] ?? "UNKNOWN";
  return (SNAPSHOT_KINDS as readonly string[]).includes(kind ?? "") ? (kind as SnapshotKind) : "UNKNOWN";
}

/** Info from the wire; an absent message (null) reads as an empty UNKNOWN Info at the epoch. */
export function infoFromWire(info: WireInfo | null | undefined): Info {
  return {
    name: info?.name ?? "",
    parent: info?.parent ?? "",
    kind: kindFromWire(info?.kind),
    createdAt: timestampFromWire(info?.created_at),
    updatedAt: timestampFromWire(info?.updated_at),
    labels: labelsCopy(info?.labels),
  };
}

/** Mounts for the wire (copies: the handler's objects are not handed to the encoder). */
export function mountsToWire(mounts: readonly Mount[]): WireMount[] {
  return mounts.map((m) => ({
    type: m.type,
    source: m.source,
    target: m.target ?? "",
    options: [...(m.options ?? [])],
  }));
}

/** Mounts from the wire. */
export function mountsFromWire(mounts: readonly WireMount[] | null | undefined): Mount[] {
  return (mounts ?? []).map((m) => ({
    type: m.type ?? "",
    source: m.source ?? "",
    target: m.target ?? "",
    options: [...(m.options ?? [])],
  }));
}

/** Usage for the wire. Throws when a count is not a non-negative safe integer (a handler defect). */
export function usageToWire(usage: Usage): WireUsage {
  for (const [field, v] of [
    ["size", usage.size],
    ["inodes", usage.inodes],
  ] as const) {
    if (!Number.isSafeInteger(v) || v < 0)
      throw new Error(`Cannot encode usage: ${field} ${String(v)} is not a non-negative integer`);
  }
  return { size: String(usage.size), inodes: String(usage.inodes) };
}

/** Usage from the wire (int64 decimal strings; exact up to 2^53). */
export function usageFromWire(usage: WireUsage): Usage {
  return { size: Number(usage.size), inodes: Number(usage.inodes) };
}

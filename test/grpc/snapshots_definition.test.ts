/**
 * The snapshots service definition built from the embedded .proto texts: method paths, which one streams, and
 * the field numbers on the wire (checked against bytes encoded by hand from containerd's documented numbers).
 */
import { expect, test } from "bun:test";
import { snapshotsServiceDefinition } from "../../src/grpc/snapshots_definition.ts";

const def = snapshotsServiceDefinition();

test("ten methods under containerd.services.snapshots.v1.Snapshots; only List streams, and only its replies", () => {
  expect(Object.keys(def)).toEqual([
    "Prepare",
    "View",
    "Mounts",
    "Commit",
    "Remove",
    "Stat",
    "Update",
    "List",
    "Usage",
    "Cleanup",
  ]);
  for (const [name, m] of Object.entries(def)) {
    expect(m.path).toBe(`/containerd.services.snapshots.v1.Snapshots/${name}`);
    expect(m.requestStream).toBe(false);
    expect(m.responseStream).toBe(name === "List");
  }
  expect(snapshotsServiceDefinition()).toBe(def);
});

/** Tag byte of a field: number << 3 | wire type (0 varint, 2 length-delimited). */
const tag = (field: number, wire: 0 | 2) => (field << 3) | wire;

test("field numbers: PrepareSnapshotRequest, Mount, Info with Timestamp and Kind, UsageResponse, UpdateSnapshotRequest", () => {
  // PrepareSnapshotRequest{snapshotter=1 "s", key=2 "k", parent=3 "p", labels=4 {a: b}} (a map entry: key=1, value=2).
  const prep = def.Prepare!.requestSerialize({ snapshotter: "s", key: "k", parent: "p", labels: { a: "b" } });
  expect([...prep]).toEqual([
    tag(1, 2),
    1,
    0x73,
    tag(2, 2),
    1,
    0x6b,
    tag(3, 2),
    1,
    0x70,
    tag(4, 2),
    6,
    tag(1, 2),
    1,
    0x61,
    tag(2, 2),
    1,
    0x62,
  ]);

  // PrepareSnapshotResponse{mounts=1 [Mount{type=1 "t", source=2 "s", target=3 "g", options=4 ["o"]}]}.
  const mounts = def.Prepare!.responseSerialize({ mounts: [{ type: "t", source: "s", target: "g", options: ["o"] }] });
  expect([...mounts]).toEqual([
    tag(1, 2),
    12,
    tag(1, 2),
    1,
    0x74,
    tag(2, 2),
    1,
    0x73,
    tag(3, 2),
    1,
    0x67,
    tag(4, 2),
    1,
    0x6f,
  ]);

  // StatSnapshotResponse{info=1 Info{name=1 "n", parent=2 "p", kind=3 COMMITTED(3), created_at=4 {seconds=1 5, nanos=2 7}, updated_at=5 {}, labels=6}}.
  const stat = def.Stat!.responseSerialize({
    info: {
      name: "n",
      parent: "p",
      kind: "COMMITTED",
      created_at: { seconds: "5", nanos: 7 },
      updated_at: {},
      labels: {},
    },
  });
  expect([...stat]).toEqual([
    tag(1, 2),
    16,
    tag(1, 2),
    1,
    0x6e,
    tag(2, 2),
    1,
    0x70,
    tag(3, 0),
    3,
    tag(4, 2),
    4,
    tag(1, 0),
    5,
    tag(2, 0),
    7,
    tag(5, 2),
    0,
  ]);
  expect(def.Stat!.responseDeserialize(Buffer.from(stat))).toEqual({
    info: {
      name: "n",
      parent: "p",
      kind: "COMMITTED",
      created_at: { seconds: "5", nanos: 7 },
      updated_at: { seconds: "0", nanos: 0 },
      labels: {},
    },
  });

  // UsageResponse{size=1, inodes=2} as int64 varints: 2^35 = 0x80 0x80 0x80 0x80 0x80 0x01.
  const usage = def.Usage!.responseSerialize({ size: "34359738368", inodes: "1" });
  expect([...usage]).toEqual([tag(1, 0), 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, tag(2, 0), 1]);
  expect(def.Usage!.responseDeserialize(Buffer.from(usage))).toEqual({ size: "34359738368", inodes: "1" });

  // UpdateSnapshotRequest{info=2 {name "n"}, update_mask=3 FieldMask{paths=1 ["labels"]}}.
  const upd = def.Update!.requestSerialize({ info: { name: "n" }, update_mask: { paths: ["labels"] } });
  expect([...upd]).toEqual([tag(2, 2), 3, tag(1, 2), 1, 0x6e, tag(3, 2), 8, tag(1, 2), 6, ...Buffer.from("labels")]);

  // CommitSnapshotRequest{name=2, key=3}; ListSnapshotsRequest{filters=2}; Empty is zero bytes.
  expect([...def.Commit!.requestSerialize({ name: "n", key: "k" })]).toEqual([tag(2, 2), 1, 0x6e, tag(3, 2), 1, 0x6b]);
  expect([...def.List!.requestSerialize({ filters: ["f"] })]).toEqual([tag(2, 2), 1, 0x66]);
  expect([...def.Commit!.responseSerialize({})]).toEqual([]);
});

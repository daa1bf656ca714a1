/**
 * The service definitions soci-ts builds itself (proto_services.ts, from the descriptor proto_json.ts inlines) are
 * those @grpc/proto-loader built from the same .proto files with the options soci-ts used (keepCase, int64 as
 * strings, enums as names, defaults): same methods, paths, streaming and names, the same bytes for the same object
 * and the same object for the same bytes, absent fields included. proto-loader made every method's reflection
 * data too, ~100 ms of CPU at a `soci-ts pull`'s start (bench/cli.ts); it stays installed (grpc-js depends on it).
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fromJSON } from "@grpc/proto-loader";
import type { MethodDefinition, ServiceDefinition } from "@grpc/grpc-js";
import { parse, Root } from "protobufjs";
import { CONTAINERD_SERVICES, containerdServiceDefinition } from "../../src/grpc/containerd_definition.ts";
import { SNAPSHOTS_SERVICE_NAME, snapshotsServiceDefinition } from "../../src/grpc/snapshots_definition.ts";

const PROTO = join(import.meta.dir, "../../src/grpc/proto");
const FILES = [
  "google/protobuf/empty.proto",
  "google/protobuf/field_mask.proto",
  "google/protobuf/timestamp.proto",
  "containerd/types/mount.proto",
  "containerd/types/descriptor.proto",
  "containerd/services/content/v1/content.proto",
  "containerd/services/leases/v1/leases.proto",
  "containerd/services/images/v1/images.proto",
  "containerd/services/diff/v1/diff.proto",
  "containerd/services/snapshots/v1/snapshots.proto",
];

/** proto-loader's package definition of the files, as soci-ts built it before. */
function protoLoaderPackage(): Record<string, unknown> {
  const root = new Root();
  for (const f of FILES) parse(readFileSync(join(PROTO, f), "utf8"), root, { keepCase: true });
  return fromJSON(root.toJSON(), { keepCase: true, longs: String, enums: String, defaults: true });
}

const ours: Record<string, ServiceDefinition> = {
  [SNAPSHOTS_SERVICE_NAME]: snapshotsServiceDefinition(),
};
for (const [short, name] of Object.entries(CONTAINERD_SERVICES))
  ours[name] = containerdServiceDefinition(short as keyof typeof CONTAINERD_SERVICES);

/** Populated messages, by method: `[request, response]` (undefined: only the empty message is checked). */
const SAMPLES: Record<string, [object | undefined, object | undefined]> = {
  [`/${SNAPSHOTS_SERVICE_NAME}/Prepare`]: [
    { snapshotter: "soci", key: "k", parent: "p", labels: { a: "b" } },
    { mounts: [{ type: "overlay", source: "overlay", target: "", options: ["ro", "lowerdir=/a"] }] },
  ],
  [`/${SNAPSHOTS_SERVICE_NAME}/Stat`]: [
    { snapshotter: "soci", key: "k" },
    {
      info: {
        name: "n",
        parent: "p",
        kind: "COMMITTED",
        created_at: { seconds: "1700000000", nanos: 5 },
        updated_at: null,
        labels: { x: "y" },
      },
    },
  ],
  [`/${SNAPSHOTS_SERVICE_NAME}/Usage`]: [undefined, { size: "9007199254740993", inodes: "3" }],
  [`/${CONTAINERD_SERVICES.leases}/Create`]: [{ id: "l", labels: { "containerd.io/gc.expire": "t" } }, undefined],
  [`/${CONTAINERD_SERVICES.content}/Update`]: [
    { info: { digest: "sha256:00", size: "12", labels: { a: "b" } }, update_mask: { paths: ["labels.a"] } },
    undefined,
  ],
  [`/${CONTAINERD_SERVICES.content}/Write`]: [
    { action: "COMMIT", ref: "r", total: "10", expected: "sha256:00", offset: "0", data: Buffer.from("abc") },
    { action: "STAT", offset: "3", total: "10", digest: "" },
  ],
  [`/${CONTAINERD_SERVICES.images}/Create`]: [
    { image: { name: "i", labels: {}, target: { media_type: "m", digest: "sha256:00", size: "5", annotations: {} } } },
    undefined,
  ],
  [`/${CONTAINERD_SERVICES.diff}/Apply`]: [
    {
      diff: { media_type: "m", digest: "sha256:00", size: "5", annotations: { k: "v" } },
      mounts: [{ type: "bind", source: "/s", target: "", options: ["rbind"] }],
      payloads: {},
    },
    undefined,
  ],
};

describe("proto_services.ts", () => {
  const theirs = protoLoaderPackage();

  for (const [name, def] of Object.entries(ours)) {
    test(`${name}: the definition proto-loader made, on the wire`, () => {
      const their = theirs[name] as Record<string, MethodDefinition<object, object>>;
      expect(Object.keys(def)).toEqual(Object.keys(their));
      for (const [method, m] of Object.entries(def) as Array<[string, MethodDefinition<object, object>]>) {
        const t = their[method]!;
        expect([m.path, m.requestStream, m.responseStream, m.originalName]).toEqual([
          t.path,
          t.requestStream,
          t.responseStream,
          t.originalName,
        ]);
        // Absent fields: the same defaults from empty bytes, both ways.
        const empty = Buffer.alloc(0);
        expect(m.requestDeserialize(empty)).toEqual(t.requestDeserialize(empty));
        expect(m.responseDeserialize(empty)).toEqual(t.responseDeserialize(empty));
        const [req, res] = SAMPLES[m.path] ?? [undefined, undefined];
        for (const [value, ser, tser, de, tde] of [
          [req, m.requestSerialize, t.requestSerialize, m.requestDeserialize, t.requestDeserialize],
          [res, m.responseSerialize, t.responseSerialize, m.responseDeserialize, t.responseDeserialize],
        ] as const) {
          if (!value) continue;
          const bytes = ser(value);
          expect(bytes.length).toBeGreaterThan(0);
          expect([...bytes]).toEqual([...tser(value)]);
          expect(de(bytes)).toEqual(tde(bytes));
        }
      }
    });
  }

  test("every sample names a method of the services", () => {
    const paths = Object.values(ours).flatMap((d) => Object.values(d).map((m) => m.path));
    for (const p of Object.keys(SAMPLES)) expect(paths).toContain(p);
  });
});

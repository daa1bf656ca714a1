/**
 * The gRPC definition of containerd's snapshots service, from the .proto files under proto/.
 *
 * The files are parsed when this module is transpiled or bundled (proto_json.ts, a macro: the descriptor is
 * inlined, so a compiled executable reads no .proto file), and proto_services.ts makes the service definition
 * grpc-js serves and calls from it, with these decoding options:
 * - `keepCase`: fields keep the proto's snake_case (`created_at`, `update_mask`);
 * - `longs: String`: int64 values (Timestamp seconds, Usage size/inodes) decode as decimal strings;
 * - `enums: String`: Kind decodes as its name ("COMMITTED"); an unknown number stays a number;
 * - `defaults`: absent scalars decode as "" / 0, repeated fields as [], maps as {}, messages as null.
 * snapshots_wire.ts converts between these wire objects and the types of snapshots_types.ts.
 */
import type { ServiceDefinition } from "@grpc/grpc-js";
import { protoDescriptor } from "./proto_json.ts" with { type: "macro" };
import { serviceDefinitions } from "./proto_services.ts";

/** Full name of the service: method paths are `/containerd.services.snapshots.v1.Snapshots/<Method>`. */
export const SNAPSHOTS_SERVICE_NAME = "containerd.services.snapshots.v1.Snapshots";

/** The service's methods, in the order the .proto declares them. */
export type SnapshotsMethod =
  | "Prepare"
  | "View"
  | "Mounts"
  | "Commit"
  | "Remove"
  | "Stat"
  | "Update"
  | "List"
  | "Usage"
  | "Cleanup";

/** The descriptor of the .proto files, dependencies first (inlined at build by the macro). */
const DESCRIPTOR = protoDescriptor([
  "proto/google/protobuf/empty.proto",
  "proto/google/protobuf/field_mask.proto",
  "proto/google/protobuf/timestamp.proto",
  "proto/containerd/types/mount.proto",
  "proto/containerd/services/snapshots/v1/snapshots.proto",
]);

let cached: ServiceDefinition | undefined;

/**
 * The snapshots service definition (method paths, serializers, deserializers), built once and cached.
 * Throws when the embedded descriptor does not define the service (a build defect).
 */
export function snapshotsServiceDefinition(): ServiceDefinition {
  cached ??= serviceDefinitions(DESCRIPTOR, [SNAPSHOTS_SERVICE_NAME])[SNAPSHOTS_SERVICE_NAME]!;
  return cached;
}

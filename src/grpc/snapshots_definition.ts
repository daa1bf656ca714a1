/**
 * The gRPC definition of containerd's snapshots service, built at run time from the .proto texts under proto/.
 *
 * The texts are imported as text so that `bun build --compile` embeds them (a compiled executable cannot read
 * .proto files from disk). protobufjs parses each into one Root, and @grpc/proto-loader's `fromJSON` turns it
 * into the package definition grpc-js serves and calls, with these decoding options:
 * - `keepCase`: fields keep the proto's snake_case (`created_at`, `update_mask`);
 * - `longs: String`: int64 values (Timestamp seconds, Usage size/inodes) decode as decimal strings;
 * - `enums: String`: Kind decodes as its name ("COMMITTED"); an unknown number stays a number;
 * - `defaults`: absent scalars decode as "" / 0, repeated fields as [], maps as {}, messages as null.
 * snapshots_wire.ts converts between these wire objects and the types of snapshots_types.ts.
 */
import { fromJSON } from "@grpc/proto-loader";
import type { ServiceDefinition } from "@grpc/grpc-js";
import { parse, Root } from "protobufjs";
import emptyProto from "./proto/google/protobuf/empty.proto" with { type: "text" };
import fieldMaskProto from "./proto/google/protobuf/field_mask.proto" with { type: "text" };
import timestampProto from "./proto/google/protobuf/timestamp.proto" with { type: "text" };
import mountProto from "./proto/containerd/types/mount.proto" with { type: "text" };
import snapshotsProto from "./proto/containerd/services/snapshots/v1/snapshots.proto" with { type: "text" };

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

/** The .proto texts, dependencies first (protobufjs resolves types once all are parsed, so order is cosmetic). */
const PROTO_TEXTS = [emptyProto, fieldMaskProto, timestampProto, mountProto, snapshotsProto];

let cached: ServiceDefinition | undefined;

/**
 * The snapshots service definition (method paths, serializers, deserializers), built once and cached.
 * Throws when the embedded .proto texts do not parse or do not define the service (a build defect).
 */
export function snapshotsServiceDefinition(): ServiceDefinition {
  if (cached) return cached;
  // 1. Parse every text into one Root; imports are not followed (all files are given).
  const root = new Root();
  for (const text of PROTO_TEXTS) parse(text, root, { keepCase: true });
  // 2. Resolve types and build the package definition (proto-loader's loadSync would read files from disk).
  const pkg = fromJSON(root.toJSON(), { keepCase: true, longs: String, enums: String, defaults: true });
  const service = pkg[SNAPSHOTS_SERVICE_NAME];
  if (!service || !("Prepare" in service))
    throw new Error(
      `Cannot load the snapshots service: "${SNAPSHOTS_SERVICE_NAME}" is not in the embedded .proto files`,
    );
  cached = service as ServiceDefinition;
  return cached;
}

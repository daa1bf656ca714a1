/**
 * The gRPC definitions of the containerd services `soci-ts pull` calls besides snapshots: content, leases,
 * images and diff (containerd 1.6's API, the same wire format through 2.x), from the .proto files under proto/:
 * parsed when this module is transpiled or bundled (proto_json.ts, a macro: the descriptor is inlined, so a
 * compiled executable needs no file), made into definitions at the first call by proto_services.ts (`keepCase`,
 * int64 as decimal strings, enums as names, defaults filled in).
 */
import type { ServiceDefinition } from "@grpc/grpc-js";
import { protoDescriptor } from "./proto_json.ts" with { type: "macro" };
import { serviceDefinitions } from "./proto_services.ts";

/** Full names of the services (method paths are `/<name>/<Method>`). */
export const CONTAINERD_SERVICES = {
  content: "containerd.services.content.v1.Content",
  leases: "containerd.services.leases.v1.Leases",
  images: "containerd.services.images.v1.Images",
  diff: "containerd.services.diff.v1.Diff",
} as const;

/** One of the services above, by short name. */
export type ContainerdService = keyof typeof CONTAINERD_SERVICES;

/** The descriptor of the .proto files, dependencies first (inlined at build by the macro). */
const DESCRIPTOR = protoDescriptor([
  "proto/google/protobuf/empty.proto",
  "proto/google/protobuf/field_mask.proto",
  "proto/google/protobuf/timestamp.proto",
  "proto/containerd/types/mount.proto",
  "proto/containerd/types/descriptor.proto",
  "proto/containerd/services/content/v1/content.proto",
  "proto/containerd/services/leases/v1/leases.proto",
  "proto/containerd/services/images/v1/images.proto",
  "proto/containerd/services/diff/v1/diff.proto",
]);

let cached: Record<string, ServiceDefinition> | undefined;

/**
 * The definition (method paths, serializers, deserializers) of one service, all built once and cached.
 * Throws when the embedded descriptor does not define it (a build defect).
 */
export function containerdServiceDefinition(service: ContainerdService): ServiceDefinition {
  cached ??= serviceDefinitions(DESCRIPTOR, Object.values(CONTAINERD_SERVICES));
  return cached[CONTAINERD_SERVICES[service]]!;
}

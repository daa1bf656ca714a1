/**
 * The gRPC definitions of the containerd services `soci-ts pull` calls besides snapshots: content, leases,
 * images and diff (containerd 1.6's API, the same wire format through 2.x), built at run time from the .proto
 * texts under proto/ with the decoding options of snapshots_definition.ts (`keepCase`, int64 as decimal
 * strings, enums as names, defaults filled in). The texts are imported as text so that `bun build --compile`
 * embeds them.
 */
import { fromJSON } from "@grpc/proto-loader";
import type { ServiceDefinition } from "@grpc/grpc-js";
import { parse, Root } from "protobufjs";
import emptyProto from "./proto/google/protobuf/empty.proto" with { type: "text" };
import fieldMaskProto from "./proto/google/protobuf/field_mask.proto" with { type: "text" };
import timestampProto from "./proto/google/protobuf/timestamp.proto" with { type: "text" };
import mountProto from "./proto/containerd/types/mount.proto" with { type: "text" };
import descriptorProto from "./proto/containerd/types/descriptor.proto" with { type: "text" };
import contentProto from "./proto/containerd/services/content/v1/content.proto" with { type: "text" };
import leasesProto from "./proto/containerd/services/leases/v1/leases.proto" with { type: "text" };
import imagesProto from "./proto/containerd/services/images/v1/images.proto" with { type: "text" };
import diffProto from "./proto/containerd/services/diff/v1/diff.proto" with { type: "text" };

/** Full names of the services (method paths are `/<name>/<Method>`). */
export const CONTAINERD_SERVICES = {
  content: "containerd.services.content.v1.Content",
  leases: "containerd.services.leases.v1.Leases",
  images: "containerd.services.images.v1.Images",
  diff: "containerd.services.diff.v1.Diff",
} as const;

/** One of the services above, by short name. */
export type ContainerdService = keyof typeof CONTAINERD_SERVICES;

const PROTO_TEXTS = [
  emptyProto,
  fieldMaskProto,
  timestampProto,
  mountProto,
  descriptorProto,
  contentProto,
  leasesProto,
  imagesProto,
  diffProto,
];

let cached: Record<string, ServiceDefinition> | undefined;

/**
 * The definition (method paths, serializers, deserializers) of one service, all built once and cached.
 * Throws when the embedded .proto texts do not define it (a build defect).
 */
export function containerdServiceDefinition(service: ContainerdService): ServiceDefinition {
  if (!cached) {
    const root = new Root();
    for (const text of PROTO_TEXTS) parse(text, root, { keepCase: true });
    const pkg = fromJSON(root.toJSON(), { keepCase: true, longs: String, enums: String, defaults: true });
    cached = {};
    for (const name of Object.values(CONTAINERD_SERVICES)) {
      const def = pkg[name];
      if (!def || typeof def !== "object" || "format" in def)
        throw new Error(`Cannot load the containerd services: "${name}" is not in the embedded .proto files`);
      cached[name] = def as ServiceDefinition;
    }
  }
  return cached[CONTAINERD_SERVICES[service]]!;
}

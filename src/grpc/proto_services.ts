/**
 * gRPC service definitions straight from a protobufjs descriptor (proto_json.ts makes it from the .proto files): what @grpc/proto-loader's `fromJSON` made,
 * without its reflection data. proto-loader also turned every method's request and response type, and every file,
 * into descriptor.proto messages (`requestType`, `fileDescriptorProtos`, for server reflection, which soci-ts never
 * serves); at a `soci-ts pull`'s start that was ~100 ms of CPU (protobufjs's descriptor extension loaded, code
 * generated and run for descriptor.proto's messages) before the first call.
 *
 * The wire objects are those proto-loader gave with the options both callers used: field names as in the .proto
 * (`keepCase`), int64 as decimal strings, enums as their names (an unknown number stays a number), absent fields
 * filled in (scalars "" / 0, repeated [], maps {}, messages null). Messages are made with `Type.fromObject` and
 * read with `Type.toObject`, as proto-loader did.
 */
import type { MethodDefinition, ServiceDefinition } from "@grpc/grpc-js";
import { type IConversionOptions, type INamespace, Root, type Service, type Type } from "protobufjs";

/** How decoded messages look (see the header). */
const WIRE_OBJECTS: IConversionOptions = { longs: String, enums: String, defaults: true };

/**
 * The definitions of services `names` (full names, e.g. "containerd.services.leases.v1.Leases") declared in
 * `descriptor` (proto_json.ts's `protoDescriptor` of the .proto files), by full name. Throws when a type does not
 * resolve or a name is not a service of the descriptor (build defects: the descriptor is embedded).
 */
export function serviceDefinitions(
  descriptor: INamespace,
  names: readonly string[],
): Record<string, ServiceDefinition> {
  // 1. One Root of the descriptor, its types resolved across files.
  const root = Root.fromJSON(descriptor);
  root.resolveAll();
  // 2. Per service, per method: its path and the (de)serializers of its two types.
  const out: Record<string, ServiceDefinition> = {};
  for (const name of names) {
    let service: Service;
    try {
      service = root.lookupService(name);
    } catch (err) {
      throw new Error(`Cannot load gRPC service "${name}": it is not in the embedded descriptor`, { cause: err });
    }
    const def: Record<string, MethodDefinition<object, object>> = {};
    for (const m of service.methodsArray) {
      const req = m.resolvedRequestType!;
      const res = m.resolvedResponseType!;
      def[m.name] = {
        path: `/${name}/${m.name}`,
        requestStream: !!m.requestStream,
        responseStream: !!m.responseStream,
        requestSerialize: serializer(req),
        requestDeserialize: deserializer(req),
        responseSerialize: serializer(res),
        responseDeserialize: deserializer(res),
        originalName: m.name.charAt(0).toLowerCase() + m.name.slice(1),
      };
    }
    out[name] = def;
  }
  return out;
}

/** Wire object → bytes. Throws for an array (as proto-loader did) and for values protobufjs cannot convert. */
function serializer(type: Type): (value: object) => Buffer {
  return (value) => {
    if (Array.isArray(value))
      throw new Error(`Cannot serialize a gRPC message: expected an object of ${type.name}, got an array`);
    const bytes = type.encode(type.fromObject(value)).finish();
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

/** Bytes → wire object (see WIRE_OBJECTS). Throws protobufjs's error for bytes that are not a `type`. */
function deserializer(type: Type): (bytes: Buffer) => object {
  return (bytes) => type.toObject(type.decode(bytes), WIRE_OBJECTS);
}

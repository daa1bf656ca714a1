/**
 * The CRI image service (kubelet's `--image-service-endpoint`, package `runtime.v1`) from the embedded .proto
 * text of proto/k8s/cri/runtime/v1/image_service.proto, imported as text so that `bun build --compile` embeds it.
 *
 * soci-ts does not serve the service itself: it passes every call on to containerd's (cri_image_proxy.ts) as
 * bytes, so a field this .proto leaves out, or a newer kubelet adds, reaches containerd unchanged. What is read is
 * PullImageRequest's image and credentials (`decodePullImageRequest`).
 */
import type { MethodDefinition, ServiceDefinition } from "@grpc/grpc-js";
import { parse, Root, type Type } from "protobufjs";
import imageServiceProto from "./proto/k8s/cri/runtime/v1/image_service.proto" with { type: "text" };

/** Full name of the service: method paths are `/runtime.v1.ImageService/<Method>`. */
export const CRI_IMAGE_SERVICE_NAME = "runtime.v1.ImageService";

/** The .proto text (for clients that parse it with more messages of the same package, such as tests). */
export const CRI_IMAGE_PROTO_TEXT: string = imageServiceProto;

/** Registry credentials of a PullImage, as the wire has them ("" when absent). */
export interface WireAuthConfig {
  username: string;
  password: string;
  /** base64 of "username:password" */
  auth: string;
  server_address: string;
  identity_token: string;
  registry_token: string;
}

/** What soci-ts reads of a PullImageRequest. */
export interface PullImageFields {
  /** `image.image`: the reference kubelet asks for ("" when absent). */
  image: string;
  /** `auth`, or null when the pull carries no credentials. */
  auth: WireAuthConfig | null;
}

let root: Root | undefined;

/** The parsed .proto, built once. Throws when the embedded text does not parse (a build defect). */
function protoRoot(): Root {
  if (root) return root;
  const r = new Root();
  parse(imageServiceProto, r, { keepCase: true });
  r.resolveAll();
  root = r;
  return r;
}

/** The service's method names, in the order the .proto declares them. */
export function criImageMethods(): string[] {
  return Object.keys(protoRoot().lookupService(CRI_IMAGE_SERVICE_NAME).methods);
}

/** A Buffer as is: a pass-through method carries messages as bytes both ways. */
const asIs = (b: Buffer): Buffer => b;

/**
 * The service's definition for grpc-js with every message as raw bytes (no decoding, no re-encoding): what a
 * proxy serves and calls.
 */
export function criImagePassThroughDefinition(): ServiceDefinition<Record<string, MethodDefinition<Buffer, Buffer>>> {
  const out: Record<string, MethodDefinition<Buffer, Buffer>> = {};
  for (const name of criImageMethods()) {
    out[name] = {
      path: `/${CRI_IMAGE_SERVICE_NAME}/${name}`,
      requestStream: false,
      responseStream: false,
      requestSerialize: asIs,
      requestDeserialize: asIs,
      responseSerialize: asIs,
      responseDeserialize: asIs,
    };
  }
  return out;
}

/**
 * The image and credentials of a PullImageRequest's bytes.
 * Throws protobufjs's error for bytes that are not a PullImageRequest.
 */
export function decodePullImageRequest(bytes: Uint8Array): PullImageFields {
  const type: Type = protoRoot().lookupType("runtime.v1.PullImageRequest");
  const msg = type.toObject(type.decode(bytes), { defaults: true }) as {
    image: { image: string } | null;
    auth: WireAuthConfig | null;
  };
  return { image: msg.image?.image ?? "", auth: msg.auth ?? null };
}

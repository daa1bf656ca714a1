/**
 * A CRI client for end-to-end tests (Debian has no crictl): the runtime.v1 RuntimeService (the part in
 * cri_runtime.proto) and ImageService (src/grpc/proto/k8s/cri/runtime/v1/image_service.proto) over grpc-js, with
 * proto-loader's decoding (snake_case fields, int64 as strings, enums as names, defaults filled in).
 *
 * Also `pauseImageArchive`: the pause image a pod sandbox runs, made here instead of pulled (the tests have no
 * network): busybox-static's `sleep`, as an OCI archive for `ctr images import`.
 */
import * as grpc from "@grpc/grpc-js";
import { fromJSON } from "@grpc/proto-loader";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { parse, Root } from "protobufjs";
import { CRI_IMAGE_PROTO_TEXT } from "../../src/grpc/cri_image_definition.ts";
import { MediaType } from "../../src/oci/media_types.ts";
import { sha256Digest } from "../../src/util/digest.ts";
import { busyboxLayer, HOST_PLATFORM } from "./busybox_image.ts";
import { makeTar } from "./registry.ts";

type Service = "RuntimeService" | "ImageService";

/** A CRI connection (`close()` it when done). */
export class CriClient {
  readonly #clients: Record<Service, grpc.Client>;

  /** Connects lazily to the unix socket `socket` (an absolute path). */
  constructor(socket: string) {
    const root = new Root();
    parse(CRI_IMAGE_PROTO_TEXT, root, { keepCase: true });
    parse(readFileSync(join(import.meta.dir, "cri_runtime.proto"), "utf8"), root, { keepCase: true });
    const pkg = fromJSON(root.toJSON(), { keepCase: true, longs: String, enums: String, defaults: true });
    const make = (name: Service) => {
      const Ctor = grpc.makeGenericClientConstructor(pkg[`runtime.v1.${name}`] as grpc.ServiceDefinition, name);
      return new Ctor(`unix://${socket}`, grpc.credentials.createInsecure());
    };
    this.#clients = { RuntimeService: make("RuntimeService"), ImageService: make("ImageService") };
  }

  /** Calls `service.method(request)` with a deadline of `timeoutMs` (default 5 minutes); rejects with the status. */
  call<T = Record<string, unknown>>(
    service: Service,
    method: string,
    request: object,
    timeoutMs = 300_000,
  ): Promise<T> {
    const c = this.#clients[service] as unknown as Record<
      string,
      (req: object, md: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r: T) => void) => void
    >;
    return new Promise((resolve, reject) =>
      c[method]!.call(c, request, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, reply) =>
        err ? reject(new Error(`Cannot call CRI ${method}: ${err.details}`, { cause: err })) : resolve(reply),
      ),
    );
  }

  close(): void {
    for (const c of Object.values(this.#clients)) c.close();
  }
}

/**
 * An OCI archive (tar of an OCI layout) of a one-layer image holding busybox-static whose entrypoint sleeps for a
 * day, named `name` for `ctr images import` (annotation io.containerd.image.name).
 */
export function pauseImageArchive(name: string): Uint8Array {
  const enc = new TextEncoder();
  const tar = makeTar(busyboxLayer());
  const layer = new Uint8Array(gzipSync(tar));
  const config = enc.encode(
    JSON.stringify({
      architecture: HOST_PLATFORM.architecture,
      os: HOST_PLATFORM.os,
      config: { Entrypoint: ["/bin/busybox", "sleep", "86400"] },
      rootfs: { type: "layers", diff_ids: [sha256Digest(tar)] },
    }),
  );
  const desc = (mediaType: string, bytes: Uint8Array) => ({
    mediaType,
    digest: sha256Digest(bytes),
    size: bytes.length,
  });
  const manifest = enc.encode(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OCI_MANIFEST,
      config: desc(MediaType.OCI_CONFIG, config),
      layers: [desc(MediaType.OCI_LAYER_GZIP, layer)],
    }),
  );
  const index = {
    schemaVersion: 2,
    mediaType: MediaType.OCI_INDEX,
    manifests: [
      {
        ...desc(MediaType.OCI_MANIFEST, manifest),
        platform: HOST_PLATFORM,
        annotations: { "io.containerd.image.name": name, "org.opencontainers.image.ref.name": name.split(":").at(-1) },
      },
    ],
  };
  const blob = (bytes: Uint8Array) => [`blobs/sha256/${sha256Digest(bytes).slice("sha256:".length)}`, bytes] as const;
  return makeTar({
    "oci-layout": JSON.stringify({ imageLayoutVersion: "1.0.0" }),
    "index.json": JSON.stringify(index),
    blobs: { dir: true },
    "blobs/sha256": { dir: true },
    ...Object.fromEntries([blob(layer), blob(config), blob(manifest)]),
  });
}

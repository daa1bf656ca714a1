/**
 * criImageProxy on the snapshots server's socket, in front of a stand-in for containerd's CRI image service (a
 * grpc-js server on its own socket that records what reaches it; the e2e suite test/e2e/cri.test.ts uses the real
 * containerd): every call arrives byte for byte (fields the .proto leaves out too) with the caller's metadata, the
 * answer and the backend's status come back as they were, a PullImage's image and credentials reach `onPull` before
 * the backend sees the call, a caller's cancel reaches the backend, and an unreachable backend is named.
 */
import { afterAll, afterEach, expect, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import { join } from "node:path";
import { parse, Root } from "protobufjs";
import {
  CRI_IMAGE_PROTO_TEXT,
  CRI_IMAGE_SERVICE_NAME,
  criImageMethods,
  criImagePassThroughDefinition,
  decodePullImageRequest,
  type PullImageFields,
} from "../../src/grpc/cri_image_definition.ts";
import { criImageProxy } from "../../src/grpc/cri_image_proxy.ts";
import { serveSnapshots } from "../../src/grpc/snapshots_server.ts";
import { deferred, FakeSnapshots, tempDir } from "./_fixtures.ts";

const tmp = tempDir("soci-ts-cri-proxy-");
let seq = 0;
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(() => tmp.dispose());

const root = new Root();
parse(CRI_IMAGE_PROTO_TEXT, root, { keepCase: true });
const encode = (type: string, obj: object) => {
  const t = root.lookupType(`runtime.v1.${type}`);
  return Buffer.from(t.encode(t.fromObject(obj)).finish());
};
/** A length-delimited field the .proto does not declare (PullImageRequest's sandbox_config is field 3). */
const extraField = (field: number, bytes: Uint8Array) => Buffer.from([(field << 3) | 2, bytes.length, ...bytes]);

interface BackendCall {
  method: string;
  bytes: Buffer;
  metadata: Record<string, unknown>;
  cancelled: Promise<void>;
}

/** The stand-in backend: answers each method with `answer(method, bytes)` (a Buffer or a status). */
async function startBackend(
  answer: (method: string, bytes: Buffer) => Promise<Buffer | Partial<grpc.StatusObject>>,
): Promise<{ socket: string; calls: BackendCall[] }> {
  const socket = join(tmp.path, `backend-${++seq}.sock`);
  const server = new grpc.Server();
  const calls: BackendCall[] = [];
  const impl: grpc.UntypedServiceImplementation = {};
  for (const method of criImageMethods()) {
    impl[method] = ((call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      const cancelled = deferred();
      call.once("cancelled", () => cancelled.resolve());
      calls.push({ method, bytes: call.request, metadata: call.metadata.getMap(), cancelled: cancelled.promise });
      answer(method, call.request).then(
        (r) => (Buffer.isBuffer(r) ? cb(null, r) : cb(r)),
        (e: unknown) => cb({ code: grpc.status.INTERNAL, details: e instanceof Error ? e.message : String(e) }),
      );
    }) as grpc.handleUnaryCall<Buffer, Buffer>;
  }
  server.addService(criImagePassThroughDefinition() as grpc.ServiceDefinition, impl);
  await new Promise<void>((res, rej) =>
    server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? rej(e) : res())),
  );
  cleanups.push(() => void server.forceShutdown());
  return { socket, calls };
}

/** soci-ts's socket: the snapshots server with the proxy in front of `backend`, and a raw-bytes client of it. */
async function startProxy(backend: string, onPull?: (p: PullImageFields) => void) {
  const proxy = criImageProxy(backend, { onPull });
  const server = await serveSnapshots(join(tmp.path, `soci-${++seq}.sock`), new FakeSnapshots(), {
    services: [proxy],
  });
  const client = new grpc.Client(server.address, grpc.credentials.createInsecure());
  cleanups.push(async () => {
    client.close();
    proxy.close();
    await server.close(1_000);
  });
  const call = (method: string, bytes: Buffer, md = new grpc.Metadata()) => {
    let c: grpc.ClientUnaryCall | undefined;
    const reply = new Promise<Buffer>((resolve, reject) => {
      c = client.makeUnaryRequest(
        `/${CRI_IMAGE_SERVICE_NAME}/${method}`,
        (b: Buffer) => b,
        (b: Buffer) => b,
        bytes,
        md,
        { deadline: Date.now() + 10_000 },
        (err, r) => (err ? reject(err) : resolve(r!)),
      );
    });
    reply.catch(() => {});
    return { reply, cancel: () => c!.cancel() };
  };
  return { call };
}

/** The status of a failed call (Bun's expect().rejects never settles on gRPC errors). */
async function failure(p: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (err) {
    return err as grpc.ServiceError;
  }
  throw new Error("the call succeeded");
}

test("the service has the five methods of runtime.v1.ImageService", () => {
  expect(criImageMethods()).toEqual(["ListImages", "ImageStatus", "PullImage", "RemoveImage", "ImageFsInfo"]);
});

test("PullImage: onPull sees image and credentials first; the backend gets the bytes as sent, the caller the answer", async () => {
  const seen: Array<PullImageFields & { backendCalls: number }> = [];
  const reply = encode("PullImageResponse", { image_ref: "sha256:abc" });
  const backend = await startBackend(async () => reply);
  const { call } = await startProxy(backend.socket, (p) => seen.push({ ...p, backendCalls: backend.calls.length }));
  const request = Buffer.concat([
    encode("PullImageRequest", {
      image: { image: "registry.example:5000/team/app:v1", annotations: { a: "b" } },
      auth: { username: "alice", password: "secret", server_address: "registry.example:5000" },
    }),
    extraField(3, new TextEncoder().encode("sandbox config")),
    extraField(99, new TextEncoder().encode("a field of a newer kubelet")),
  ]);
  const md = new grpc.Metadata();
  md.set("x-request-id", "r-1");
  const got = await call("PullImage", request, md).reply;
  expect(got).toEqual(reply);
  expect(backend.calls.map((c) => c.method)).toEqual(["PullImage"]);
  expect(backend.calls[0]!.bytes).toEqual(request);
  expect(backend.calls[0]!.metadata["x-request-id"]).toBe("r-1");
  expect(seen).toEqual([
    {
      image: "registry.example:5000/team/app:v1",
      auth: {
        username: "alice",
        password: "secret",
        auth: "",
        server_address: "registry.example:5000",
        identity_token: "",
        registry_token: "",
      },
      backendCalls: 0,
    },
  ]);
  // A pull without credentials.
  expect(decodePullImageRequest(encode("PullImageRequest", { image: { image: "busybox" } }))).toEqual({
    image: "busybox",
    auth: null,
  });
});

test("the other methods pass through; the backend's status comes back as it was", async () => {
  const backend = await startBackend(async (method) =>
    method === "ImageStatus"
      ? { code: grpc.status.NOT_FOUND, details: 'image "x" not found' }
      : encode("ListImagesResponse", { images: [{ id: "sha256:1", repo_tags: ["a:b"], size: 7 }] }),
  );
  const pulls: PullImageFields[] = [];
  const { call } = await startProxy(backend.socket, (p) => pulls.push(p));
  const list = await call("ListImages", encode("ListImagesRequest", {})).reply;
  expect(list).toEqual(encode("ListImagesResponse", { images: [{ id: "sha256:1", repo_tags: ["a:b"], size: 7 }] }));
  const err = await failure(call("ImageStatus", encode("ImageStatusRequest", { image: { image: "x" } })).reply);
  expect(err.code).toBe(grpc.status.NOT_FOUND);
  expect(err.details).toBe('image "x" not found');
  expect(pulls).toEqual([]);
});

test("a caller's cancel cancels the backend's call", async () => {
  const arrived = deferred();
  const backend = await startBackend(() => {
    arrived.resolve();
    return new Promise<Buffer>(() => {});
  });
  const { call } = await startProxy(backend.socket);
  const c = call("PullImage", encode("PullImageRequest", { image: { image: "slow/image" } }));
  // Once the backend has the call, the caller cancels it.
  await arrived.promise;
  c.cancel();
  expect((await failure(c.reply)).code).toBe(grpc.status.CANCELLED);
  await backend.calls[0]!.cancelled;
});

test("an unreachable backend fails the call with UNAVAILABLE naming containerd's socket", async () => {
  const missing = join(tmp.path, "no-containerd.sock");
  const { call } = await startProxy(missing);
  const err = await failure(call("ImageFsInfo", encode("ImageFsInfoRequest", {})).reply);
  expect(err.code).toBe(grpc.status.UNAVAILABLE);
  expect(err.details).toStartWith(`Cannot call ImageFsInfo of containerd's image service at "unix://${missing}": `);
});

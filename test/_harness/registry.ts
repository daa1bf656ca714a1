/**
 * The real CNCF Distribution registry (Debian's `docker-registry`) for tests, plus a helper that builds a
 * small image from files and pushes it with our client.
 *
 * `startRegistry()` writes a config.yml into a temp dir (filesystem storage there, `http.addr`
 * 127.0.0.1:<free port>, delete enabled), spawns `docker-registry serve`, and waits until `/v2/` answers.
 * With `auth: "htpasswd"` it writes a bcrypt htpasswd file (Bun.password); with `auth: "token"` it starts
 * the token issuer of token_server.ts in front of it. With `tls` it serves HTTPS with a fresh self-signed
 * certificate (for 127.0.0.1, and for a made-up `tlsHostName` too); with `accessLog` it keeps Distribution's
 * access log, parsed by `accessLog()` (what was served, in bytes). With `netns` it runs inside that network
 * namespace (`ip netns exec`), listening on `address`:`port` there (the benches put it behind a shaped link).
 * `stop()` kills the registry and removes the temp dir.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import type { Reference, RegistryClient } from "../../src/registry/types.ts";
import { MediaType } from "../../src/oci/media_types.ts";
import type { Descriptor, ImageConfig, ImageIndex, Manifest, Platform } from "../../src/oci/types.ts";
import { sha256Digest } from "../../src/util/digest.ts";
import { freePort, GiveUp, waitFor } from "./ports.ts";
import { startTokenServer, type TokenServer } from "./token_server.ts";

export interface StartRegistryOptions {
  /** Authentication in front of the registry (default none). */
  auth?: "htpasswd" | "token";
  /** Users for htpasswd or the token issuer (default { alice: "wonderland-secret" }). */
  users?: Record<string, string>;
  /** Token issuer: also hand tokens to anonymous clients (default false). */
  allowAnonymous?: boolean;
  /** Serve HTTPS with a fresh self-signed certificate for 127.0.0.1 (`caFile` of the result). */
  tls?: boolean;
  /**
   * With `tls`: a made-up host name the certificate names too (e.g. "registry.soci-ts.test"), for clients
   * that treat loopback addresses as plain HTTP; they resolve it through a private /etc/hosts (namespace.ts).
   */
  tlsHostName?: string;
  /** Keep the registry's access log (Apache combined format, in the log file) for `accessLog()`. */
  accessLog?: boolean;
  /** Token issuer: token lifetime in seconds (default 300). */
  tokenExpiresInSec?: number;
  /** Token issuer: OAuth2 refresh tokens (docker `identitytoken`) → username. */
  refreshTokens?: Record<string, string>;
  /** Run inside this network namespace (`ip netns exec NAME`; it must exist). Default: the host's. */
  netns?: string;
  /** IPv4 address to listen on (default 127.0.0.1); with `tls` the certificate names it too. */
  address?: string;
  /** Port to listen on (default a free loopback port; no retry on another port when it is taken). */
  port?: number;
}

export interface TestRegistry {
  /** "http://127.0.0.1:PORT" (https with `tls`) */
  url: string;
  /** With `tls`: the PEM certificate clients must trust. */
  caFile?: string;
  /** "127.0.0.1:PORT" (ADDRESS:PORT with `address`), the registry part of references. */
  host: string;
  port: number;
  /** The temp dir holding config, storage and the log. */
  dir: string;
  users: Record<string, string>;
  tokenServer?: TokenServer;
  /** With `tlsHostName`: "NAME:PORT", the registry part of references for clients resolving NAME. */
  nameHost?: string;
  /** The registry's log so far (for failure messages). */
  log(): Promise<string>;
  /** With `accessLog`: the requests served so far, oldest first. */
  accessLog(): Promise<AccessLogEntry[]>;
  stop(): Promise<void>;
}

/** One request in the registry's access log. */
export interface AccessLogEntry {
  method: string;
  /** Request path and query, e.g. "/v2/app/blobs/sha256:…". */
  path: string;
  status: number;
  /** Response body bytes written. */
  bytes: number;
  userAgent: string;
}

/**
 * Starts the Distribution registry on a free loopback port with a temp root. Tries again on a new port
 * (up to 3 times) when the registry exits at once, as it does when another process took the port first.
 */
export async function startRegistry(opts: StartRegistryOptions = {}): Promise<TestRegistry> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startRegistryOnce(opts);
    } catch (err) {
      if (attempt >= 3 || opts.port !== undefined || !(err as Error).message.includes("docker-registry exited"))
        throw err;
    }
  }
}

/** Response header each harness registry sends with its own random value (Distribution's `http.headers`). */
const IDENTITY_HEADER = "X-Soci-Test-Registry";

async function startRegistryOnce(opts: StartRegistryOptions): Promise<TestRegistry> {
  const dir = mkdtempSync(join(tmpdir(), "soci-registry-"));
  const address = opts.address ?? "127.0.0.1";
  const port = opts.port ?? (await freePort());
  // The port was free a moment ago; another process (a parallel test run) may have taken it since, in which case
  // ours exits but theirs answers the probe, and the suite later finds it gone (ECONNREFUSED, or a fault proxy's
  // 502). Every answer of ours carries this identity, and the probe accepts no other.
  const identity = crypto.randomUUID();
  const users = opts.users ?? { alice: "wonderland-secret" };
  let tokenServer: TokenServer | undefined;
  let authYaml = "";
  if (opts.auth === "htpasswd") {
    const lines = await Promise.all(
      Object.entries(users).map(
        async ([u, p]) => `${u}:${await Bun.password.hash(p, { algorithm: "bcrypt", cost: 4 })}`,
      ),
    );
    writeFileSync(join(dir, "htpasswd"), `${lines.join("\n")}\n`);
    authYaml = `auth:\n  htpasswd:\n    realm: soci-ts-test\n    path: ${join(dir, "htpasswd")}\n`;
  } else if (opts.auth === "token") {
    tokenServer = await startTokenServer({
      users,
      allowAnonymous: opts.allowAnonymous ?? false,
      expiresInSec: opts.tokenExpiresInSec,
      refreshTokens: opts.refreshTokens,
    });
    authYaml =
      `auth:\n  token:\n    realm: ${tokenServer.realm}\n    service: ${tokenServer.service}\n` +
      `    issuer: ${tokenServer.issuer}\n    rootcertbundle: ${tokenServer.certFile}\n`;
  }
  let tlsYaml = "";
  let caFile: string | undefined;
  if (opts.tls) {
    caFile = join(dir, "tls.crt");
    const key = join(dir, "tls.key");
    const cn = opts.tlsHostName ?? address;
    const ips = [...new Set(["127.0.0.1", address])].map((ip) => `IP:${ip}`).join(",");
    const san = opts.tlsHostName ? `DNS:${opts.tlsHostName},${ips}` : ips;
    const r = Bun.spawnSync(
      [
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key,
        "-out",
        caFile,
        "-days",
        "2",
        "-subj",
        `/CN=${cn}`,
        "-addext",
        `subjectAltName=${san}`,
      ],
      { stdout: "pipe", stderr: "pipe" },
    );
    if (r.exitCode !== 0) throw new Error(`Cannot make a TLS certificate: ${r.stderr.toString()}`);
    tlsYaml = `  tls:\n    certificate: ${caFile}\n    key: ${key}\n`;
  }
  const config =
    `version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: ${opts.accessLog ? "false" : "true"}\n` +
    `storage:\n  filesystem:\n    rootdirectory: ${join(dir, "data")}\n  delete:\n    enabled: true\n` +
    `http:\n  addr: ${address}:${port}\n  secret: soci-ts-test-secret\n` +
    `  headers:\n    ${IDENTITY_HEADER}: [${identity}]\n` +
    tlsYaml +
    authYaml;
  writeFileSync(join(dir, "config.yml"), config);
  const logFile = join(dir, "registry.log");
  // setpriv --pdeathsig: the kernel kills the registry when this process dies, even by SIGTERM or SIGKILL (a
  // timed-out or interrupted test run), where the "exit" hook below never runs.
  const diesWithUs = Bun.which("setpriv") ? ["setpriv", "--pdeathsig", "KILL"] : [];
  const inNetns = opts.netns ? ["ip", "netns", "exec", opts.netns] : [];
  const proc = Bun.spawn([...diesWithUs, ...inNetns, "docker-registry", "serve", join(dir, "config.yml")], {
    stdout: Bun.file(logFile),
    stderr: Bun.file(logFile),
  });
  const url = `${opts.tls ? "https" : "http"}://${address}:${port}`;
  // Never outlive the test process, even when a suite forgets stop() or throws.
  const killOnExit = () => proc.kill("SIGKILL");
  process.on("exit", killOnExit);
  const stop = async () => {
    process.off("exit", killOnExit);
    proc.kill("SIGTERM");
    await proc.exited;
    await tokenServer?.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(
      `docker-registry on ${url}`,
      async () => {
        if (proc.exitCode !== null)
          throw new GiveUp(`Cannot start docker-registry on ${url}: docker-registry exited with ${proc.exitCode}`);
        const res = await fetch(`${url}/v2/`, {
          signal: AbortSignal.timeout(1000),
          tls: { rejectUnauthorized: false },
        } as RequestInit);
        await res.body?.cancel();
        if (res.headers.get(IDENTITY_HEADER) !== identity)
          throw new Error(`Another server answers on ${url} (no ${IDENTITY_HEADER}: ${identity})`);
        return res.status === 200 || res.status === 401;
      },
      30_000,
    ); // generous: the machine is shared and may be busy
  } catch (err) {
    const log = await Bun.file(logFile)
      .text()
      .catch(() => "");
    await stop();
    throw new Error(`${(err as Error).message}\n${log}`, { cause: err });
  }
  return {
    url,
    caFile,
    host: `${address}:${port}`,
    port,
    dir,
    users,
    tokenServer,
    nameHost: opts.tls && opts.tlsHostName ? `${opts.tlsHostName}:${port}` : undefined,
    log: () => Bun.file(logFile).text(),
    accessLog: async () => parseAccessLog(await Bun.file(logFile).text()),
    stop,
  };
}

/** The access log lines of a registry log: `ADDR - - [TIME] "METHOD PATH PROTO" STATUS BYTES "REFERER" "AGENT"`. */
function parseAccessLog(log: string): AccessLogEntry[] {
  const out: AccessLogEntry[] = [];
  for (const m of log.matchAll(/^\S+ \S+ \S+ \[[^\]]*\] "(\S+) (\S+) [^"]*" (\d{3}) (\d+|-) "[^"]*" "([^"]*)"$/gm)) {
    out.push({
      method: m[1]!,
      path: m[2]!,
      status: Number(m[3]),
      bytes: m[4] === "-" ? 0 : Number(m[4]),
      userAgent: m[5]!,
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------- images

/** A file of a test layer: contents, or a directory / symlink entry. */
export type TestFile =
  | string
  | Uint8Array
  | { dir: true; mode?: number }
  | { symlink: string }
  | { data: string | Uint8Array; mode: number };

/** A layer built elsewhere (by tar and gzip, say): the blob as pushed, its uncompressed tar, its media type. */
export interface PrebuiltLayer {
  blob: Uint8Array;
  tar: Uint8Array;
  mediaType: string;
}

export interface PushImageOptions {
  /** Layers, bottom first, each a map path → file (default one layer with "hello.txt"). */
  layers?: Array<Record<string, TestFile>>;
  /** Layers pushed as they are, instead of `layers` (`compression` does not apply). */
  prebuiltLayers?: PrebuiltLayer[];
  /** Layer compression (default gzip). */
  compression?: "gzip" | "none";
  /** The client to push with (default a plain one with no docker config). */
  client?: RegistryClient;
  platform?: Platform;
  /** Wrap the manifest in an OCI index under the tag (default false). */
  index?: boolean;
  /** Push blobs in chunks of this many bytes. */
  chunkSize?: number;
  /** The image config's `config` (default `{ Cmd: ["/bin/sh"] }`). */
  config?: Record<string, unknown>;
}

export interface PushedImage {
  /** Reference with tag (and the manifest digest). */
  ref: Reference;
  manifest: Manifest;
  manifestDescriptor: Descriptor;
  /** The index descriptor when `index` was set. */
  indexDescriptor?: Descriptor;
  config: ImageConfig;
  /** Layers in order: descriptor, blob bytes as pushed, and the uncompressed tar. */
  layers: Array<{ descriptor: Descriptor; blob: Uint8Array; tar: Uint8Array }>;
}

/**
 * Builds an image from files (ustar layers, gzip by default, an OCI config and manifest) and pushes it to
 * `registry` as `repository:tag` with our own client.
 */
export async function pushImage(
  registry: { host: string },
  repository: string,
  tag: string,
  opts: PushImageOptions = {},
): Promise<PushedImage> {
  const client = opts.client ?? new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 10_000 });
  const ref: Reference = { registry: registry.host, repository, tag };
  const platform = opts.platform ?? { os: "linux", architecture: "amd64" };
  const gz = opts.compression !== "none";
  const built: PrebuiltLayer[] =
    opts.prebuiltLayers ??
    (opts.layers ?? [{ "hello.txt": "hello from soci-ts\n" }]).map((files) => {
      const tar = makeTar(files);
      return {
        blob: gz ? new Uint8Array(gzipSync(tar)) : tar,
        tar,
        mediaType: gz ? MediaType.OCI_LAYER_GZIP : MediaType.OCI_LAYER,
      };
    });
  const layers: PushedImage["layers"] = [];
  for (const { blob, tar, mediaType } of built) {
    const descriptor = await client.pushBlob(ref, blob, { mediaType, chunkSize: opts.chunkSize });
    layers.push({ descriptor: { mediaType, digest: descriptor.digest, size: descriptor.size }, blob, tar });
  }
  const config: ImageConfig = {
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    config: opts.config ?? { Cmd: ["/bin/sh"] },
    rootfs: { type: "layers", diff_ids: layers.map((l) => sha256Digest(l.tar)) },
  };
  const configBytes = new TextEncoder().encode(JSON.stringify(config));
  const configDesc = await client.pushBlob(ref, configBytes, { mediaType: MediaType.OCI_CONFIG });
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MediaType.OCI_MANIFEST,
    config: { mediaType: MediaType.OCI_CONFIG, digest: configDesc.digest, size: configDesc.size },
    layers: layers.map((l) => l.descriptor),
  };
  const manifestBytes = new TextEncoder().encode(JSON.stringify(manifest));
  let manifestDescriptor: Descriptor;
  let indexDescriptor: Descriptor | undefined;
  if (opts.index) {
    manifestDescriptor = await client.putManifest(
      { ...ref, tag: undefined, digest: sha256Digest(manifestBytes) },
      manifestBytes,
      MediaType.OCI_MANIFEST,
    );
    const index: ImageIndex = {
      schemaVersion: 2,
      mediaType: MediaType.OCI_INDEX,
      manifests: [{ ...manifestDescriptor, platform }],
    };
    indexDescriptor = await client.putManifest(
      ref,
      new TextEncoder().encode(JSON.stringify(index)),
      MediaType.OCI_INDEX,
    );
  } else {
    manifestDescriptor = await client.putManifest(ref, manifestBytes, MediaType.OCI_MANIFEST);
  }
  return {
    ref: { ...ref, digest: manifestDescriptor.digest },
    manifest,
    manifestDescriptor,
    indexDescriptor,
    config,
    layers,
  };
}

/** A ustar archive of `files` (sorted by path; mtime 0, uid/gid 0), ending with two zero blocks. */
export function makeTar(files: Record<string, TestFile>): Uint8Array {
  const enc = new TextEncoder();
  const blocks: Uint8Array[] = [];
  for (const path of Object.keys(files).sort()) {
    const f = files[path]!;
    let type = "0";
    let mode = 0o644;
    let data: Uint8Array = new Uint8Array(0);
    let link = "";
    if (typeof f === "string") data = enc.encode(f);
    else if (f instanceof Uint8Array) data = f;
    else if ("dir" in f) [type, mode] = ["5", f.mode ?? 0o755];
    else if ("symlink" in f) [type, mode, link] = ["2", 0o777, f.symlink];
    else [data, mode] = [typeof f.data === "string" ? enc.encode(f.data) : f.data, f.mode];
    const name = type === "5" && !path.endsWith("/") ? `${path}/` : path;
    if (enc.encode(name).length > 100)
      throw new Error(`Cannot put "${name}" in a test tar: path longer than 100 bytes`);
    const h = new Uint8Array(512);
    const put = (off: number, len: number, s: string) => h.set(enc.encode(s).subarray(0, len), off);
    const oct = (off: number, len: number, n: number) => put(off, len, `${n.toString(8).padStart(len - 1, "0")}\0`);
    put(0, 100, name);
    oct(100, 8, mode);
    oct(108, 8, 0);
    oct(116, 8, 0);
    oct(124, 12, data.length);
    oct(136, 12, 0);
    put(148, 8, "        ");
    put(156, 1, type);
    put(157, 100, link);
    put(257, 6, "ustar\0");
    put(263, 2, "00");
    let sum = 0;
    for (const b of h) sum += b;
    put(148, 8, `${sum.toString(8).padStart(6, "0")}\0 `);
    blocks.push(h);
    if (data.length) {
      const padded = new Uint8Array(Math.ceil(data.length / 512) * 512);
      padded.set(data);
      blocks.push(padded);
    }
  }
  blocks.push(new Uint8Array(1024));
  const out = new Uint8Array(blocks.reduce((n, b) => n + b.length, 0));
  let off = 0;
  for (const b of blocks) {
    out.set(b, off);
    off += b.length;
  }
  return out;
}

/**
 * The configuration tree: one typed object, one TOML file.
 *
 * Every key, its TOML spelling, its default and its meaning is declared once, in `SCHEMA` (src/config/defaults.ts).
 * Where AWS's SOCI snapshotter has the same concept the TOML key is SOCI's (soci-formats-and-behaviour.md §5),
 * including its odd spellings (`[http] DialTimeoutMsec`), so an operator's knowledge carries over.
 * TypeScript uses camelCase; the mapping lives in the schema only.
 */

export interface MirrorConfig {
  /** Host (and port) of the mirror, e.g. "mirror.internal:5000". */
  host: string;
  /** Talk plain HTTP to the mirror. */
  insecure: boolean;
  /** Seconds without bytes from this mirror before a request to it fails; 0: the client's default, 30. */
  requestTimeoutSec: number;
}

export interface HostConfig {
  /** Pull-through caches or peer-to-peer layers tried in order before the origin. */
  mirrors: MirrorConfig[];
  /** Talk plain HTTP to this host (always on for localhost and 127.0.0.1). */
  plainHttp: boolean;
  /** PEM file of extra CA certificates for this host. */
  caFile: string;
  /** Static credentials for this host (docker config.json is consulted when empty). */
  username: string;
  password: string;
}

export interface Config {
  /** Log level: "error", "warn", "info", "debug" or "trace". */
  logLevel: string;
  /** Debug mode: one-line FUSE and HTTP wire logs. */
  debug: boolean;
  /** Skip span digest verification (not recommended). */
  disableVerification: boolean;
  /** Layers of an image mounted (resolved, indexed, prefetched) at the same time. */
  maxConcurrency: number;
  /** How long a mount may take before it fails, in seconds. */
  mountTimeoutSec: number;
  /** Docker config.json with registry credentials; "" means $DOCKER_CONFIG/config.json or ~/.docker/config.json. */
  dockerConfig: string;
  /** Unix socket of `soci-ts serve` (containerd's snapshots API). */
  address: string;
  /** Where `soci-ts serve` serves metrics and its layer list: "host:port" or a socket path; "" is off. */
  metricsAddress: string;
  /** "tcp" or "unix": how `metricsAddress` is read. */
  metricsNetwork: string;
  snapshotter: {
    enable: boolean;
    allowInvalidMountsOnRestart: boolean;
    /** Lazy layer mounts outlive serve (their FUSE connections are kept for the next one; fd_handover.ts). */
    keepMountsOnRestart: boolean;
    /** Seconds the descriptor holder waits for a serve to come back before it lets the connections go. */
    fdHolderTimeoutSec: number;
  };
  store: {
    enable: boolean;
    /** Mount point of podman's additional layer store. */
    mountpoint: string;
  };
  criKeychain: {
    /** Serve the CRI image service on `address` and remember the credentials of each PullImage. */
    enableKeychain: boolean;
    /** containerd's socket, whose CRI image service the calls go on to. */
    imageServicePath: string;
    /** Seconds a pull's credentials are used for the lazy reads of its repository. */
    credentialTtlSec: number;
  };
  http: {
    dialTimeoutMsec: number;
    responseHeaderTimeoutMsec: number;
    requestTimeoutMsec: number;
    maxRetries: number;
    minWaitMsec: number;
    maxWaitMsec: number;
  };
  blob: {
    validIntervalSec: number;
    fetchingTimeoutSec: number;
    maxRetries: number;
    minWaitMsec: number;
    maxWaitMsec: number;
    forceSingleRangeMode: boolean;
    maxSpanVerificationRetries: number;
    fetchOnOpenMaxBytes: number;
    readaheadSpans: number;
    lazyCheckpoints: boolean;
  };
  fuse: {
    attrTimeoutSec: number;
    entryTimeoutSec: number;
    negativeTimeoutSec: number;
    logFuseOperations: boolean;
    allowOther: boolean;
    /** "trusted" (trusted.overlay.opaque) or "user" (user.overlay.opaque, for overlay's userxattr). */
    opaqueXattr: string;
    /** Reader threads per layer mount (transport "workers"). */
    readerThreads: number;
    /** "workers" (threads on cloned /dev/fuse fds); "async" is refused (see defaults.ts). */
    transport: string;
    /** FUSE passthrough for large files whose bytes are all on disk (Linux 6.9+, root). */
    passthrough: boolean;
  };
  backgroundFetch: {
    disable: boolean;
    silencePeriodMsec: number;
    fetchPeriodMsec: number;
    maxQueueSize: number;
    dropPolicy: string;
  };
  prefetch: {
    enable: boolean;
    maxConcurrency: number;
    timeoutMsec: number;
  };
  spanCache: {
    memoryMaxBytes: number;
    diskMaxBytes: number;
    /** Directory of the disk cache; "" means <root>/spancache. */
    dir: string;
  };
  pullModes: {
    localStore: { enable: boolean };
    sociV1: { enable: boolean };
    sociV2: { enable: boolean };
  };
  index: {
    spanSize: number;
    minLayerSize: number;
    buildToolIdentifier: string;
    checkpointTable: boolean;
  };
  resolver: {
    host: Record<string, HostConfig>;
  };
}

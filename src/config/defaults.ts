/**
 * Every configuration key with its TOML name, TypeScript name, kind, default, and meaning: the single place where
 * keys and defaults live. The `Config` type is computed from this table (src/config/schema.ts), the loader checks
 * values against it (load.ts), and `soci-ts config default` prints it as TOML, one comment per key.
 */

/**
 * One key: its TOML and TypeScript names, its kind, default and meaning. A union on `kind`, so each kind carries
 * exactly what it needs (an int its bounds, an enum its values) and its default has the value's type. `K` is the
 * TypeScript name and `V` an enum's values, kept as literal types by the constructors below: src/config/schema.ts
 * computes the `Config` type from them.
 */
export type FieldSpec<K extends string = string, V extends string = string> =
  | BoolField<K>
  | IntField<K>
  | StringField<K>
  | EnumField<K, V>
  | TableListField<K>;

/** A key that holds one value (not a list of tables): what the entries of a TableListField are made of. */
export type ScalarFieldSpec<K extends string = string, V extends string = string> = Exclude<
  FieldSpec<K, V>,
  TableListField<K>
>;

/** The kinds of key: "bool", "int", "string", "enum" (a string from a fixed list) or "tables" (a list of tables). */
export type FieldKind = FieldSpec["kind"];

/** What every kind of key has. */
interface FieldBase<K extends string> {
  /** Key as written in TOML. */
  toml: string;
  /** Property name in the TypeScript tree (camelCase). */
  ts: K;
  /** One-line meaning, with the unit. */
  doc: string;
}

/** A true/false key. */
export interface BoolField<K extends string = string> extends FieldBase<K> {
  kind: "bool";
  default: boolean;
}

/** An integer key; every one has bounds. */
export interface IntField<K extends string = string> extends FieldBase<K> {
  kind: "int";
  default: number;
  /** Smallest allowed value (inclusive). */
  min: number;
  /** Largest allowed value (inclusive). */
  max: number;
}

/** A string key: any string, or with `pattern` only the strings it matches. */
export interface StringField<K extends string = string> extends FieldBase<K> {
  kind: "string";
  default: string;
  /** What a value must match (the default included), and how the loader's error says so. */
  pattern?: { re: RegExp; expected: string };
}

/** A string key that takes one of `values`; its TypeScript type is their union. */
export interface EnumField<K extends string = string, V extends string = string> extends FieldBase<K> {
  kind: "enum";
  default: V;
  /** Allowed values. */
  values: readonly V[];
  /** Values the key once had or might be expected to have, refused with the reason given here. */
  refused?: Readonly<Record<string, string>>;
}

/**
 * A list of tables, `key = [{ a = 1, b = "x" }, …]`, in the order written (rules, where the first that applies
 * wins). Each entry has exactly `fields`, every one of them required (their `default` is unused); an entry
 * value is checked as its field's kind says. Default: the empty list.
 */
export interface TableListField<K extends string = string> extends FieldBase<K> {
  kind: "tables";
  default: readonly [];
  /** The keys of one entry. */
  fields: readonly ScalarFieldSpec[];
}

/** One TOML table of keys. */
export interface SectionSpec {
  /** Dotted TOML table name; "" for the top level. */
  toml: string;
  /** Dotted path in the TypeScript tree; "" for the top level. */
  ts: string;
  /** What the table is for, printed above it by `config default`. */
  doc: string;
  fields: readonly FieldSpec[];
}

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;

const HOUR_SEC = 3600;
const DAY_SEC = 24 * HOUR_SEC;
const YEAR_SEC = 365 * DAY_SEC;
const HOUR_MSEC = 1000 * HOUR_SEC;
const DAY_MSEC = 1000 * DAY_SEC;
/** Retries of anything: more than this is a loop, not a retry policy. */
const MAX_RETRIES = 100;

/** Bounds of a span (`[index] span_size`, `--span-size`): 4 KiB (a page) to 1 GiB (a span is fetched and held whole). */
export const SPAN_SIZE_MIN_BYTES = 4 * KiB;
/** See SPAN_SIZE_MIN_BYTES. */
export const SPAN_SIZE_MAX_BYTES = GiB;
/** Largest minimum layer size (`[index] min_layer_size`, `--min-layer-size`): 1 TiB, more than any layer. */
export const MIN_LAYER_SIZE_MAX_BYTES = TiB;
/** Largest read-ahead (`[blob] readahead_spans`, `--readahead-spans`), in spans. */
export const READAHEAD_SPANS_MAX = 256;
/**
 * A workload name (`[store] lod`), or empty for none: soci/lod.ts's WORKLOAD_NAME_RE (1-128 of A-Z a-z 0-9 . _ -,
 * starting with a letter or digit; it is also a file name part in the local store), spelled here as config may
 * not import soci (test/config/load.test.ts checks that the two agree).
 */
export const WORKLOAD_NAME_OR_EMPTY_RE = /^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,127})?$/;
/** A workload name, not empty (a `[lod]` rule's `workload`): WORKLOAD_NAME_OR_EMPTY_RE without the empty string. */
export const WORKLOAD_NAME_CONFIG_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/**
 * An image reference pattern (a `[lod]` rule's `image`, soci/lod_rules.ts): up to 512 of the characters of a
 * reference and the wildcards `*` and `?`, with a `/` or a `**` somewhere, since the normalized reference it is
 * matched against always has its registry host before a `/` (a pattern without one could never match).
 */
export const IMAGE_PATTERN_RE = /^(?=.*(?:\/|\*\*))[A-Za-z0-9._\-/:@*?]{1,512}$/;

// The constructors keep `ts` (and an enum's values) as literal types, for the Config type (schema.ts).
// biome-ignore lint/complexity/useMaxParams: module-private table constructor: one row per key reads as a table
function bool<const K extends string>(toml: string, ts: K, dflt: boolean, doc: string): BoolField<K> {
  return { toml, ts, kind: "bool", default: dflt, doc };
}
/** An integer key; every one has bounds (`min`..`max`, inclusive). */
// biome-ignore lint/complexity/useMaxParams: module-private table constructor: one row per key reads as a table
function int<const K extends string>(
  toml: string,
  ts: K,
  dflt: number,
  doc: string,
  min: number,
  max: number,
): IntField<K> {
  return { toml, ts, kind: "int", default: dflt, doc, min, max };
}
// biome-ignore lint/complexity/useMaxParams: module-private table constructor: one row per key reads as a table
function str<const K extends string>(
  toml: string,
  ts: K,
  dflt: string,
  doc: string,
  pattern?: StringField["pattern"],
): StringField<K> {
  return { toml, ts, kind: "string", default: dflt, doc, ...(pattern ? { pattern } : {}) };
}
/** An enum key: its type is the union of `values`, and its default must be one of them (checked by tsc). */
// biome-ignore lint/complexity/useMaxParams: module-private table constructor: one row per key reads as a table
function oneOf<const K extends string, const V extends string>(
  toml: string,
  ts: K,
  dflt: NoInfer<V>,
  values: readonly V[],
  doc: string,
  refused?: Record<string, string>,
): EnumField<K, V> {
  return { toml, ts, kind: "enum", default: dflt, doc, values, ...(refused ? { refused } : {}) };
}

/** A list-of-tables key whose entries have `fields` (see TableListField). */
// biome-ignore lint/complexity/useMaxParams: module-private table constructor: one row per key reads as a table
function tables<const K extends string, const Fs extends readonly ScalarFieldSpec[]>(
  toml: string,
  ts: K,
  fields: Fs,
  doc: string,
): TableListField<K> & { fields: Fs } {
  return { toml, ts, kind: "tables", default: [], doc, fields };
}

/** Values of `log_level` and `--log-level`, least verbose first. */
export const LOG_LEVELS = ["error", "warn", "info", "debug", "trace"] as const;
/** One of LOG_LEVELS. */
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Keys of each `[lod] replay` and `[lod] record` rule (both required). */
export const LOD_RULE_FIELDS = [
  str("image", "image", "", "Pattern of the normalized image reference (see [lod])", {
    re: IMAGE_PATTERN_RE,
    expected:
      'an image reference pattern with its registry host, of A-Z a-z 0-9 . _ - / : @ and the wildcards * ** ? (e.g. "registry.example/app/*")',
  }),
  str("workload", "workload", "", "Workload name", {
    re: WORKLOAD_NAME_CONFIG_RE,
    expected: "a workload name (1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit)",
  }),
] as const satisfies readonly ScalarFieldSpec[];

/**
 * The whole tree but `[resolver.host."<host>"]`, which is a map (see HOST_FIELDS). Declared `as const`: the
 * `Config` type (src/config/schema.ts) is computed from it, so a key added, removed or renamed here is one in the
 * type, and an enum's values are its type.
 */
export const SCHEMA = [
  {
    toml: "",
    ts: "",
    doc: "",
    fields: [
      oneOf("log_level", "logLevel", "info", LOG_LEVELS, "Log level: error, warn, info, debug or trace"),
      bool("debug", "debug", false, "Log every FUSE request and registry request on one line each"),
      bool("disable_verification", "disableVerification", false, "Skip checking span digests (not recommended)"),
      int(
        "max_concurrency",
        "maxConcurrency",
        100,
        "Layers of an image mounted (resolved, indexed, prefetched) at the same time",
        1,
        1000,
      ),
      int("mount_timeout_sec", "mountTimeoutSec", 30, "Seconds a layer mount may take before it fails", 1, DAY_SEC),
      str(
        "docker_config",
        "dockerConfig",
        "",
        "Docker config.json with credentials; empty: $DOCKER_CONFIG or ~/.docker",
      ),
      str(
        "address",
        "address",
        "/run/soci-ts/soci-ts.sock",
        "Unix socket `soci-ts serve` answers containerd's snapshots API on (containerd's proxy_plugins address)",
      ),
      str(
        "metrics_address",
        "metricsAddress",
        "",
        "Where `soci-ts serve` serves Prometheus metrics (/metrics; its layer list is on the status socket only): host:port for tcp (e.g. 127.0.0.1:9110), a socket path for unix; empty: off",
      ),
      oneOf(
        "metrics_network",
        "metricsNetwork",
        "tcp",
        ["tcp", "unix"],
        "How metrics_address is read: tcp (host:port) or unix (a socket path)",
      ),
    ],
  },
  {
    toml: "snapshotter",
    ts: "snapshotter",
    doc: "The containerd snapshotter of `soci-ts serve` (its metadata and snapshot directories are under <root>/snapshots)",
    fields: [
      bool("enable", "enable", true, "Serve containerd's snapshots API"),
      bool(
        "allow_invalid_mounts_on_restart",
        "allowInvalidMountsOnRestart",
        true,
        "At start, a remote snapshot that cannot be mounted again is logged and kept (its containers fail until it is removed) instead of stopping the daemon; SOCI defaults this to false",
      ),
      bool(
        "keep_mounts_on_restart",
        "keepMountsOnRestart",
        true,
        "Lazy layer mounts outlive serve: their FUSE connections are kept by systemd's file descriptor store (under systemd) or a holder process, and the next serve (after SIGTERM, a crash or an upgrade) goes on answering them, so running containers keep reading; false: they end with serve and are mounted again at start",
      ),
      int(
        "fd_holder_timeout_sec",
        "fdHolderTimeoutSec",
        600,
        "Seconds the holder process keeps the connections of a serve that is gone before it detaches them and exits",
        1,
        DAY_SEC,
      ),
    ],
  },
  {
    toml: "store",
    ts: "store",
    doc: 'Podman\'s additional layer store in `soci-ts serve` (storage.conf `additionallayerstores = ["<mountpoint>:ref"]`); use counts in <root>/store_uses.json',
    fields: [
      bool("enable", "enable", false, "Serve the store: one FUSE mount with the lazy layers of SOCI-indexed images"),
      str(
        "mountpoint",
        "mountpoint",
        "/var/lib/soci-ts/store",
        "Where the store is mounted (made if missing; it stays, empty, while the daemon is down)",
      ),
      str(
        "lod",
        "lod",
        "",
        'Workload whose load order document the store replays for every image that has one of that name (recorded with `soci-ts mount --record-lod NAME`, published with `soci-ts lod push`; found in the local store, then in the registry): its spans are fetched in the background from the first lookup, in recorded order, reads first; an image without one is served without it (one log line); "" replays none (podman passes no labels, so this is how the store chooses one). `[lod] replay` rules come first: this is the catch-all',
        {
          re: WORKLOAD_NAME_OR_EMPTY_RE,
          expected: 'a workload name (1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit) or "" for none',
        },
      ),
    ],
  },
  {
    toml: "lod",
    ts: "lod",
    doc: 'Load order documents: the workload whose document is replayed, or recorded, for an image that no flag or label gives one. Rules are tried in order and the first whose image pattern matches wins. A pattern is a glob on the normalized reference, host/repository:tag (@digest added when pulled by digest, tag "latest" when it has neither): * matches any run of characters but /, ** any run, ? one character but /; a pattern that matches the repository alone (host/repository) matches every tag of it. Docker Hub images are spelled in full (docker.io/library/python:*)',
    fields: [
      tables(
        "replay",
        "replay",
        LOD_RULE_FIELDS,
        'Rules choosing the workload whose document is replayed when an image is mounted without one named (`mount --lod`, `pull --lod`, snapshot label containerd.io/snapshot/soci-ts.lod): by `soci-ts mount`, serve\'s snapshotter and podman store (before `[store] lod`); a document the image does not have is ignored with one log line. E.g. [{ image = "registry.example/app/*", workload = "web" }]',
      ),
      tables(
        "record",
        "record",
        LOD_RULE_FIELDS,
        "Rules naming the workload to record when serve's snapshotter mounts an image's layers without the label containerd.io/snapshot/soci-ts.record-lod (`soci-ts pull --record-lod NAME`): what the containers read of the layers it mounts is written to serve's local store (under its --root, where `soci-ts lod list --root` finds it), replacing that image's document of the workload",
      ),
      int(
        "record_quiet_sec",
        "recordQuietSec",
        10,
        "Seconds without a new first read after which a recording stops (serve's, and the default of `mount --record-quiet`); 0: never",
        0,
        DAY_SEC,
      ),
      int(
        "record_max_sec",
        "recordMaxSec",
        600,
        "Seconds after its first read at which a recording in serve stops at the latest (it also stops when serve does); a recording with no read this long after its first mount (an image pulled, not run) ends without a document",
        1,
        DAY_SEC,
      ),
    ],
  },
  {
    toml: "cri_keychain",
    ts: "criKeychain",
    doc: "Kubernetes: serve the CRI image service (runtime.v1) on `address` in front of containerd's, and use the credentials of each PullImage for the lazy reads of that image (SOCI's key names); kubelet's --image-service-endpoint points at `address`",
    fields: [
      bool(
        "enable_keychain",
        "enableKeychain",
        false,
        "Serve the CRI image service, pass every call on to image_service_path, and remember each pull's credentials in memory",
      ),
      str(
        "image_service_path",
        "imageServicePath",
        "/run/containerd/containerd.sock",
        "containerd's socket, whose CRI image service the calls are passed on to",
      ),
      int(
        "credential_ttl_sec",
        "credentialTtlSec",
        12 * HOUR_SEC,
        "Seconds a pull's credentials are used for the lazy reads of its repository (a new pull renews them); reads after that use config and docker credentials only",
        60,
        365 * DAY_SEC,
      ),
    ],
  },
  {
    toml: "http",
    ts: "http",
    doc: "Registry HTTP client (SOCI's key names)",
    fields: [
      int(
        "DialTimeoutMsec",
        "dialTimeoutMsec",
        3000,
        "Not used (kept for SOCI configs): fetch has no connect timeout; connecting counts against ResponseHeaderTimeoutMsec",
        1,
        HOUR_MSEC,
      ),
      int(
        "ResponseHeaderTimeoutMsec",
        "responseHeaderTimeoutMsec",
        3000,
        "Milliseconds to wait for the response headers of a request without a body (uploads wait 30 s); between body bytes the limit is 30 s",
        1,
        HOUR_MSEC,
      ),
      int(
        "RequestTimeoutMsec",
        "requestTimeoutMsec",
        300000,
        "Milliseconds a whole request may take, answer read; streamed whole-layer downloads are bounded by 30 s without bytes instead",
        1,
        DAY_MSEC,
      ),
      int("MaxRetries", "maxRetries", 8, "Retries on 429, 5xx and connection errors", 0, MAX_RETRIES),
      int("MinWaitMsec", "minWaitMsec", 30, "First retry backoff, in milliseconds", 0, HOUR_MSEC),
      int("MaxWaitMsec", "maxWaitMsec", 300000, "Largest retry backoff, in milliseconds", 0, HOUR_MSEC),
    ],
  },
  {
    toml: "blob",
    ts: "blob",
    doc: "Lazy reads of layer blobs",
    fields: [
      int(
        "valid_interval",
        "validIntervalSec",
        60,
        "Seconds a check that reached a lazy layer's blob stays good: the snapshotter checks remote layers before handing out mounts, and asks the registry again only after this; 0 checks every time",
        0,
        DAY_SEC,
      ),
      int(
        "fetching_timeout_sec",
        "fetchingTimeoutSec",
        300,
        "Seconds a read waits for span data, and one span fetch may take, retries included",
        1,
        DAY_SEC,
      ),
      int(
        "max_retries",
        "maxRetries",
        8,
        "Accepted for SOCI configs, not used yet: span fetches retry as [http] MaxRetries says",
        0,
        MAX_RETRIES,
      ),
      int(
        "min_wait_msec",
        "minWaitMsec",
        30,
        "Accepted for SOCI configs, not used yet: span fetches back off as [http] MinWaitMsec says",
        0,
        HOUR_MSEC,
      ),
      int(
        "max_wait_msec",
        "maxWaitMsec",
        300000,
        "Accepted for SOCI configs, not used yet: span fetches back off as [http] MaxWaitMsec says",
        0,
        HOUR_MSEC,
      ),
      bool(
        "force_single_range_mode",
        "forceSingleRangeMode",
        false,
        "Accepted for SOCI configs, not used yet: each span run is one single-range request anyway",
      ),
      int(
        "max_span_verification_retries",
        "maxSpanVerificationRetries",
        0,
        "Refetches of a span whose digest did not match",
        0,
        MAX_RETRIES,
      ),
      int(
        "fetch_on_open_max_bytes",
        "fetchOnOpenMaxBytes",
        32 * MiB,
        "On open, fetch every span of files up to this size in one request",
        0,
        GiB,
      ),
      int(
        "readahead_spans",
        "readaheadSpans",
        0,
        "Spans fetched ahead of a read that missed the cache",
        0,
        READAHEAD_SPANS_MAX,
      ),
      bool(
        "lazy_checkpoints",
        "lazyCheckpoints",
        true,
        "Where the index has soci-ts's checkpoint table, fetch a zTOC without its checkpoint windows and each window when a span needs it (verified); false fetches every zTOC whole first, as SOCI does",
      ),
    ],
  },
  {
    toml: "fuse",
    ts: "fuse",
    doc: "FUSE mounts",
    fields: [
      int("attr_timeout", "attrTimeoutSec", 1, "Seconds the kernel caches attributes", 0, YEAR_SEC),
      int("entry_timeout", "entryTimeoutSec", 1, "Seconds the kernel caches directory entries", 0, YEAR_SEC),
      int("negative_timeout", "negativeTimeoutSec", 1, "Seconds the kernel caches a missing name", 0, YEAR_SEC),
      bool("log_fuse_operations", "logFuseOperations", false, "Log every FUSE operation (like --debug, FUSE only)"),
      bool("allow_other", "allowOther", true, "Let users other than the mounter read the mount (needed by containers)"),
      oneOf(
        "opaque_xattr",
        "opaqueXattr",
        "trusted",
        ["trusted", "user"],
        "Opaque directories as trusted.overlay.opaque or user.overlay.opaque",
      ),
      int(
        "reader_threads",
        "readerThreads",
        2,
        'Threads reading /dev/fuse with transport "workers", shared by every FUSE mount of the process (each layer mount and the podman store); each costs about 3.6 MB resident whatever the number of mounts',
        1,
        16,
      ),
      oneOf(
        "transport",
        "transport",
        "workers",
        ["workers"],
        'How /dev/fuse is served: "workers", reader threads on cloned fds (the only transport serve can use)',
        {
          // Measured: serve with it hung in containerd's Prepare (300 s deadline) and in View
          // (test/e2e/serve_transport.test.ts, before this value was refused).
          async:
            'the "async" transport keeps 4 reads of /dev/fuse per mount blocked in the runtime\'s I/O thread pool ' +
            "(4 threads), so the first lazy layer's mount takes every thread and the daemon's other file I/O waits " +
            'forever; use "workers"',
        },
      ),
      int(
        "idle_drop_sec",
        "idleDropSec",
        300,
        "Seconds after which a lazy layer that served no FUSE request (no file open, no prefetch or background fetch of it running) drops its file tree and TOC from memory; the next request reads its zTOC again (local store, else registry, checked by digest) and rebuilds them, inode numbers unchanged. 0: never",
        0,
        YEAR_SEC,
      ),
      bool(
        "passthrough",
        "passthrough",
        false,
        "Copy opened files of 1 MiB or more whose bytes are all on disk into the span cache and let the kernel read them from there (FUSE passthrough, Linux 6.9+, root). The mount then counts as a stacked file system: overlayfs over it works, an overlayfs over that overlay does not",
      ),
    ],
  },
  {
    toml: "background_fetch",
    ts: "backgroundFetch",
    doc: "Fetching the rest of each layer in the background after it is mounted",
    fields: [
      bool("disable", "disable", false, "Turn background fetching off"),
      int(
        "silence_period_msec",
        "silencePeriodMsec",
        30000,
        "Milliseconds background fetching waits after a new mount or a foreground read",
        0,
        DAY_MSEC,
      ),
      int(
        "fetch_period_msec",
        "fetchPeriodMsec",
        500,
        "Milliseconds between two background span fetches (the rate limit)",
        0,
        DAY_MSEC,
      ),
      int("max_queue_size", "maxQueueSize", 300, "Layers waiting for background fetching", 1, 100_000),
      oneOf(
        "drop_policy",
        "dropPolicy",
        "newest",
        ["newest"],
        "Which layer is dropped when the queue is full: the newest, as SOCI does",
      ),
    ],
  },
  {
    toml: "prefetch",
    ts: "prefetch",
    doc: "SOCI prefetch artifacts",
    fields: [
      bool("enable", "enable", true, "Fetch the spans a prefetch artifact lists before other background work"),
      int("max_concurrency", "maxConcurrency", 4, "Concurrent prefetch requests", 1, 256),
      int("timeout_msec", "timeoutMsec", 30000, "Milliseconds prefetching may delay a mount", 1, DAY_MSEC),
      bool(
        "start_files",
        "startFiles",
        true,
        "serve: fetch /etc/passwd and /etc/group as soon as the layer showing them is mounted, without waiting for them (containerd and podman read them at every container start)",
      ),
      bool(
        "entry_program",
        "entryProgram",
        true,
        "serve: fetch the image's entry program (its config's Entrypoint or Cmd, found in its PATH), its script or ELF interpreter and its shared libraries as soon as their layers are mounted, without waiting for them (what a container running the image's own program loads first); not for images whose load order document or prefetch artifact is used",
      ),
      int(
        "entry_program_max_bytes",
        "entryProgramMaxBytes",
        32 * MiB,
        "serve: uncompressed bytes of entry program files fetched at most per image (a file over what is left is skipped)",
        0,
        TiB,
      ),
    ],
  },
  {
    toml: "span_cache",
    ts: "spanCache",
    doc: "One span cache for the process, shared by every mounted layer",
    fields: [
      int(
        "memory_max_bytes",
        "memoryMaxBytes",
        8 * MiB,
        "Bytes of uncompressed spans kept in memory (a hot set in front of the disk tier, whose files the page cache holds and FUSE reader threads read directly, so more memory here mostly duplicates the page cache). Reads the main thread answers (layers recorded for a load order document, spans not yet on disk) read a span absent from memory whole from disk: with spans larger than this bound, or more spans read at once than it holds, raise it",
        0,
        TiB,
      ),
      int("disk_max_bytes", "diskMaxBytes", 10 * GiB, "Bytes of spans kept on disk", 0, 1024 * TiB),
      str("dir", "dir", "", "Disk cache directory; empty: <root>/spancache"),
    ],
  },
  {
    toml: "pull_modes.local_store",
    ts: "pullModes.localStore",
    doc: "Find an image's SOCI index in the local artifact store (<root>/content) first",
    fields: [bool("enable", "enable", true, "Consult the local store")],
  },
  {
    toml: "pull_modes.soci_v1",
    ts: "pullModes.sociV1",
    doc: "SOCI index v1, found by the Referrers API or the sha256-<hex> fallback tag",
    fields: [bool("enable", "enable", true, "Look for v1 indexes (SOCI itself defaults this to false)")],
  },
  {
    toml: "pull_modes.soci_v2",
    ts: "pullModes.sociV2",
    doc: "SOCI index v2, named by the image manifest's com.amazon.soci.index-digest annotation",
    fields: [bool("enable", "enable", true, "Look for v2 indexes")],
  },
  {
    toml: "index",
    ts: "index",
    doc: "Building SOCI indexes",
    fields: [
      int(
        "span_size",
        "spanSize",
        256 * KiB,
        "Uncompressed bytes between two checkpoints. 256 KiB by measurement (bench:lazy and bench:lod, 2 runs per size, load 3-9 on 2 cores), at 4 MiB / 1 MiB / 512 KiB / 256 KiB: python start fetched 33.8 / 13.7 / 10.8 / 8.3 MB and took 4.7-9.1 / 2.7-3.3 / 3.0 / 2.3-3.6 s; a start reading 4 KiB of 100 files of 2-4 MiB with its LOD fetched 312 / 109 / 55 / 29 MB in 28.3 / 10.3-10.8 / 6.1-6.7 / 3.5-4.5 s (full pull 27-29 s); zTOCs 3.2 / 8.0 / 13.9 / 24.1 MB for the 80 MB python image, of which mounts fetch only the windows they need. Readers that fetch every zTOC whole (AWS SOCI) want 4 MiB, SOCI's default: `--span-size 4MiB`",
        SPAN_SIZE_MIN_BYTES,
        SPAN_SIZE_MAX_BYTES,
      ),
      int(
        "min_layer_size",
        "minLayerSize",
        10 * MiB,
        "Layers smaller than this (compressed bytes) get no zTOC",
        0,
        MIN_LAYER_SIZE_MAX_BYTES,
      ),
      str("build_tool_identifier", "buildToolIdentifier", "soci-ts v0.1.0", "Written into each zTOC and index"),
      bool(
        "checkpoint_table",
        "checkpointTable",
        true,
        "Annotate each gzip zTOC in the index with its checkpoint table (digests of its parts), so mounts fetch checkpoint windows lazily; SOCI ignores the annotation",
      ),
    ],
  },
] as const satisfies readonly SectionSpec[];

/** Keys of `[resolver.host."<host>"]`. Mirrors are an array of tables (see MIRROR_FIELDS). */
export const HOST_FIELDS = [
  bool("plain_http", "plainHttp", false, "Talk plain HTTP (always on for localhost and 127.0.0.1)"),
  str("ca_file", "caFile", "", "PEM file of CA certificates trusted, besides the public roots, for this host only"),
  str("username", "username", "", "User name for this registry"),
  str("password", "password", "", "Password or token for this registry"),
] as const satisfies readonly FieldSpec[];

/** Keys of each `mirrors = [{ … }]` entry. */
export const MIRROR_FIELDS = [
  str("host", "host", "", "Mirror host and port"),
  bool("insecure", "insecure", false, "Plain HTTP to the mirror"),
  int(
    "request_timeout_sec",
    "requestTimeoutSec",
    0,
    "Seconds without bytes from this mirror before a request to it fails; 0: 30",
    0,
    DAY_SEC,
  ),
] as const satisfies readonly FieldSpec[];

/** State root when neither `--root` nor $SOCI_TS_ROOT names one: content store, span cache, mounts, snapshots. */
export const DEFAULT_ROOT = "/var/lib/soci-ts";
/** Config file read when neither `--config` nor $SOCI_TS_CONFIG names one, if it exists. */
export const DEFAULT_CONFIG_PATH = "/etc/soci-ts/config.toml";

export { KiB, MiB, GiB, TiB };

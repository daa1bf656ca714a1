/**
 * What the `index`, `ztoc` and `convert` commands share: the local artifact store under `--root`, platform and
 * size flags, output helpers and a per-layer progress line on a TTY. Opening an image location (and the
 * registry client) is in open_location.ts, so that the commands that only read the local store load neither.
 */
import type { Platform } from "../oci/types.ts";
import { ArtifactStore } from "../soci/artifact_store.ts";
import type { LayerProgress } from "../soci/builder.ts";
import { parsePlatform } from "../oci/platform.ts";
import { InvalidArgumentError } from "../util/errors.ts";
import { MIN_LAYER_SIZE_MAX_BYTES, SPAN_SIZE_MAX_BYTES, SPAN_SIZE_MIN_BYTES } from "../config/defaults.ts";
import { type CliContext, usableRoot } from "./context.ts";
import { writeOut } from "./output.ts";

/**
 * The artifact store under `--root`.
 * @throws InvalidArgumentError when the root exists and is not a directory (see `usableRoot`)
 */
export function artifactStore(ctx: CliContext): ArtifactStore {
  return new ArtifactStore(usableRoot(ctx));
}

/** `--platform` values (repeatable or comma-separated), parsed; empty when not given. */
export function platformsFrom(value: unknown): Platform[] {
  if (value === undefined || value === false || value === "") return [];
  const list = (Array.isArray(value) ? value : [value]).flatMap((v) => String(v).split(","));
  return list
    .map((s) => s.trim())
    .filter(Boolean)
    .map(parsePlatform);
}

/** The host's platform (linux/<arch>). */
export function hostPlatform(): Platform {
  const arch =
    ({ x64: "amd64", arm64: "arm64", arm: "arm", ia32: "386" } as Record<string, string>)[process.arch] ?? process.arch;
  return arch === "arm" ? { os: "linux", architecture: arch, variant: "v7" } : { os: "linux", architecture: arch };
}

/**
 * A size flag: bytes as an integer, or with a unit suffix (K, M, G; KiB, MiB, GiB; powers of 1024), within
 * `min`..`max` bytes (inclusive). Errors quote the value as given.
 * @throws InvalidArgumentError naming the flag
 */
export function parseSize(
  value: unknown,
  flag: string,
  bounds: { min?: number; max?: number } = {},
): number | undefined {
  if (value === undefined || value === "") return undefined;
  const text = String(value);
  const m = /^(\d+)\s*([kmg](?:i?b)?)?$/i.exec(text.trim());
  if (!m)
    throw new InvalidArgumentError(`Option "--${flag}" must be a size in bytes (e.g. 4194304 or 4MiB), got "${text}"`);
  const mult = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[(m[2] ?? "").charAt(0).toLowerCase()]!;
  // Past 2^53 the product is rounded, but then it is far over any `max` anyway.
  const bytes = Number(m[1]) * mult;
  const { min = 0, max = Number.MAX_SAFE_INTEGER } = bounds;
  if (bytes < min || bytes > max) {
    throw new InvalidArgumentError(
      `Option "--${flag}" must be a size from ${formatSize(min)} to ${formatSize(max)}, got "${text}"`,
    );
  }
  return bytes;
}

/** Bytes as the largest binary unit that divides them exactly ("4KiB", "1GiB", "1000"). */
export function formatSize(bytes: number): string {
  for (const [unit, n] of [
    ["TiB", 1024 ** 4],
    ["GiB", 1024 ** 3],
    ["MiB", 1024 ** 2],
    ["KiB", 1024],
  ] as const) {
    if (bytes >= n && bytes % n === 0) return `${bytes / n}${unit}`;
  }
  return String(bytes);
}

/**
 * A count flag: a non-negative decimal integer within `min`..`max` (inclusive). Errors quote the value as given.
 * @throws InvalidArgumentError naming the flag
 */
export function parseCount(value: unknown, flag: string, bounds: { min: number; max: number }): number | undefined {
  if (value === undefined || value === "") return undefined;
  const text = String(value);
  const n = /^\d+$/.test(text.trim()) ? Number(text.trim()) : Number.NaN;
  if (!(n >= bounds.min && n <= bounds.max)) {
    throw new InvalidArgumentError(`Option --${flag} "${text}" is not an integer from ${bounds.min} to ${bounds.max}`);
  }
  return n;
}

/**
 * What `index create` and `convert` build with: the store, span size and minimum layer size (flags over
 * `[index]` config), the build tool identifier, and the platforms asked for.
 * @throws InvalidArgumentError for a malformed size or platform flag
 */
export function buildOptionsFrom(
  args: { spanSize?: unknown; minLayerSize?: unknown; platform?: unknown; allPlatforms?: unknown },
  ctx: CliContext,
) {
  return {
    store: artifactStore(ctx),
    spanSizeBytes:
      parseSize(args.spanSize, "span-size", { min: SPAN_SIZE_MIN_BYTES, max: SPAN_SIZE_MAX_BYTES }) ??
      ctx.config.index.spanSize,
    minLayerSizeBytes:
      parseSize(args.minLayerSize, "min-layer-size", { max: MIN_LAYER_SIZE_MAX_BYTES }) ??
      ctx.config.index.minLayerSize,
    buildToolIdentifier: ctx.config.index.buildToolIdentifier,
    checkpointTable: ctx.config.index.checkpointTable,
    platforms: platformsFrom(args.platform),
    allPlatforms: Boolean(args.allPlatforms),
    hostPlatform: hostPlatform(),
  };
}

/** Write one JSON document to stdout. */
export function printJson(value: unknown): Promise<void> {
  return writeOut(`${JSON.stringify(value, null, 2)}\n`);
}

/** Write aligned columns to stdout. */
export function printTable(header: string[], rows: string[][]): Promise<void> {
  const widths = header.map((h, i) => rows.reduce((w, r) => Math.max(w, (r[i] ?? "").length), h.length));
  const line = (r: string[]) =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return writeOut(`${[line(header), ...rows.map(line)].join("\n")}\n`);
}

/** "12.3 MB" style. */
export function humanBytes(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let v = n;
  let u = -1;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v.toFixed(1)} ${units[u]}`;
}

/**
 * A progress callback that redraws one stderr line per layer on a TTY (bytes read of the layer), and does
 * nothing otherwise. Call the returned `done()` to end the line.
 */
export function progressReporter(): { onProgress: ((p: LayerProgress) => void) | undefined; done: () => void } {
  if (!process.stderr.isTTY) return { onProgress: undefined, done: () => {} };
  let last = 0;
  let current = "";
  return {
    onProgress(p) {
      const now = Date.now();
      if (p.layerDigest !== current) {
        if (current) process.stderr.write("\n");
        current = p.layerDigest;
      } else if (now - last < 100 && p.doneBytes < p.totalBytes) return;
      last = now;
      process.stderr.write(
        `\r\x1b[Klayer ${p.layerIndex + 1} ${p.layerDigest.slice(7, 19)}: ${humanBytes(p.doneBytes)} / ${humanBytes(p.totalBytes)}`,
      );
    },
    done() {
      if (current) process.stderr.write("\n");
    },
  };
}

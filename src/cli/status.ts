/**
 * `soci-ts status`: what the running `soci-ts serve` of this root is doing, for a person: its memory, span cache,
 * background fetching, and every mounted layer with its image, bytes present and fetched, span states and last
 * error. It asks the daemon's status socket (`<root>/status.sock`, see service/status_server.ts), so it needs
 * the same `--root` as the daemon and nothing else; metrics need not be on.
 *
 *   --json       print the daemon's answer (/debug/layers) as it is
 *   --metrics    print the Prometheus metrics (/metrics) as they are
 */
import { defineCommand } from "citty";
import { join } from "node:path";
import type { LayerStatus, ServeStatus } from "../service/status.ts";
import { STATUS_SOCKET_NAME } from "../service/status_server.ts";
import { errorMessage, UnavailableError } from "../util/errors.ts";
import { cliContext, usableRoot } from "./context.ts";
import { writeOut } from "./output.ts";

/** Milliseconds the daemon has to answer. */
const TIMEOUT_MS = 10_000;

export default defineCommand({
  meta: { name: "status", description: "Show what the running soci-ts serve of this root is doing" },
  args: {
    json: { type: "boolean", description: "Print the daemon's JSON answer (/debug/layers)" },
    metrics: { type: "boolean", description: "Print the daemon's Prometheus metrics (/metrics)" },
  },
  async run({ args }) {
    const socket = join(usableRoot(cliContext()), STATUS_SOCKET_NAME);
    const path = args.metrics ? "/metrics" : "/debug/layers";
    const text = await ask(socket, path);
    if (args.metrics || args.json) return writeOut(text.endsWith("\n") ? text : `${text}\n`);
    await writeOut(describeStatus(JSON.parse(text) as ServeStatus));
  },
});

/** GET `path` over the status socket; UnavailableError naming the socket when no daemon answers. */
async function ask(socket: string, path: string): Promise<string> {
  let res: Response;
  try {
    res = await fetch(`http://localhost${path}`, { unix: socket, signal: AbortSignal.timeout(TIMEOUT_MS) });
  } catch (err) {
    throw new UnavailableError(
      `Cannot query soci-ts serve at "${socket}": ${errorMessage(err)} (is it running with this --root?)`,
      { cause: err },
    );
  }
  const body = await res.text();
  if (!res.ok) throw new UnavailableError(`Cannot query soci-ts serve at "${socket}": HTTP ${res.status}: ${body}`);
  return body;
}

/** The status as lines for a person. */
export function describeStatus(s: ServeStatus): string {
  const out: string[] = [];
  const up = Math.max(0, Math.round((Date.now() - Date.parse(s.startedAt)) / 1000));
  out.push(`soci-ts serve ${s.version}, pid ${s.pid}, up ${duration(up)}; root ${s.root}, socket ${s.address}`);
  const m = s.memory;
  out.push(
    `memory      ${mb(m.residentBytes)} resident; JavaScript heap ${mb(m.heapUsedBytes)} in use, of which ${mb(m.externalBytes)} in buffers`,
  );
  const c = s.spanCache;
  const lookups = c.hits + c.misses;
  out.push(
    `span cache  memory ${mb(c.memoryBytes)} of ${mb(c.memoryLimitBytes)} (${c.memoryEntries} spans), disk ${mb(c.diskBytes)} of ${mb(c.diskLimitBytes)} (${c.diskEntries} entries)` +
      (lookups ? `; ${((c.hits / lookups) * 100).toFixed(1)}% of ${lookups} lookups hit` : ""),
  );
  out.push(`background  ${s.background.enabled ? `on, ${s.background.queued} layers queued` : "off"}`);
  out.push(`${s.layers.length} layer${s.layers.length === 1 ? "" : "s"} mounted`);
  for (const l of s.layers) out.push("", ...describeLayer(l));
  return `${out.join("\n")}\n`;
}

function describeLayer(l: LayerStatus): string[] {
  const lines = [`layer ${l.digest} (${l.lazy ? "lazy" : "fetched whole"})`];
  const row = (k: string, v: string) => lines.push(`  ${k.padEnd(11)} ${v}`);
  if (l.image) row("image", l.image);
  row("mountpoint", l.mountpoint);
  row("present", `${mb(l.presentBytes)} of ${mb(l.sizeBytes)} (${l.presentPercent}%)`);
  if (l.lazy) {
    row(
      "fetched",
      `${mb(l.fetchedBytes.onDemand)} on demand in ${l.requests} requests, ${mb(l.fetchedBytes.background)} in the background`,
    );
  }
  if (l.spans) {
    const busy = l.spans.requested + l.spans.fetched;
    row("spans", `${l.spans.uncompressed} of ${l.spans.total} present${busy ? `, ${busy} being fetched` : ""}`);
  }
  row("background", l.background);
  // An older daemon does not say.
  if (l.tree) {
    const t = l.tree;
    const failed = t.reloadFailures ? `, ${t.reloadFailures} failed` : "";
    row("tree", `${t.state} (dropped ${t.drops} times after idling, rebuilt ${t.reloads}${failed})`);
  }
  if (l.directReads) row("reads", `${l.directReads.direct} answered by FUSE reader threads from local files`);
  if (l.lastError) row("last error", l.lastError);
  return lines;
}

function mb(n: number): string {
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} kB`;
  if (n < 1e9) return `${(n / 1e6).toFixed(1)} MB`;
  return `${(n / 1e9).toFixed(2)} GB`;
}

function duration(sec: number): string {
  if (sec < 60) return `${sec}s`;
  if (sec < 3600) return `${Math.floor(sec / 60)}m${sec % 60}s`;
  return `${Math.floor(sec / 3600)}h${Math.floor((sec % 3600) / 60)}m`;
}

/**
 * The daemon's operator endpoints (service/status_server.ts) on a real lazy loader without mounts: `/metrics`,
 * `/debug/layers` and `/debug/memory` on the status socket under the root, only `/metrics` on `metrics_address` (tcp
 * and unix: the debug answers name images and mount points), `soci-ts status` reading the socket, and what a bad address or a path in the way does. Listing mounted layers needs FUSE and
 * containerd: test/e2e/serve_metrics.test.ts.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defaultConfig } from "../../src/config/load.ts";
import type { Config } from "../../src/config/schema.ts";
import { buildLayerStack, type LayerStack } from "../../src/service/layer_stack.ts";
import type { MemoryStatus, ServeStatus } from "../../src/service/status.ts";
import { parseHostPort, startStatusServer, type StatusServer } from "../../src/service/status_server.ts";
import { InvalidArgumentError, UnavailableError } from "../../src/util/errors.ts";
import { silentLogger } from "../../src/util/log.ts";
import { parseExposition } from "../../src/util/prometheus.ts";
import { BUN, MAIN } from "../_harness/cli.ts";

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function setup(metrics: Pick<Config, "metricsAddress" | "metricsNetwork">) {
  const root = await mkdtemp(join(tmpdir(), "soci-status-"));
  cleanup.push(() => rm(root, { recursive: true, force: true }));
  const config = { ...defaultConfig(), ...metrics };
  config.spanCache.memoryMaxBytes = 12345678;
  const stack: LayerStack = await buildLayerStack(config, root, { logger: silentLogger });
  cleanup.push(() => stack.close());
  return { root, config, stack };
}

async function start(stack: LayerStack, root: string, config: ReturnType<typeof defaultConfig>) {
  const s: StatusServer = await startStatusServer(stack, {
    config,
    root,
    address: "/run/x.sock",
    logger: silentLogger,
  });
  cleanup.push(() => s.close());
  return s;
}

describe("status server", () => {
  test("/metrics over tcp: process figures, span cache bounds, in the text format", async () => {
    const { root, config, stack } = await setup({ metricsAddress: "127.0.0.1:0", metricsNetwork: "tcp" });
    const s = await start(stack, root, config);
    expect(s.metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const res = await fetch(`${s.metricsUrl}/metrics`);
    expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    const text = await res.text();
    const m = parseExposition(text);
    expect(text).toContain("# TYPE process_cpu_seconds_total counter\n");
    expect(m.get("process_resident_memory_bytes")!).toBeGreaterThan(1 << 20);
    expect(m.get("process_open_fds")!).toBeGreaterThan(2);
    expect(m.get("process_max_fds")!).toBeGreaterThanOrEqual(m.get("process_open_fds")!);
    expect(m.get("process_cpu_seconds_total")!).toBeGreaterThan(0);
    const startedAt = m.get("process_start_time_seconds")!;
    expect(startedAt).toBeLessThanOrEqual(Date.now() / 1000);
    expect(startedAt).toBeGreaterThan(Date.now() / 1000 - 3600);
    expect(m.get('soci_ts_span_cache_limit_bytes{tier="memory"}')).toBe(12345678);
    expect(m.get('soci_ts_layers{state="mounted"}')).toBe(0);
    expect(m.get('soci_fs_image_operation_count_key{operation_type="background_fetch_work_queue_size",image=""}')).toBe(
      0,
    );
    expect((await fetch(`${s.metricsUrl}/nothing`)).status).toBe(404);
  });

  test("metrics_address serves /metrics only: /debug/* answer 404 there, on tcp and unix, and stay on the socket", async () => {
    const { root, config, stack } = await setup({ metricsAddress: "127.0.0.1:0", metricsNetwork: "tcp" });
    const s = await start(stack, root, config);
    for (const path of ["/debug/layers", "/debug/memory"]) {
      const res = await fetch(`${s.metricsUrl}${path}`);
      expect(res.status).toBe(404);
      expect(await res.text()).toBe("not found: try /metrics\n");
      expect((await fetch(`http://localhost${path}`, { unix: s.statusSocket })).status).toBe(200);
    }
    await s.close();
    config.metricsAddress = join(root, "metrics.sock");
    config.metricsNetwork = "unix";
    const u = await start(stack, root, config);
    expect((await fetch("http://localhost/metrics", { unix: config.metricsAddress })).status).toBe(200);
    for (const path of ["/debug/layers", "/debug/memory"])
      expect((await fetch(`http://localhost${path}`, { unix: config.metricsAddress })).status).toBe(404);
    await u.close();
  });

  test("/debug/layers on the status socket, and soci-ts status reading it", async () => {
    const { root, config, stack } = await setup({ metricsAddress: "", metricsNetwork: "tcp" });
    const s = await start(stack, root, config);
    expect(s.metricsUrl).toBeUndefined();
    expect(s.statusSocket).toBe(join(root, "status.sock"));
    expect((await Bun.file(s.statusSocket).stat()).mode & 0o777).toBe(0o600);
    const status = (await (
      await fetch("http://localhost/debug/layers", { unix: s.statusSocket })
    ).json()) as ServeStatus;
    expect(status).toMatchObject({ pid: process.pid, root, address: "/run/x.sock", layers: [] });
    expect(status.spanCache.memoryLimitBytes).toBe(12345678);
    expect(status.background).toEqual({ enabled: true, queued: 0 });
    const memory = (await (
      await fetch("http://localhost/debug/memory", { unix: s.statusSocket })
    ).json()) as MemoryStatus;
    expect(memory.residentBytes).toBeGreaterThan(1 << 20);
    expect(memory.heap.objects).toBeGreaterThan(0);
    expect(memory.objectTypes.length).toBeGreaterThan(0);
    expect(memory).toMatchObject({ spanCacheMemoryBytes: 0, layersOpen: 0, mounts: 0 });
    // The CLI, as an operator runs it (a child process: the server answers from this one's event loop).
    const cli = async (args: string[]) => {
      const p = Bun.spawn([BUN, MAIN, "--root", root, "status", ...args], { stdout: "pipe", stderr: "pipe" });
      const [stdout, stderr, code] = await Promise.all([
        new Response(p.stdout).text(),
        new Response(p.stderr).text(),
        p.exited,
      ]);
      return { stdout, stderr, code };
    };
    const human = await cli([]);
    expect(human.code).toBe(0);
    expect(human.stdout).toContain(`pid ${process.pid}`);
    expect(human.stdout).toContain("0 layers mounted");
    expect(human.stdout).toContain("span cache  memory 0.0 kB of 12.3 MB");
    const json = await cli(["--json"]);
    expect((JSON.parse(json.stdout) as ServeStatus).root).toBe(root);
    const metrics = await cli(["--metrics"]);
    expect(parseExposition(metrics.stdout).get("process_open_fds")).toBeGreaterThan(0);
    // Closed: the socket is gone, and status says no daemon answers.
    await s.close();
    expect(existsSync(s.statusSocket)).toBe(false);
    const none = await cli([]);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain(`Cannot query soci-ts serve at "${s.statusSocket}"`);
  });

  test("metrics on a unix socket; a socket left by a dead daemon is replaced, another file is not", async () => {
    const { root, config, stack } = await setup({ metricsAddress: "", metricsNetwork: "unix" });
    config.metricsAddress = join(root, "metrics.sock");
    // A socket file nobody listens on, as a killed daemon leaves it.
    const dead = Bun.serve({ unix: join(root, "status.sock"), fetch: () => new Response("") });
    dead.stop(true);
    const s = await start(stack, root, config);
    expect(s.metricsUrl).toBe(`unix:${config.metricsAddress}`);
    const text = await (await fetch("http://localhost/metrics", { unix: config.metricsAddress })).text();
    expect(parseExposition(text).get("process_open_fds")).toBeGreaterThan(0);
    await s.close();
    writeFileSync(join(root, "status.sock"), "not a socket");
    const err = await startStatusServer(stack, { config, root, address: "x", logger: silentLogger }).catch((e) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect(err.message).toContain("it exists and is not a socket");
  });

  test("metrics_address must be host:port for tcp; a port in use fails the start, naming the address", async () => {
    expect(parseHostPort("127.0.0.1:9110")).toEqual({ hostname: "127.0.0.1", port: 9110 });
    expect(parseHostPort(":9110")).toEqual({ hostname: "0.0.0.0", port: 9110 });
    expect(parseHostPort("[::1]:9110")).toEqual({ hostname: "::1", port: 9110 });
    for (const bad of ["9110", "host", "a:b", "h:70000", "/run/m.sock"])
      expect(() => parseHostPort(bad)).toThrow(InvalidArgumentError);
    const busy = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("") });
    cleanup.push(async () => busy.stop(true));
    const { root, config, stack } = await setup({ metricsAddress: `127.0.0.1:${busy.port}`, metricsNetwork: "tcp" });
    const err = await startStatusServer(stack, { config, root, address: "x", logger: silentLogger }).catch((e) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect(err.message).toContain(`Cannot serve metrics at "127.0.0.1:${busy.port}"`);
    // What started before the failure was undone: the status socket is gone.
    expect(existsSync(join(root, "status.sock"))).toBe(false);
  });
});

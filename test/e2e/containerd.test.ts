/**
 * The containerd harness (test/_harness/containerd.ts) with containerd's own overlayfs snapshotter: a private
 * containerd 1.6 pulls a busybox image from the real Distribution registry and `ctr run --rm` runs a command in
 * it; `stop()` with a container still running kills it and its shim, unmounts its root filesystem and leaves
 * nothing behind (no process, no mount, no temp dir, no cgroup, nothing in the host's /run/containerd), even
 * when containerd itself was killed first and left its shim and container orphaned. A test process killed
 * outright leaves no process or mount either (only cgroup directories, which the next start removes).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { busyboxLayer, HOST_PLATFORM } from "../_harness/busybox_image.ts";
import { type Containerd, startContainerd } from "../_harness/containerd.ts";
import { needs } from "../_harness/env.ts";
import { isRunning } from "../_harness/namespace.ts";
import { pushImage, startRegistry, type TestRegistry } from "../_harness/registry.ts";

const run = needs(
  "containerd e2e",
  "root",
  "tool:containerd",
  "tool:containerd-shim-runc-v2",
  "tool:ctr",
  "tool:runc",
  "tool:docker-registry",
  "tool:busybox",
  "tool:unshare",
  "tool:nsenter",
  "tool:setpriv",
);

const GREETING = "hello from the second layer\n";

describe.skipIf(!run)("containerd 1.6 with its overlayfs snapshotter", () => {
  let registry: TestRegistry;
  let containerd: Containerd | undefined;
  let ref: string;
  const hostRunContainerd = existsSync("/run/containerd") ? readdirSync("/run/containerd").sort() : undefined;

  beforeAll(async () => {
    registry = await startRegistry();
    await pushImage(registry, "e2e/busybox", "v1", {
      layers: [busyboxLayer(), { etc: { dir: true }, "etc/greeting": GREETING }],
      platform: HOST_PLATFORM,
    });
    ref = `${registry.host}/e2e/busybox:v1`;
    containerd = await startContainerd();
  }, 60_000);

  afterAll(async () => {
    await containerd?.stop();
    await registry?.stop();
  }, 120_000);

  test("pulls from the registry and ctr run --rm prints the command's output, leaving no mount", async () => {
    const c = containerd!;
    await c.ctr(["image", "pull", "--plain-http", ref]);
    const r = await c.ctr(["run", "--rm", ref, "e2e-cat", "/bin/busybox", "cat", "/etc/greeting"]);
    expect(r.stdout).toBe(GREETING);
    const sh = await c.ctr([
      "run",
      "--rm",
      ref,
      "e2e-sh",
      "/bin/sh",
      "-c",
      "echo $((6 * 7)) from $(busybox basename $0)",
    ]);
    expect(sh.stdout).toBe("42 from sh\n");
    // --rm deleted task, container and its snapshot: nothing mounted, only containerd itself running.
    expect((await c.ctr(["containers", "ls", "-q"])).stdout).toBe("");
    expect(c.ns.newMounts()).toEqual([]);
    expect(c.ns.processes()).toEqual([c.process.pid]);
  }, 60_000);

  test("stop() with a container running kills it and its shim, unmounts its rootfs and removes everything", async () => {
    const c = containerd!;
    containerd = undefined;
    await stopWithSleeper(c, ref, async () => {}, hostRunContainerd);
  }, 60_000);

  test("stop() after containerd itself was killed still kills the shim and container and unmounts the rootfs", async () => {
    const c = await startContainerd();
    await c.ctr(["image", "pull", "--plain-http", ref]);
    await stopWithSleeper(
      c,
      ref,
      async () => {
        c.process.kill("SIGKILL");
        await c.process.exited;
      },
      hostRunContainerd,
    );
  }, 60_000);

  test("a test process killed outright leaves no process and no mount; the next start removes its cgroups", async () => {
    // A child test process starts containerd and a container, prints what runs, and is killed with SIGKILL.
    const code = `
      const { startContainerd } = await import(${JSON.stringify(join(import.meta.dir, "../_harness/containerd.ts"))});
      const c = await startContainerd();
      await c.ctr(["image", "pull", "--plain-http", ${JSON.stringify(ref)}]);
      await c.ctr(["run", "--detach", ${JSON.stringify(ref)}, "orphan", "/bin/busybox", "sleep", "600"]);
      console.log(JSON.stringify({ pids: c.ns.processes(), holder: c.ns.pid, namespace: c.namespace, dirs: [c.dir, c.ns.dir] }));
      await new Promise(() => {});
    `;
    const child = Bun.spawn([process.execPath, "-e", code], { stdout: "pipe", stderr: "pipe" });
    const reader = child.stdout.getReader();
    let out = "";
    while (!out.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`The child test process exited early:\n${await new Response(child.stderr).text()}`);
      out += new TextDecoder().decode(value);
    }
    const seen = JSON.parse(out) as { pids: number[]; holder: number; namespace: string; dirs: string[] };
    expect(seen.pids.length).toBe(3); // containerd, shim, busybox
    child.kill("SIGKILL");
    await child.exited;
    for (const until = Date.now() + 10_000; [seen.holder, ...seen.pids].some(isRunning) && Date.now() < until; )
      await Bun.sleep(20);
    expect([seen.holder, ...seen.pids].filter(isRunning)).toEqual([]);
    // Its mount namespace went with its last process: the host never saw the container's rootfs.
    for (const d of seen.dirs) expect(readFileSync("/proc/self/mountinfo", "utf8")).not.toContain(d);
    const stale = readdirSync("/sys/fs/cgroup")
      .map((h) => `/sys/fs/cgroup/${h}/${seen.namespace}`)
      .filter((d) => existsSync(d));
    expect(stale.length).toBeGreaterThan(0);
    const next = await startContainerd();
    await next.stop();
    expect(stale.filter((d) => existsSync(d))).toEqual([]);
    for (const d of seen.dirs) rmSync(d, { recursive: true, force: true });
  }, 60_000);
});

/**
 * Runs a sleeping container, checks its rootfs mount, processes and cgroups, calls `before` (which may break
 * things), then `stop()`, and checks that nothing is left: processes, mounts, temp dirs, cgroups, and the
 * host's /run/containerd as it was (`hostRunContainerd`: its entries, undefined when absent).
 */
async function stopWithSleeper(
  c: Containerd,
  ref: string,
  before: () => Promise<void>,
  hostRunContainerd: string[] | undefined,
): Promise<void> {
  await c.ctr(["run", "--detach", ref, "e2e-sleeper", "/bin/busybox", "sleep", "600"]);
  expect(c.ns.newMounts().map((m) => m.mountPoint)).toEqual([
    `${c.state}/io.containerd.runtime.v2.task/${c.namespace}/e2e-sleeper/rootfs`,
  ]);
  const pids = c.ns.processes();
  const names = pids.map((p) => readFileSync(`/proc/${p}/comm`, "utf8").trim()).sort();
  expect(names).toEqual(["busybox", "containerd", "containerd-shim"].sort());
  const cgroups = readdirSync("/sys/fs/cgroup")
    .map((h) => `/sys/fs/cgroup/${h}/${c.namespace}`)
    .filter((d) => existsSync(d));
  expect(cgroups.length).toBeGreaterThan(0);
  const holder = c.ns.pid;
  await before();

  await c.stop();
  expect(pids.filter(isRunning)).toEqual([]);
  expect(isRunning(holder)).toBe(false);
  for (const d of [c.dir, c.ns.dir, ...cgroups]) expect([d, existsSync(d)]).toEqual([d, false]);
  expect(readFileSync("/proc/self/mountinfo", "utf8")).not.toContain(c.dir);
  expect(existsSync("/run/containerd") ? readdirSync("/run/containerd").sort() : undefined).toEqual(hostRunContainerd);
}

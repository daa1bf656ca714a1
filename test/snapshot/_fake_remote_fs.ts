/**
 * A RemoteFs for unit tests: it records every call, "mounts" by writing a marker file into the mount point
 * (no FUSE), and fails on demand.
 */
import { rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { RemoteFs } from "../../src/snapshot/remote_fs.ts";

export interface FakeCall {
  op: "mount" | "check" | "unmount";
  mountpoint: string;
  labels?: Record<string, string>;
  /** A mount's `restoring` option (a restart mounting it again). */
  restoring?: boolean;
}

export const MARKER = ".fake-remote-layer";

export class FakeRemoteFs implements RemoteFs {
  readonly calls: FakeCall[] = [];
  /** Mount points currently "mounted", with the labels they were mounted from. */
  readonly mounted = new Map<string, Record<string, string>>();
  /** Return an error to make that call fail. */
  failMount: (mountpoint: string, labels: Record<string, string>) => Error | undefined = () => undefined;
  failCheck: (mountpoint: string) => Error | undefined = () => undefined;
  failUnmount: (mountpoint: string) => Error | undefined = () => undefined;
  /** Awaited inside mount() before it does anything (to hold mounts open in a test). */
  mountGate: (mountpoint: string, signal?: AbortSignal) => Promise<void> = async () => {};
  /** Most mounts in progress at once. */
  maxConcurrentMounts = 0;
  #mounting = 0;

  async mount(
    mountpoint: string,
    labels: Readonly<Record<string, string>>,
    opts: { signal?: AbortSignal; restoring?: boolean } = {},
  ): Promise<void> {
    this.calls.push({
      op: "mount",
      mountpoint,
      labels: { ...labels },
      ...(opts.restoring === undefined ? {} : { restoring: opts.restoring }),
    });
    this.#mounting++;
    this.maxConcurrentMounts = Math.max(this.maxConcurrentMounts, this.#mounting);
    try {
      await this.mountGate(mountpoint, opts.signal);
      opts.signal?.throwIfAborted();
      const err = this.failMount(mountpoint, { ...labels });
      if (err) throw err;
      await writeFile(join(mountpoint, MARKER), labels["containerd.io/snapshot/cri.layer-digest"] ?? "");
      this.mounted.set(mountpoint, { ...labels });
    } finally {
      this.#mounting--;
    }
  }

  async check(mountpoint: string): Promise<void> {
    this.calls.push({ op: "check", mountpoint });
    const err = this.failCheck(mountpoint);
    if (err) throw err;
    if (!this.mounted.has(mountpoint)) throw new Error(`nothing mounted at ${mountpoint}`);
  }

  async unmount(mountpoint: string): Promise<void> {
    this.calls.push({ op: "unmount", mountpoint });
    const err = this.failUnmount(mountpoint);
    if (err) throw err;
    if (this.mounted.delete(mountpoint)) await rm(join(mountpoint, MARKER), { force: true });
  }

  ops(op: FakeCall["op"]): FakeCall[] {
    return this.calls.filter((c) => c.op === op);
  }
}

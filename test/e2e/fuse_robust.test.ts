/**
 * FUSE robustness with the server in its own process (test/fuse/fixtures/serve_tree.ts): 64 parallel
 * readers, a reader killed mid-read, unmount while busy, SIGTERM, the server killed with SIGKILL and the
 * stale mount cleaned by the next start, and the same server built with `bun build --compile`.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { fuseMountsUnder, readMountInfo, unmountFuse } from "../../src/fuse/mount.ts";
import type { MemFile } from "../../src/vfs/memory_tree.ts";
import { WORKER_ENTRIES } from "../../release/entries.ts";
import { REPO } from "../_harness/cli.ts";
import { needs } from "../_harness/env.ts";
import { everythingTree } from "../fuse/fixtures/trees.ts";

const enabled = needs("fuse robustness e2e", "root", "fuse");
const FIXTURE = join(import.meta.dir, "../fuse/fixtures/serve_tree.ts");
const BUN = process.execPath;

interface Server {
  proc: ReturnType<typeof Bun.spawn>;
  /** Resolves with the first stdout line matching `re` (rejects after 20 s). */
  waitFor(re: RegExp): Promise<string>;
  lines: string[];
}

const servers: Server[] = [];

function startServer(cmd: string[], env: Record<string, string> = {}): Server {
  const proc = Bun.spawn(cmd, { stdout: "pipe", stderr: "inherit", env: { ...process.env, ...env } });
  const lines: string[] = [];
  const waiters: Array<[RegExp, (l: string) => void]> = [];
  void (async () => {
    let buf = "";
    for await (const chunk of proc.stdout as ReadableStream<Uint8Array>) {
      buf += new TextDecoder().decode(chunk);
      for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        lines.push(line);
        for (const [re, res] of waiters) if (re.test(line)) res(line);
      }
    }
  })();
  const s: Server = {
    proc,
    lines,
    waitFor(re) {
      const seen = lines.find((l) => re.test(l));
      if (seen) return Promise.resolve(seen);
      return new Promise((res, rej) => {
        const t = setTimeout(
          () => rej(new Error(`Timed out waiting for ${re} from ${cmd.join(" ")}; got ${JSON.stringify(lines)}`)),
          20_000,
        );
        waiters.push([
          re,
          (l) => {
            clearTimeout(t);
            res(l);
          },
        ]);
      });
    },
  };
  servers.push(s);
  return s;
}

async function sh(cmd: string): Promise<string> {
  const p = Bun.spawn(["bash", "-o", "pipefail", "-c", cmd], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`Command failed (${code}): ${cmd}\n${err}`);
  return out;
}

function mounted(mp: string): boolean {
  return readMountInfo().some((m) => m.mountpoint === mp);
}

/** The file offset of `pid`'s descriptor open on `path` (from /proc), or undefined when it has none. */
function readOffset(pid: number, path: string): number | undefined {
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // closed meanwhile
    }
    if (target !== path) continue;
    const pos = /^pos:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, "utf8"));
    return pos ? Number(pos[1]) : undefined;
  }
  return undefined;
}

/** A process's stdout as lines: `next()` waits for the next one, `rest()` for those left until it ends. */
function lines(stream: ReadableStream<Uint8Array>) {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  const ready: string[] = [];
  let buf = "";
  let done = false;
  const fill = async () => {
    const r = await reader.read();
    if (r.done) done = true;
    else buf += decoder.decode(r.value, { stream: true });
    for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
      ready.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  };
  return {
    async next(): Promise<string | undefined> {
      while (ready.length === 0 && !done) await fill();
      return ready.shift();
    },
    async rest(): Promise<string[]> {
      while (!done) await fill();
      return ready.splice(0);
    },
  };
}

async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`Timed out waiting until ${what}`);
    await Bun.sleep(20);
  }
}

describe.if(enabled)("FUSE server robustness", () => {
  let root: string;
  let n = 0;
  const newMp = () => {
    const mp = join(root, `mnt${n++}`);
    mkdirSync(mp);
    return mp;
  };

  beforeAll(() => {
    root = mkdtempSync("/tmp/soci-fuse-robust-");
  });

  afterAll(async () => {
    for (const s of servers) s.proc.kill("SIGKILL");
    await Promise.all(servers.map((s) => s.proc.exited));
    for (const m of fuseMountsUnder(root)) unmountFuse(m.mountpoint, { force: true });
    const left = fuseMountsUnder(root);
    rmSync(root, { recursive: true, force: true });
    expect(left).toEqual([]);
  });

  test("64 parallel readers all read the right bytes", async () => {
    const mp = newMp();
    const s = startServer([BUN, FIXTURE, "everything", mp]);
    await s.waitFor(/^ready$/);
    const tree = everythingTree(1000);
    const ctx = { signal: new AbortController().signal, uid: 0, gid: 0, pid: 0 };
    const files = ["data/seven-mib", "data/one-mib", "bin/tool", "data/original"];
    const want = files.map((f) => {
      const n = tree.get(f) as MemFile;
      return new Bun.CryptoHasher("sha256").update(n.read(0, n.size, ctx) as Uint8Array).digest("hex");
    });
    const script = Array.from({ length: 64 }, (_, i) => `sha256sum < ${mp}/${files[i % 4]} > ${root}/sum${i} &`).join(
      "\n",
    );
    await sh(`${script}\nwait`);
    for (let i = 0; i < 64; i++) expect((await Bun.file(`${root}/sum${i}`).text()).split(" ")[0]).toBe(want[i % 4]!);
    s.proc.kill("SIGTERM");
    expect(await s.proc.exited).toBe(0);
    expect(mounted(mp)).toBe(false);
  });

  test("a reader killed mid-read does not disturb the server", async () => {
    const mp = newMp();
    const s = startServer([BUN, FIXTURE, "slow", mp]);
    await s.waitFor(/^ready$/);
    const reader = Bun.spawn(["cat", `${mp}/slow/file`], { stdout: "ignore" });
    // Mid-read: cat has read some of the 64 MiB file (its offset moved), far from all of it (20 ms per READ).
    await until(() => (readOffset(reader.pid, `${mp}/slow/file`) ?? 0) > 0, "cat has read part of the slow file");
    reader.kill("SIGKILL");
    expect(await reader.exited).not.toBe(0);
    expect(await sh(`cat ${mp}/fast.txt`)).toBe("still serving\n");
    // A second slow reader still makes progress after the first one died.
    expect(await sh(`head -c 300000 ${mp}/slow/file | wc -c`)).toBe("300000\n");
    s.proc.kill("SIGTERM");
    expect(await s.proc.exited).toBe(0);
    expect(mounted(mp)).toBe(false);
  });

  test("unmount while busy: the name goes at once, open files keep working, the server stops after the last close", async () => {
    const mp = newMp();
    const s = startServer([BUN, FIXTURE, "everything", mp]);
    await s.waitFor(/^ready$/);
    const holder = Bun.spawn(
      ["bash", "-c", `exec 3<${mp}/data/one-mib; echo open; read -t 20 go; head -c 1000 <&3 | wc -c`],
      {
        stdout: "pipe",
        stdin: "pipe",
      },
    );
    const out = lines(holder.stdout);
    expect(await out.next()).toBe("open"); // the file is open
    s.proc.kill("SIGUSR1");
    await until(() => !mounted(mp), "the mount is detached");
    expect(s.lines).not.toContain("closed"); // still serving the open file
    holder.stdin!.write("go\n");
    await holder.stdin!.end();
    expect(await holder.exited).toBe(0);
    expect(await out.rest()).toEqual(["1000"]);
    await s.waitFor(/^closed$/);
    expect(await s.proc.exited).toBe(0);
  });

  test("after SIGKILL the mount is stale; the next start cleans it", async () => {
    const mp = newMp();
    const s = startServer([BUN, FIXTURE, "everything", mp]);
    await s.waitFor(/^ready$/);
    expect(await sh(`cat ${mp}/etc/hostname`)).toBe("soci\n");
    s.proc.kill("SIGKILL");
    await s.proc.exited;
    expect(mounted(mp)).toBe(true);
    const err = await stat(mp).then(
      () => undefined,
      (e: NodeJS.ErrnoException) => e.code,
    );
    expect(err).toBe("ENOTCONN");
    const mp2 = newMp();
    const s2 = startServer([BUN, FIXTURE, "everything", mp2, "--clean-root", root]);
    expect(await s2.waitFor(/^cleaned/)).toBe(`cleaned ${mp}`);
    await s2.waitFor(/^ready$/);
    expect(mounted(mp)).toBe(false);
    expect(mounted(mp2)).toBe(true);
    s2.proc.kill("SIGINT");
    expect(await s2.proc.exited).toBe(0);
    expect(mounted(mp2)).toBe(false);
  });

  test("the same mount served by the compiled binary (bun build --compile)", async () => {
    const bin = join(root, "serve-tree-bin");
    // The reader threads' module is an entry point of its own, as in release/build.ts.
    await sh(
      `${BUN} build --compile ${FIXTURE} ${WORKER_ENTRIES.map((e) => join(REPO, e)).join(" ")} --outfile ${bin} 2>&1`,
    );
    const mp = newMp();
    const s = startServer([bin, "overlay", mp]);
    await s.waitFor(/^ready$/);
    expect(await sh(`cat ${mp}/bottom/keep.txt`)).toBe("kept from bottom\n");
    expect(await sh(`stat -c '%F %t %T' ${mp}/top/gone.txt`)).toBe("character special file 0 0\n");
    expect(await sh(`getfattr --absolute-names --only-values -n trusted.overlay.opaque ${mp}/top/opq`)).toBe("y");
    expect((await sh(`ls ${mp}/top`)).trim().split("\n")).toEqual(["new.txt", "gone.txt", "opq", "merged"].sort());
    s.proc.kill("SIGTERM");
    expect(await s.proc.exited).toBe(0);
    expect(mounted(mp)).toBe(false);
  }, 120_000);
});

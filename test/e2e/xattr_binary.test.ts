/**
 * Binary extended attributes end to end, on real tools: files get a file capability (`setcap cap_net_raw+ep`,
 * a binary security.capability struct with NULs) and binary user./trusted. values (`setfattr -v 0s…`/`0x…`),
 * GNU tar archives them (`--xattrs`), the layer is pushed to the real Distribution registry, indexed by our
 * zTOC builder and mounted lazily through the kernel's FUSE by LayerFs. `getfattr -d -m - -e hex` of every
 * mounted file equals that of the original, byte for byte, and `getcap` sees cap_net_raw on the mounted file.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { lstat, readFile, readdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inflateFromCheckpoint } from "../../src/compress/resume.ts";
import { LayerFs } from "../../src/layerfs/remote_fs.ts";
import { MediaType } from "../../src/oci/media_types.ts";
import type { Descriptor } from "../../src/oci/types.ts";
import { HttpRegistryClient } from "../../src/registry/client.ts";
import type { Reference } from "../../src/registry/types.ts";
import { buildZtoc } from "../../src/ztoc/builder.ts";
import { decodeZtoc } from "../../src/ztoc/codec.ts";
import { needs } from "../_harness/env.ts";
import { startRegistry, type TestRegistry } from "../_harness/registry.ts";

const run = needs(
  "xattr binary e2e",
  "root",
  "fuse",
  "tool:setcap",
  "tool:getcap",
  "tool:setfattr",
  "tool:getfattr",
  "tool:tar",
  "tool:docker-registry",
);

/**
 * Runs a tool without blocking this process: the FUSE mount is served by this very process, so a synchronous
 * spawn of a tool that reads the mount would deadlock. Throws with its stderr when it fails.
 */
async function sh(cmd: string, args: string[], cwd?: string): Promise<string> {
  const p = Bun.spawn([cmd, ...args], { cwd, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (${code}): ${err}`);
  return out;
}

/** `getfattr -d -m - -e hex` of one file, without the "# file:" line (it names the path). */
async function xattrDump(path: string): Promise<string> {
  return (await sh("getfattr", ["-h", "-d", "-m", "-", "-e", "hex", path]))
    .split("\n")
    .filter((l) => l !== "" && !l.startsWith("# file: "))
    .join("\n");
}

/** Every path below `root` with its type, mode, owner and content, sorted; `.soci-ts` left out. */
async function listTree(root: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for (const name of (await readdir(join(root, rel))).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    if (r === ".soci-ts") continue;
    const st = await lstat(join(root, r));
    const data = st.isFile()
      ? createHash("sha256")
          .update(await readFile(join(root, r)))
          .digest("hex")
      : "";
    out.push(`${r} ${st.mode.toString(8)} ${st.uid}:${st.gid} ${data}`);
    if (st.isDirectory()) out.push(...(await listTree(root, r)));
  }
  return out;
}

describe.skipIf(!run)("binary xattrs from GNU tar through a lazily mounted layer", () => {
  let reg: TestRegistry;
  let tmp: string;
  let fs: LayerFs;
  const client = new HttpRegistryClient({ dockerConfigPath: null, timeoutMs: 10_000 });
  const files = ["bin/ping", "data/blob", "data/acl-dir", "data/plain"];

  beforeAll(async () => {
    reg = await startRegistry();
    // A disk directory, not tmpfs: user.* xattrs on tmpfs need Linux 6.6.
    tmp = mkdtempSync(join(tmpdir(), "xattr-binary-"));
    fs = await LayerFs.create({
      root: join(tmp, "root"),
      inflate: inflateFromCheckpoint,
      backgroundFetch: { disable: true },
    });
  });
  afterAll(async () => {
    await fs?.close();
    await reg?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  test("getfattr of every mounted file equals the original's; getcap shows cap_net_raw", async () => {
    // 1. Files with binary xattrs, made by the real tools.
    const src = join(tmp, "src");
    mkdirSync(join(src, "bin"), { recursive: true });
    mkdirSync(join(src, "data", "acl-dir"), { recursive: true });
    copyFileSync("/bin/true", join(src, "bin", "ping"));
    await sh("setcap", ["cap_net_raw+ep", join(src, "bin", "ping")]);
    writeFileSync(join(src, "data", "blob"), "binary xattrs\n");
    await sh("setfattr", ["-n", "user.bin", "-v", "0sAP+AgA==", join(src, "data", "blob")]); // 00 ff 80 80
    await sh("setfattr", ["-n", "trusted.bin", "-v", "0x000102fffe0a3d80c3", join(src, "data", "blob")]);
    // Every byte value, NUL and newline and '=' included, on a directory.
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i)).toString("hex");
    await sh("setfattr", ["-n", "user.all", "-v", `0x${all}`, join(src, "data", "acl-dir")]);
    writeFileSync(join(src, "data", "plain"), "no xattrs\n");
    const before = new Map<string, string>();
    for (const f of files) before.set(f, await xattrDump(join(src, f)));
    expect(before.get("bin/ping")).toBe("security.capability=0x0100000200200000000000000000000000000000");
    expect(before.get("data/blob")).toBe("trusted.bin=0x000102fffe0a3d80c3\nuser.bin=0x00ff8080");
    expect(before.get("data/acl-dir")).toBe(`user.all=0x${all}`);

    // 2. GNU tar archives them as SCHILY.xattr PAX records; push the gzip layer to the registry.
    const layerPath = join(tmp, "layer.tar.gz");
    await sh("tar", ["--xattrs", "--xattrs-include=*", "--numeric-owner", "-czf", layerPath, "-C", src, "."]);
    const blob = new Uint8Array(readFileSync(layerPath));
    const ref: Reference = { registry: reg.host, repository: "test/xattr-binary", tag: "v1" };
    const pushed = await client.pushBlob(ref, blob, { mediaType: MediaType.OCI_LAYER_GZIP });
    const layer: Descriptor = { mediaType: MediaType.OCI_LAYER_GZIP, digest: pushed.digest, size: pushed.size };

    // 3. The zTOC, through its serialized form (what a mount reads from the registry).
    const built = await buildZtoc(new Blob([blob]).stream(), { algorithm: "gzip", spanSizeBytes: 16 * 1024 });
    const ztoc = decodeZtoc(built.bytes);
    const ping = ztoc.toc.find((e) => e.name === "./bin/ping")!;
    expect(
      Buffer.from(ping.xattrs.find((x) => x.key === "SCHILY.xattr.security.capability")!.value).toString("hex"),
    ).toBe("0100000200200000000000000000000000000000");

    // 4. Mount lazily and compare.
    const mp = join(tmp, "mnt");
    mkdirSync(mp);
    const mounted = await fs.mountLayer({ source: { client, ref }, layer, mountpoint: mp, ztoc });
    try {
      expect(mounted.manager).toBeDefined(); // lazy, not fetched whole
      for (const f of files) expect([f, await xattrDump(join(mp, f))]).toEqual([f, before.get(f)!]);
      expect((await sh("getcap", [join(mp, "bin", "ping")])).trim()).toBe(`${join(mp, "bin", "ping")} cap_net_raw=ep`);
      // The whole tree: every entry's xattrs (one recursive getfattr), type, mode, owner and content.
      const dumpAll = (root: string) => sh("getfattr", ["-R", "-P", "-h", "-d", "-m", "-", "-e", "hex", "."], root);
      expect(await dumpAll(mp)).toBe(await dumpAll(src));
      expect(await listTree(mp)).toEqual(await listTree(src));
    } finally {
      await fs.unmount(mp);
    }
  }, 120_000);
});

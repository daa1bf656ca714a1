/**
 * The registry client and the OCI layout store are rank 2 (web-standard and node: APIs only): the same code
 * runs under Deno (deno_client.ts) against the real registry and a skopeo-written layout.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sha256Digest } from "../../src/util/digest.ts";
import { needs } from "../_harness/env.ts";
import { pushImage, startRegistry, type PushedImage, type TestRegistry } from "../_harness/registry.ts";

const REPO = join(import.meta.dir, "..", "..");
const DENO = join(REPO, "node_modules", ".bin", "deno");
const ok = needs("registry client under Deno", "tool:docker-registry", "tool:skopeo") && existsSync(DENO);

describe.skipIf(!ok)("registry client under Deno", () => {
  let reg: TestRegistry;
  let dir: string;
  let img: PushedImage;
  beforeAll(async () => {
    reg = await startRegistry();
    dir = mkdtempSync(join(tmpdir(), "soci-deno-registry-"));
    img = await pushImage(reg, "deno/app", "v1");
    const r = Bun.spawnSync(
      ["skopeo", "copy", "--src-tls-verify=false", `docker://${reg.host}/deno/app:v1`, `oci:${dir}/lay:v1`],
      { stderr: "pipe" },
    );
    if (r.exitCode !== 0) throw new Error(`skopeo copy failed: ${r.stderr.toString()}`);
  });
  afterAll(async () => {
    await reg?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("manifests, verified blobs, multi-range reads, chunked push and layouts", () => {
    const r = Bun.spawnSync(
      [DENO, "run", "-A", "--quiet", join(import.meta.dir, "deno_client.ts"), reg.host, `${dir}/lay`],
      {
        stdout: "pipe",
        stderr: "pipe",
        env: { ...process.env, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
        timeout: 120_000,
      },
    );
    if (r.exitCode !== 0) throw new Error(`deno failed (${r.exitCode}): ${r.stderr.toString()}`);
    const out = JSON.parse(r.stdout.toString());
    const layer = img.layers[0]!;
    expect(out).toEqual({
      manifest: img.manifestDescriptor.digest,
      blobDigest: layer.descriptor.digest,
      head: Array.from(layer.blob.subarray(0, 10)),
      tail: Array.from(layer.blob.subarray(layer.blob.length - 10)),
      pushed: sha256Digest(new TextEncoder().encode("pushed from deno")),
      layoutManifest: img.manifestDescriptor.digest,
    });
  });
});

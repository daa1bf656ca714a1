/** A registry refusing a request (HTTP 4xx) is a failure (exit 1), not a usage error (exit 2, "Run --help"). */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { httpError } from "../../src/registry/errors.ts";
import { FailedPreconditionError, InvalidArgumentError } from "../../src/util/errors.ts";
import { BUN, MAIN, REPO } from "../_harness/cli.ts";
import { needs } from "../_harness/env.ts";
import type { FaultProxy } from "../_harness/fault_proxy.ts";
import { type ProxiedRegistry, startProxiedRegistry } from "../_harness/proxied_registry.ts";
import { pushImage, type TestRegistry } from "../_harness/registry.ts";

test("httpError: 400, 405, 413 and 416 are FailedPreconditionError, never InvalidArgumentError", () => {
  for (const status of [400, 405, 413, 416, 422]) {
    const err = httpError({ action: "get blob", status });
    expect(err).toBeInstanceOf(FailedPreconditionError);
    expect(err).not.toBeInstanceOf(InvalidArgumentError);
  }
});

const run = needs("CLI exit code of registry errors", "tool:docker-registry");

describe.skipIf(!run)("soci-ts index create against a registry answering 400", () => {
  let env: ProxiedRegistry | undefined;
  let reg: TestRegistry;
  let proxy: FaultProxy;
  let root: string;
  beforeAll(async () => {
    env = await startProxiedRegistry({ tmpPrefix: "soci-cli-4xx-" });
    ({ reg, proxy, tmp: root } = env);
  });
  afterAll(() => env?.stop());

  test("exits 1 with the registry's message and no usage hint", async () => {
    await pushImage(reg, "app", "v1");
    proxy.set({ kind: "status", status: 400, match: { path: /\/manifests\// } });
    const p = Bun.spawn(
      [BUN, MAIN, "index", "create", `${proxy.host}/app:v1`, "--root", root, "--config", "/dev/null"],
      {
        cwd: REPO,
        env: { ...process.env, NO_COLOR: "1" },
        stdout: "pipe",
        stderr: "pipe",
      },
    );
    const [code, stderr] = await Promise.all([p.exited, new Response(p.stderr).text()]);
    expect(stderr).toContain("HTTP 400 (INJECTED: injected HTTP 400)");
    expect(stderr).not.toContain("--help");
    expect(code).toBe(1);
  });
});

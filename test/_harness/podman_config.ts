/**
 * podman's configuration for one test or bench run: containers.conf (runc, bounded ulimits), registries.conf (the
 * test registry, plain HTTP) and storage.conf (overlay, its own graph root and run root under the directory, and
 * soci-ts's store as an additional layer store when given), so a run touches nothing of the host's podman.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/**
 * Writes the three files into `dir` (made here) and returns the CONTAINERS_* variables naming them. `registry`:
 * host:port of the registry; `store`: the additional layer store's directory; `seenAs`: `dir` as podman sees it
 * (podman run in another root, e.g. a debootstrapped trixie; default `dir`), which also roots the paths in the files.
 */
export function writePodmanConfig(
  dir: string,
  o: { registry: string; store?: string; seenAs?: string },
): Record<string, string> {
  const seen = o.seenAs ?? dir;
  mkdirSync(dir);
  writeFileSync(
    join(dir, "containers.conf"),
    `[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n[engine]\nruntime = "runc"\n`,
  );
  writeFileSync(join(dir, "registries.conf"), `[[registry]]\nlocation = "${o.registry}"\ninsecure = true\n`);
  writeFileSync(
    join(dir, "storage.conf"),
    [
      "[storage]",
      'driver = "overlay"',
      `graphroot = "${seen}/graph"`,
      `runroot = "${seen}/run"`,
      ...(o.store ? ["[storage.options]", `additionallayerstores = ["${o.store}:ref"]`] : []),
      "",
    ].join("\n"),
  );
  return {
    CONTAINERS_CONF: join(seen, "containers.conf"),
    CONTAINERS_REGISTRIES_CONF: join(seen, "registries.conf"),
    CONTAINERS_STORAGE_CONF: join(seen, "storage.conf"),
  };
}

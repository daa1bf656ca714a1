/**
 * `soci-ts serve`: the daemon. containerd's proxy snapshotter on a unix socket (with `[cri_keychain]
 * enable_keychain`, CRI's image service on the same socket), with `[store] enable` podman's additional layer store
 * at `[store] mountpoint`, and the status socket `<root>/status.sock` (service/serve.ts has the steps), in the
 * foreground until SIGTERM or SIGINT. Both stop serving and keep the metadata for the next start. SIGTERM leaves
 * the containerd snapshots' lazy layer mounts to the keeper of their FUSE connections (systemd's descriptor store
 * or the holder process, service/fd_handover.ts) for the next serve to take over, unless `[snapshotter]
 * keep_mounts_on_restart = false`; SIGINT detaches every layer mount (a full stop). The podman store's mount is
 * detached either way (podman finds its mount point empty meanwhile).
 *
 *   --address PATH   unix socket to listen on (default: config `address`, /run/soci-ts/soci-ts.sock)
 */
import { defineCommand } from "citty";
import { mkdir, realpath } from "node:fs/promises";
import { resolve } from "node:path";
import { startServe } from "../service/serve.ts";
import { InvalidArgumentError } from "../util/errors.ts";
import { cliContext, usableRoot } from "./context.ts";

export default defineCommand({
  meta: {
    name: "serve",
    description: "Run the daemon: lazy layers for containerd (snapshotter, CRI image service) and podman (layer store)",
  },
  args: {
    address: { type: "string", description: "Unix socket to listen on (default: config address)" },
  },
  async run({ args }) {
    const ctx = cliContext();
    const c = ctx.config;
    const given = resolve(usableRoot(ctx));
    await mkdir(given, { recursive: true });
    // The real path: mount tables show real paths, and restart finds a crashed daemon's mounts by comparing them.
    const root = await realpath(given);
    if (!c.snapshotter.enable && !c.store.enable) {
      throw new InvalidArgumentError("Cannot serve: [snapshotter] enable and [store] enable are both false");
    }
    // containerd's spelling "unix:///path" is accepted too.
    const address = String(args.address ?? c.address).replace(/^unix:\/\//, "");
    if (!address) throw new InvalidArgumentError('Cannot serve: option "--address" is empty');
    // Signals are taken from the start: one while starting ends the start (restore included) and undoes it.
    let stopAsked = false;
    let keepMounts = false;
    let wake: () => void = () => {};
    const stopped = new Promise<void>((res) => (wake = res));
    const starting = new AbortController();
    const onSignal = (sig: string) => {
      if (stopAsked) {
        ctx.logger.warn("Second signal: exiting now", { signal: sig });
        process.exit(1);
      }
      stopAsked = true;
      keepMounts = sig === "SIGTERM";
      ctx.logger.info("Stopping", { signal: sig });
      starting.abort(new Error(`stopped by ${sig} while starting`));
      wake();
    };
    process.on("SIGINT", () => onSignal("SIGINT"));
    process.on("SIGTERM", () => onSignal("SIGTERM"));
    let daemon: Awaited<ReturnType<typeof startServe>>;
    try {
      daemon = await startServe({
        config: c,
        root,
        address: resolve(address),
        logger: ctx.logger,
        env: process.env,
        signal: starting.signal,
        // The holder logs in serve's format.
        selfArgv: [...selfCommand(), ...(ctx.flags.logFormat ? ["--log-format", ctx.flags.logFormat] : [])],
      });
    } catch (err) {
      // A signal while starting: what started was undone; that is a clean stop.
      if (starting.signal.aborted) return;
      throw err;
    }
    const serving = [
      ...(daemon.snapshotter ? [`containerd snapshots on ${daemon.address}`] : []),
      ...(daemon.store ? [`podman store at ${daemon.store.mountpoint}`] : []),
    ];
    process.stderr.write(`soci-ts serve: ${serving.join(", ")} (root ${root}); SIGTERM to stop\n`);
    await stopped;
    await daemon.stop({ keepMounts });
  },
});

/**
 * The command that runs this soci-ts again: the executable alone when compiled (its argv[1] is the embedded entry
 * point, under /$bunfs), else the runtime and the entry script.
 */
function selfCommand(): string[] {
  const script = process.argv[1];
  if (!script || script.startsWith("/$bunfs/") || script.startsWith("B:/~BUN/")) return [process.execPath];
  return [process.execPath, resolve(script)];
}

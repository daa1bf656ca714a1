/**
 * `soci-ts serve`: the daemon. containerd's proxy snapshotter on a unix socket, in the foreground until SIGINT or
 * SIGTERM (both stop serving, detach every layer mount and keep the metadata for the next start).
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
  meta: { name: "serve", description: "Run the daemon: containerd's proxy snapshotter (lazy layers) on a unix socket" },
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
    if (!c.snapshotter.enable) {
      throw new InvalidArgumentError(
        "Cannot serve: [snapshotter] enable is false and there is nothing else to serve yet",
      );
    }
    // containerd's spelling "unix:///path" is accepted too.
    const address = String(args.address ?? c.address).replace(/^unix:\/\//, "");
    if (!address) throw new InvalidArgumentError('Cannot serve: option "--address" is empty');
    // Signals are taken from the start: one while starting ends the start (restore included) and undoes it.
    let stopAsked = false;
    let wake: () => void = () => {};
    const stopped = new Promise<void>((res) => (wake = res));
    const starting = new AbortController();
    const onSignal = (sig: string) => {
      if (stopAsked) {
        ctx.logger.warn("Second signal: exiting now", { signal: sig });
        process.exit(1);
      }
      stopAsked = true;
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
      });
    } catch (err) {
      // A signal while starting: what started was undone; that is a clean stop.
      if (starting.signal.aborted) return;
      throw err;
    }
    process.stderr.write(`soci-ts serve: containerd snapshots on ${daemon.address} (root ${root}); SIGTERM to stop\n`);
    await stopped;
    await daemon.stop();
  },
});

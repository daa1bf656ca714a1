/**
 * `soci-ts fd-holder` (hidden): the FUSE descriptor holder `serve` starts in its own session (service/fd_holder.ts
 * has the protocol and its exit rules). Not for people: serve passes the socket and the timeout, and its own
 * `--log-format`, so the holder's log (`<root>/fd-holder.log`) is in the format serve's is.
 *
 *   --socket PATH              unix socket to listen on (<root>/fd-holder.sock)
 *   --orphan-timeout-sec N     seconds to keep connections once no serve is connected
 */
import { defineCommand } from "citty";
import { runFdHolder } from "../service/fd_holder.ts";
import { InvalidArgumentError } from "../util/errors.ts";
import { getGlobalFlags } from "./context.ts";
import { createLogger } from "./logger.ts";

export default defineCommand({
  meta: {
    name: "fd-holder",
    description: "Keep the FUSE descriptors of serve's lazy layers across its restarts",
    hidden: true,
  },
  args: {
    socket: { type: "string", description: "Unix socket to listen on", required: true },
    "orphan-timeout-sec": {
      type: "string",
      description: "Seconds to keep connections without a serve",
      default: "600",
    },
  },
  run({ args }) {
    const timeoutSec = Number(args["orphan-timeout-sec"]);
    if (!Number.isSafeInteger(timeoutSec) || timeoutSec < 1)
      throw new InvalidArgumentError(
        `Cannot hold descriptors: option "--orphan-timeout-sec" must be a positive integer`,
      );
    const logger = createLogger({ level: "info", format: getGlobalFlags().logFormat ?? "text" });
    const why = runFdHolder({ socketPath: String(args.socket), orphanTimeoutMs: timeoutSec * 1000, logger });
    logger.info("FUSE descriptor holder exits", { why });
  },
});

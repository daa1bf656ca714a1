#!/usr/bin/env bun
/** soci-ts entry point: hand argv to the CLI and exit with its code (the only place that exits). */
import { main } from "./cli/run.ts";

const code = await main(process.argv.slice(2));
process.exit(code);

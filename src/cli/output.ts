/**
 * Command output on stdout without Node's stream object: Bun builds `process.stdout` (and `process.stderr`) on
 * first access, which costs about 20 ms of CPU, as much as the rest of `soci-ts --version`. `Bun.write` on the
 * file descriptor writes the whole buffer and resolves once it is written; a closed pipe rejects (EPIPE), as
 * `process.stdout.write`'s callback did. A command writes its stdout either here or through `process.stdout`
 * (only `mount --stats` does), never both, so that the two cannot reorder its output.
 */

/** Write to stdout and wait until it is written (the process may exit right after a command returns). */
export async function writeOut(data: string | Uint8Array): Promise<void> {
  await Bun.write(Bun.stdout, data);
}

/** Reads done by child processes, as a container's process reads a mounted file (through the kernel). */

/**
 * One read(2) of the first `bytes` of `path` by dd, in a child process: `got` resolves with them as soon as dd
 * writes them out, `exited` once dd has also closed the file (its FLUSH is a FUSE request of its own).
 */
export function readOnce(path: string, bytes: number): { got: Promise<Uint8Array>; exited: Promise<number> } {
  const p = Bun.spawn(["dd", `if=${path}`, `bs=${bytes}`, "count=1", "status=none"], {
    stdout: "pipe",
    stderr: "inherit",
  });
  const got = (async () => {
    const reader = (p.stdout as ReadableStream<Uint8Array>).getReader();
    const parts: Uint8Array[] = [];
    let n = 0;
    while (n < bytes) {
      const { value, done } = await reader.read();
      if (done) break;
      parts.push(value);
      n += value.length;
    }
    reader.releaseLock();
    return new Uint8Array(Buffer.concat(parts));
  })();
  return { got, exited: p.exited };
}

/**
 * Run by inflate_thread.test.ts in a process of its own: a zTOC build with gzip inflated (and tar read) on its
 * thread that ends early, then nothing more. MODE "tar-error": an entry with typeflag 'Z' halfway through; "abort":
 * the signal aborted after the source's third chunk. Prints the error's class and message, and must then exit by
 * itself: a worker left running keeps its process alive.
 */
import { gzipSync } from "node:zlib";
import { registerNativeBackends } from "../../src/native_backends.ts";
import { setChecksum, type TarWriteEntry, writeTar } from "../../src/tar/writer.ts";
import { buildZtoc } from "../../src/ztoc/builder.ts";
import { Rand } from "../_harness/rand.ts";

registerNativeBackends();
const mode = process.argv[2];

const entries: TarWriteEntry[] = [];
const r = new Rand("early exit");
for (let i = 0; i < 20; i++) entries.push({ name: `f${i}`, data: r.bytes(200_000) });
const tar = writeTar(entries);
if (mode === "tar-error") {
  // Entry 10's typeflag made 'Z', its checksum made right again.
  const at = 10 * (512 + 200_192);
  tar[at + 156] = "Z".charCodeAt(0);
  setChecksum(tar.subarray(at, at + 512));
}
const blob = new Uint8Array(gzipSync(tar, { level: 1 }));
const ac = new AbortController();
async function* source(): AsyncGenerator<Uint8Array> {
  for (let i = 0, n = 0; i < blob.length; i += 256 * 1024) {
    if (mode === "abort" && ++n === 3) ac.abort(new Error("stop here"));
    yield blob.subarray(i, i + 256 * 1024);
  }
}
try {
  await buildZtoc(source(), { algorithm: "gzip", inflateThread: true, signal: ac.signal });
  console.log("built");
} catch (err) {
  console.log(`${(err as Error).constructor.name}: ${(err as Error).message}`);
}

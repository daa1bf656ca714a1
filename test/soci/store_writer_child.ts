/** Child of the artifact store crash test: writes blobs and records until it is killed. */
import process from "node:process";
import { ArtifactStore } from "../../src/soci/artifact_store.ts";
import { sha256Digest } from "../../src/util/digest.ts";

const store = new ArtifactStore(process.argv[2]!);
let i = 0;
for (;;) {
  const bytes = new Uint8Array(4 << 20).fill(i & 0xff);
  bytes[0] = i >> 8;
  const digest = await store.putBlob(bytes);
  await store.putRecord({
    manifestDigest: sha256Digest(new TextEncoder().encode(`m${i}`)),
    configDigest: digest,
    indexDigest: digest,
    platform: { architecture: "amd64", os: "linux" },
    imageRef: `r${i}`.repeat(2000),
    createdAt: new Date().toISOString(),
    version: "v1",
  });
  if (i++ === 3) process.stdout.write("writing\n");
}

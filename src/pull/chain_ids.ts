/**
 * Chain IDs: the names containerd gives the committed snapshot of each layer of an image (the OCI image spec's
 * ChainID). The first layer's is its diffID; each next one is sha256 of "<parent chain ID> <diffID>" (the
 * text, one space between).
 */
import { sha256OfString } from "../util/digest.ts";

/**
 * The chain ID of every layer prefix, bottom first: `chainIds([d0, d1, d2])` is
 * `[d0, sha256("d0 d1"), sha256("<that> d2")]`.
 */
export function chainIds(diffIds: readonly string[]): string[] {
  const out: string[] = [];
  for (const diffId of diffIds)
    out.push(out.length === 0 ? diffId : sha256OfString(`${out[out.length - 1]} ${diffId}`));
  return out;
}

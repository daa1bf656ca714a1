import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { chainIds } from "../../src/pull/chain_ids.ts";

const sha = (s: string) => `sha256:${createHash("sha256").update(s).digest("hex")}`;

describe("chainIds", () => {
  test("the first is the diffID; each next is sha256 of '<parent> <diffID>'", () => {
    const d = [sha("a"), sha("b"), sha("c")];
    const c1 = sha(`${d[0]} ${d[1]}`);
    expect(chainIds(d)).toEqual([d[0]!, c1, sha(`${c1} ${d[2]}`)]);
  });

  test("no layers, no chain IDs", () => {
    expect(chainIds([])).toEqual([]);
  });
});

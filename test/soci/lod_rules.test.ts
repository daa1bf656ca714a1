/**
 * `[lod]` rules (soci/lod_rules.ts): image patterns are globs on the normalized reference or the repository,
 * the first matching rule wins, an explicit choice beats every rule, and the catch-all comes last; matching takes
 * time linear in the pattern and reference lengths (no backtracking).
 */
import { describe, expect, test } from "bun:test";
import { parseConfig } from "../../src/config/load.ts";
import { chooseLod, compileImagePattern, LodRules, matchNames } from "../../src/soci/lod_rules.ts";
import { InvalidArgumentError } from "../../src/util/errors.ts";
import { Rand } from "../_harness/rand.ts";

const DIGEST = `sha256:${"ab".repeat(32)}`;

describe("image patterns", () => {
  test("match the normalized reference: * stays within a path component, ** does not, ? is one character", () => {
    const cases: Array<[string, string, boolean]> = [
      ["registry.example/app/*", "registry.example/app/web:1.0", true],
      ["registry.example/app/*", "registry.example/app/web", true], // tag latest filled in
      ["registry.example/app/*", "registry.example/app/team/web:1.0", false],
      ["registry.example/app/**", "registry.example/app/team/web:1.0", true],
      ["registry.example/app/web:1.?", "registry.example/app/web:1.5", true],
      ["registry.example/app/web:1.?", "registry.example/app/web:1.10", false],
      ["registry.example/app/web:1.*", "registry.example/app/web:1.10", true],
      // "." is a dot, not any character.
      ["registry.example/app/web:1.0", "registry.example/app/web:1x0", false],
      ["registry.example/app/web:*", `registry.example/app/web:v2@${DIGEST}`, true],
      [`registry.example/app/web@${DIGEST}`, `registry.example/app/web@${DIGEST}`, true],
      ["docker.io/library/python:3.*", "python:3.12", true],
      ["docker.io/library/python:3.*", "docker.io/library/python:3.12-slim", true],
      ["localhost:5000/e2e/*", "localhost:5000/e2e/lod:v1", true],
      ["**", "anything.example/at/all:tag", true],
      ["**/web:*", "r.example/team/web:1", true],
    ];
    const rules = (image: string) => new LodRules([{ image, workload: "w" }]);
    for (const [pattern, ref, matches] of cases)
      expect([pattern, ref, rules(pattern).match(ref) !== undefined]).toEqual([pattern, ref, matches]);
  });

  test("a pattern without a tag matches the repository with every tag or digest", () => {
    const rules = new LodRules([{ image: "registry.example/app/web", workload: "web" }]);
    expect(rules.match("registry.example/app/web:1.0")?.workload).toBe("web");
    expect(rules.match(`registry.example/app/web@${DIGEST}`)?.workload).toBe("web");
    expect(rules.match("registry.example/app/web-2:1.0")).toBeUndefined();
    expect(matchNames("python")).toEqual({
      reference: "docker.io/library/python:latest",
      repository: "docker.io/library/python",
    });
  });

  test("the first matching rule wins; an unparsable reference matches none", () => {
    const rules = new LodRules([
      { image: "registry.example/app/web:canary", workload: "canary" },
      { image: "registry.example/app/*", workload: "web" },
      { image: "**", workload: "all" },
    ]);
    expect(rules.size).toBe(3);
    expect(rules.match("registry.example/app/web:canary")?.workload).toBe("canary");
    expect(rules.match("registry.example/app/web:1")?.workload).toBe("web");
    expect(rules.match("other.example/x:1")?.workload).toBe("all");
    expect(rules.choose("other.example/x:1")).toEqual({ workload: "all", by: "rule **" });
    expect(rules.match("Not A Reference")).toBeUndefined();
    expect(new LodRules().match("registry.example/app/web:1")).toBeUndefined();
  });

  test("bad patterns and workload names are refused, naming them", () => {
    expect(() => compileImagePattern(`${"a/".repeat(256)}x`)).toThrow("Cannot use image pattern");
    for (const bad of ["python:*", "", "a/b c", "a/[bc]", "a/b\n", `${"a/".repeat(30)}x`.replace("x", " ")]) {
      expect(() => compileImagePattern(bad)).toThrow(InvalidArgumentError);
      expect(() => compileImagePattern(bad)).toThrow(`Cannot use image pattern ${JSON.stringify(bad)}`);
    }
    expect(() => new LodRules([{ image: "a/b", workload: "../x" }])).toThrow('Cannot use workload name "../x"');
  });

  test("agree with the glob's regular expression on seeded random short patterns and names", () => {
    // The regular expression the matcher replaced ("*" → "[^/]*", "**" → ".*", "?" → "[^/]"): right, but slow on
    // long inputs; on these short ones it is the specification.
    const spec = (pattern: string) =>
      new RegExp(
        `^${pattern.replace(/\*\*+|\*|\?|\./g, (t) => ({ "*": "[^/]*", "?": "[^/]", ".": "\\." })[t] ?? ".*")}$`,
      );
    const r = new Rand("image patterns");
    const pick = (alphabet: string[], n: number) =>
      Array.from({ length: n }, () => alphabet[r.int(alphabet.length)]).join("");
    let matched = 0;
    for (let i = 0; i < 3000; i++) {
      const pattern = `${pick(["a", "b", "/", ".", "*", "**", "?"], 1 + r.int(7))}/`;
      const name = `${pick(["a", "b", "/", "."], r.int(10))}/`;
      const got = compileImagePattern(pattern).test(name);
      expect([pattern, name, got]).toEqual([pattern, name, spec(pattern).test(name)]);
      if (got) matched++;
    }
    expect(matched).toBeGreaterThan(200); // both outcomes are exercised
  });

  test("a pattern of many ** matches or fails a long reference without backtracking (liveness bound)", () => {
    // Six "a"s between "**"s: a regular expression with ".*" for each "**" took 44 s on a 300-character reference.
    const pattern = "**a**a**a**a**a**a**/x";
    const rules = new LodRules([{ image: pattern, workload: "w" }]);
    // References of the longest length parseReference accepts (319 characters).
    const miss = `r.example/${"a".repeat(306)}:v1`; // no "/x": every split of the "a"s is tried and fails
    const hit = `r.example/${"a".repeat(304)}/x:v1`; // its repository "r.example/aaa…/x" matches
    expect([miss.length, hit.length]).toEqual([319, 319]);
    const started = performance.now();
    expect(rules.match(miss)).toBeUndefined();
    expect(rules.match(hit)?.workload).toBe("w");
    const tookMs = performance.now() - started;
    if (tookMs > 1000) throw new Error(`Matching "${pattern}" took ${Math.round(tookMs)} ms, more than 1000 ms`);
  });

  test("config's rules compile as they load (config checks the same characters)", () => {
    const c = parseConfig('[lod]\nreplay = [{ image = "registry.example/app/*", workload = "web" }]');
    expect(new LodRules(c.lod.replay).match("registry.example/app/web:1")?.workload).toBe("web");
  });
});

describe("chooseLod()", () => {
  const rules = new LodRules([{ image: "registry.example/app/*", workload: "web" }]);
  const fallback = { workload: "store", by: "[store] lod" };

  test("an explicit choice first, then the rules, then the catch-all, else none", () => {
    const ref = "registry.example/app/web:1";
    expect(chooseLod(ref, { explicit: { workload: "cli", by: "flag" }, rules, fallback })).toEqual({
      workload: "cli",
      by: "flag",
    });
    expect(chooseLod(ref, { rules, fallback })).toEqual({ workload: "web", by: "rule registry.example/app/*" });
    expect(chooseLod("other.example/x:1", { rules, fallback })).toEqual(fallback);
    expect(chooseLod("other.example/x:1", { rules })).toBeUndefined();
    expect(chooseLod(ref, {})).toBeUndefined();
  });
});

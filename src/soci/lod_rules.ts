/**
 * Choosing a load order document (LOD) for an image: an explicit choice (`mount --lod`, `pull --lod`, a snapshot
 * label) first, else the first config rule (`[lod] replay`, image reference pattern → workload) whose pattern
 * matches the image, else a catch-all (`[store] lod`), else none. `[lod] record` rules choose the workload to
 * record the same way.
 *
 * Pattern syntax (a glob, as `config default` documents under `[lod]`): matched against the normalized reference
 * `host/repository:tag` (`@digest` added when the reference has one; tag "latest" when it has neither tag nor
 * digest; Docker Hub names in full, `docker.io/library/python:3.12`), and against the repository alone
 * (`host/repository`), so that a pattern without a tag covers every tag. `*` matches any run of characters but
 * `/`, `**` any run, `?` one character but `/`; everything else matches itself. Rules are tried in order; the
 * first that matches wins.
 */
import { IMAGE_PATTERN_RE } from "../config/defaults.ts";
import { formatReference, parseReference, repoName, withDefaultTag } from "../registry/reference.ts";
import { InvalidArgumentError } from "../util/errors.ts";
import { checkWorkloadName } from "./lod.ts";

/** One rule: images whose normalized reference `image` matches get workload `workload`. */
export interface LodRule {
  image: string;
  workload: string;
}

/** The workload chosen for an image, and what chose it (for log lines: "flag", "label", `rule <pattern>`…). */
export interface LodChoice {
  workload: string;
  by: string;
}

/** One step of a compiled image pattern: a character, `?`, `*` (a run without `/`) or `**` (any run). */
type PatternStep = { kind: "char"; char: string } | { kind: "one" } | { kind: "run" } | { kind: "any" };

/**
 * A compiled image pattern (see the file comment). `test(name)` matches the whole of `name` in O(steps × length)
 * time whatever the pattern: a set of reachable positions in `name` is carried through the steps, never
 * backtracking (a regular expression with a `.*` per `**` backtracks: `**a**a**a**a**a**a**` followed by `/x`,
 * against a 300-character reference, took 44 s).
 */
export interface ImagePattern {
  /** The pattern as written. */
  readonly source: string;
  /** True when the pattern matches all of `name`. */
  test(name: string): boolean;
}

/**
 * Compile an image pattern (see the file comment and ImagePattern).
 * @throws InvalidArgumentError naming the pattern when it is not one (the characters config accepts)
 */
export function compileImagePattern(pattern: string): ImagePattern {
  if (!IMAGE_PATTERN_RE.test(pattern)) {
    throw new InvalidArgumentError(
      `Cannot use image pattern ${JSON.stringify(pattern.length > 80 ? `${pattern.slice(0, 80)}…` : pattern)}: expected up to 512 of A-Z a-z 0-9 . _ - / : @ and the wildcards * ** ?, with the registry host (a "/") or a "**"`,
    );
  }
  const steps: PatternStep[] = [];
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === "*" && pattern[i + 1] === "*") {
      while (pattern[i + 1] === "*") i++;
      steps.push({ kind: "any" });
    } else if (c === "*") steps.push({ kind: "run" });
    else if (c === "?") steps.push({ kind: "one" });
    else steps.push({ kind: "char", char: c });
  }
  return { source: pattern, test: (name) => matchSteps(steps, name) };
}

/**
 * Whether `steps` match all of `name`: `at[i]` says that the steps so far can end just before `name[i]`; each step
 * maps that set to the next one in one pass over `name`.
 */
function matchSteps(steps: readonly PatternStep[], name: string): boolean {
  const n = name.length;
  let at = new Uint8Array(n + 1);
  at[0] = 1;
  for (const step of steps) {
    const next = new Uint8Array(n + 1);
    let any = false;
    if (step.kind === "any") {
      // Every position from the first reachable one on.
      const first = at.indexOf(1);
      if (first >= 0) next.fill(1, first);
      any = first >= 0;
    } else if (step.kind === "run") {
      // Each reachable position, and the positions after it up to the next "/".
      let open = false;
      for (let i = 0; i <= n; i++) {
        if (at[i]) open = true;
        if (open) next[i] = 1;
        any ||= open;
        if (name[i] === "/") open = false;
      }
    } else {
      for (let i = 0; i < n; i++) {
        if (!at[i]) continue;
        const c = name[i]!;
        if (step.kind === "one" ? c !== "/" : c === step.char) {
          next[i + 1] = 1;
          any = true;
        }
      }
    }
    if (!any) return false;
    at = next;
  }
  return at[n] === 1;
}

/**
 * The two names a pattern is matched against: the normalized reference (`host/repository:tag[@digest]`) and the
 * repository (`host/repository`). Undefined for a reference that cannot be parsed (no rule matches it).
 */
export function matchNames(imageRef: string): { reference: string; repository: string } | undefined {
  try {
    const ref = parseReference(imageRef);
    return { reference: formatReference(withDefaultTag(ref)), repository: repoName(ref) };
  } catch {
    return undefined;
  }
}

/** Ordered rules, compiled once. */
export class LodRules {
  readonly #rules: Array<LodRule & { re: ImagePattern }>;

  /**
   * @throws InvalidArgumentError naming the first pattern or workload name that is not one (config has checked
   *   both, so this is for rules built elsewhere)
   */
  constructor(rules: readonly LodRule[] = []) {
    this.#rules = rules.map((r) => ({
      image: r.image,
      workload: checkWorkloadName(r.workload),
      re: compileImagePattern(r.image),
    }));
  }

  /** How many rules there are. */
  get size(): number {
    return this.#rules.length;
  }

  /** The first rule whose pattern matches `imageRef` (either of its matchNames), or undefined. */
  match(imageRef: string): LodRule | undefined {
    if (this.#rules.length === 0) return undefined;
    const names = matchNames(imageRef);
    if (!names) return undefined;
    const r = this.#rules.find((r) => r.re.test(names.reference) || r.re.test(names.repository));
    return r && { image: r.image, workload: r.workload };
  }

  /** `match` as a LodChoice (`by`: `rule <pattern>`), or undefined. */
  choose(imageRef: string): LodChoice | undefined {
    const r = this.match(imageRef);
    return r && { workload: r.workload, by: `rule ${r.image}` };
  }
}

/**
 * The LOD of image `imageRef`: `explicit` when given, else the first of `rules` that matches, else `fallback`,
 * else undefined.
 */
export function chooseLod(
  imageRef: string,
  opts: { explicit?: LodChoice; rules?: LodRules; fallback?: LodChoice },
): LodChoice | undefined {
  return opts.explicit ?? opts.rules?.choose(imageRef) ?? opts.fallback;
}

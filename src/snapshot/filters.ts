/**
 * containerd's filter syntax, as List takes it: `name==x`, `labels."containerd.io/snapshot.ref"==sha256:…`,
 * `kind!=view,parent~=/^default\//`. Written from the grammar containerd documents in its filters package:
 *
 *   selectors := selector ("," selector)*          all must match (AND)
 *   selector  := fieldpath [operator value]        no operator: the field is present
 *   fieldpath := field ("." field)*
 *   field     := quoted | [A-Za-z0-9_-]+
 *   operator  := "==" | "!=" | "~="                 "~=": the value is a regular expression
 *   value     := quoted | any run of characters but "," and white space (not starting with "." or an operator)
 *   quoted    := "…" with Go escapes (\n \t \\ \" \xHH \uHHHH \UHHHHHHHH \ooo); after "~=" also /…/ or |…|
 *
 * Several filter strings are alternatives (OR); none, or an empty string, matches everything.
 * `parseFilters` checks every string (and compiles every regular expression) before anything is matched, so a
 * bad filter is an InvalidArgumentError even on an empty store.
 *
 * Matching follows containerd: `==` needs the field present and equal; `!=` and `~=` compare the value, an
 * absent field reading as "". Fields of a snapshot (`snapshotFields`): `name`, `parent` and `kind` (always
 * present), `labels.<key>` (the rest of the path joined with "."; absent when the snapshot has no such label).
 * Unknown fields are absent, as in containerd. Differences, both lenient: white space is allowed around
 * separators and operators, and regular expressions are JavaScript's (Go's leading `(?i)`, `(?s)`, `(?m)` and
 * `(?P<name>…)` are translated).
 */
import { InvalidArgumentError } from "../util/errors.ts";
import type { SnapshotInfo } from "./types.ts";

/** How a selector compares a field. */
export type FilterOperator = "present" | "==" | "!=" | "~=";

/** One `<fieldpath><operator><value>` term. */
export interface Selector {
  readonly fieldpath: readonly string[];
  readonly operator: FilterOperator;
  readonly value: string;
  /** Compiled `value` for "~=". */
  readonly re?: RegExp;
}

/** Looks a field path up in an object: its value and whether it is present. */
export type FieldAdaptor = (fieldpath: readonly string[]) => { value: string; present: boolean };

/** Parsed filters: any alternative (one filter string) whose selectors all match. */
export class Filter {
  /** Every alternative's selectors; no alternatives means "match everything". */
  constructor(readonly alternatives: ReadonlyArray<readonly Selector[]>) {}

  /** True when the object seen through `fields` matches. */
  match(fields: FieldAdaptor): boolean {
    if (this.alternatives.length === 0) return true;
    return this.alternatives.some((all) => all.every((s) => matchSelector(s, fields)));
  }

  /** True when the snapshot matches. */
  matchSnapshot(info: SnapshotInfo): boolean {
    return this.match(snapshotFields(info));
  }
}

/**
 * Parses filter strings (alternatives). Throws InvalidArgumentError naming the filter and the offset of the
 * first problem: a syntax error, an unsupported operator, a bad quote, or a regular expression that does not
 * compile.
 */
export function parseFilters(filters: readonly string[]): Filter {
  const alternatives = filters.map((f) => (f === "" ? [] : parseFilter(f)));
  // An empty string matches everything (containerd), and so does any OR that holds it.
  return new Filter(alternatives.some((a) => a.length === 0) ? [] : alternatives);
}

/** Parses one filter string into its selectors (AND). Throws InvalidArgumentError (see `parseFilters`). */
export function parseFilter(filter: string): Selector[] {
  return new Parser(filter).selectors();
}

/** The fields of a snapshot as containerd's snapshot filters see them. */
export function snapshotFields(info: SnapshotInfo): FieldAdaptor {
  return (path) => {
    switch (path[0]) {
      case "name":
        return { value: info.name, present: true };
      case "parent":
        return { value: info.parent, present: true };
      case "kind":
        return { value: info.kind, present: true };
      case "labels": {
        const key = path.slice(1).join(".");
        const value = Object.hasOwn(info.labels, key) ? info.labels[key] : undefined;
        return value === undefined ? ABSENT : { value, present: true };
      }
      default:
        return ABSENT;
    }
  };
}

const ABSENT = { value: "", present: false };

function matchSelector(s: Selector, fields: FieldAdaptor): boolean {
  const { value, present } = fields(s.fieldpath);
  switch (s.operator) {
    case "present":
      return present;
    case "==":
      return present && value === s.value;
    case "!=":
      return value !== s.value;
    case "~=":
      return s.re!.test(value);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Scanner: tokens are fields, values (right after an operator), quoted strings, separators ("," and "."),
// operators (runs of "=", "!", "~").

type Token =
  | { kind: "eof"; pos: number }
  | { kind: "field" | "value" | "operator"; pos: number; text: string }
  | { kind: "quoted"; pos: number; quote: string; text: string }
  | { kind: "separator"; pos: number; text: "," | "." }
  | { kind: "other"; pos: number; text: string };

const FIELD_CHAR = /[A-Za-z0-9_-]/;
const OPERATOR_CHAR = /[=!~]/;
const QUOTE_CHAR = /["/|]/;
const SPACE = /\s/;
// Control characters end a value (Go's scanner only takes graphic, letter, digit and punctuation runes).
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is this pattern's job
const CONTROL = /[\u0000-\u001f\u007f]/;

class Parser {
  #pos = 0;
  /** Set after an operator: the next token is a value. */
  #valueNext = false;

  constructor(readonly input: string) {}

  selectors(): Selector[] {
    const out = [this.selector()];
    for (;;) {
      const t = this.#scan();
      if (t.kind === "eof") return out;
      if (t.kind === "separator" && t.text === ",") {
        out.push(this.selector());
        continue;
      }
      throw this.#error(t.pos, `unexpected input ${tokenText(t)}`);
    }
  }

  selector(): Selector {
    const fieldpath = [this.field()];
    let t = this.#scan();
    while (t.kind === "separator" && t.text === ".") {
      fieldpath.push(this.field());
      t = this.#scan();
    }
    if (t.kind === "eof" || (t.kind === "separator" && t.text === ",")) {
      this.#unscan(t);
      return { fieldpath, operator: "present", value: "" };
    }
    if (t.kind !== "operator")
      throw this.#error(t.pos, `expected an operator ("==", "!=" or "~=") instead of ${tokenText(t)}`);
    if (t.text !== "==" && t.text !== "!=" && t.text !== "~=")
      throw this.#error(t.pos, `unsupported operator "${t.text}"`);
    const operator = t.text;
    const v = this.#scan();
    let value: string;
    if (v.kind === "value") value = v.text;
    else if (v.kind === "quoted" && (v.quote === '"' || operator === "~=")) value = v.text;
    else if (v.kind === "quoted")
      throw this.#error(v.pos, `a value quoted with "${v.quote}" is only allowed after "~="`);
    else throw this.#error(v.pos, `expected a value or a quoted string instead of ${tokenText(v)}`);
    if (operator !== "~=") return { fieldpath, operator, value };
    return { fieldpath, operator, value, re: this.#regexp(value, v.pos) };
  }

  field(): string {
    const t = this.#scan();
    if (t.kind === "field") return t.text;
    if (t.kind === "quoted" && t.quote === '"') return t.text;
    throw this.#error(t.pos, `expected a field name or a "quoted" one instead of ${tokenText(t)}`);
  }

  #regexp(source: string, pos: number): RegExp {
    // Go's leading inline flags become JavaScript flags; named groups lose their "P".
    let flags = "";
    const inline = /^\(\?([ims]+)\)/.exec(source);
    if (inline) {
      flags = [...new Set(inline[1])].join("");
      source = source.slice(inline[0].length);
    }
    source = source.replaceAll("(?P<", "(?<");
    try {
      return new RegExp(source, flags);
    } catch (err) {
      throw this.#error(pos, `bad regular expression: ${(err as Error).message}`);
    }
  }

  #pending: Token | undefined;

  #unscan(t: Token): void {
    this.#pending = t;
  }

  #scan(): Token {
    if (this.#pending) {
      const t = this.#pending;
      this.#pending = undefined;
      return t;
    }
    const s = this.input;
    while (this.#pos < s.length && SPACE.test(s[this.#pos]!)) this.#pos++;
    const pos = this.#pos;
    if (pos >= s.length) return { kind: "eof", pos };
    const c = s[pos]!;
    if (QUOTE_CHAR.test(c)) {
      this.#valueNext = false;
      return { kind: "quoted", pos, quote: c, text: this.#quoted(c) };
    }
    if (c === "," || c === ".") {
      this.#pos++;
      this.#valueNext = false;
      return { kind: "separator", pos, text: c };
    }
    if (OPERATOR_CHAR.test(c)) {
      while (this.#pos < s.length && OPERATOR_CHAR.test(s[this.#pos]!)) this.#pos++;
      this.#valueNext = true;
      return { kind: "operator", pos, text: s.slice(pos, this.#pos) };
    }
    if (this.#valueNext && !CONTROL.test(c)) {
      while (this.#pos < s.length && s[this.#pos] !== "," && !SPACE.test(s[this.#pos]!) && !CONTROL.test(s[this.#pos]!))
        this.#pos++;
      this.#valueNext = false;
      return { kind: "value", pos, text: s.slice(pos, this.#pos) };
    }
    if (FIELD_CHAR.test(c)) {
      while (this.#pos < s.length && FIELD_CHAR.test(s[this.#pos]!)) this.#pos++;
      return { kind: "field", pos, text: s.slice(pos, this.#pos) };
    }
    this.#pos++;
    return { kind: "other", pos, text: c };
  }

  /** Reads a quoted string starting at the delimiter `quote`, decoding Go escapes; returns its value. */
  #quoted(quote: string): string {
    const s = this.input;
    const start = this.#pos;
    const bytes: number[] = [];
    const utf8 = new TextEncoder();
    let i = start + 1;
    for (;;) {
      if (i >= s.length || s[i] === "\n") throw this.#error(start, "quoted string not terminated");
      const c = s[i]!;
      if (c === quote) break;
      if (c !== "\\") {
        const cp = s.codePointAt(i)!;
        const ch = String.fromCodePoint(cp);
        bytes.push(...utf8.encode(ch));
        i += ch.length;
        continue;
      }
      const e = s[i + 1];
      i += 2;
      const simple = e === undefined ? undefined : SIMPLE_ESCAPES[e];
      if (simple !== undefined) {
        bytes.push(simple);
      } else if (e === quote) {
        bytes.push(quote.charCodeAt(0));
      } else if (e !== undefined && e >= "0" && e <= "7") {
        const digits = s.slice(i - 1, i + 2);
        if (!/^[0-7]{3}$/.test(digits) || parseInt(digits, 8) > 255) throw this.#error(i - 2, "bad octal escape");
        bytes.push(parseInt(digits, 8));
        i += 2;
      } else if (e === "x" || e === "u" || e === "U") {
        const n = e === "x" ? 2 : e === "u" ? 4 : 8;
        const digits = s.slice(i, i + n);
        if (!new RegExp(`^[0-9a-fA-F]{${n}}$`).test(digits)) throw this.#error(i - 2, `bad \\${e} escape`);
        const v = parseInt(digits, 16);
        if (e === "x") bytes.push(v);
        else if (v > 0x10ffff) throw this.#error(i - 2, `bad \\${e} escape`);
        else bytes.push(...utf8.encode(String.fromCodePoint(v)));
        i += n;
      } else {
        throw this.#error(i - 2, "illegal escape sequence");
      }
    }
    this.#pos = i + 1;
    return new TextDecoder().decode(new Uint8Array(bytes));
  }

  #error(pos: number, reason: string): InvalidArgumentError {
    return new InvalidArgumentError(`Cannot parse filter "${this.input}": ${reason} at offset ${pos}`);
  }
}

const SIMPLE_ESCAPES: Record<string, number> = { a: 7, b: 8, f: 12, n: 10, r: 13, t: 9, v: 11, "\\": 92 };

function tokenText(t: Token): string {
  if (t.kind === "eof") return "the end";
  if (t.kind === "quoted") return `a string quoted with "${t.quote}"`;
  return `"${t.text}"`;
}

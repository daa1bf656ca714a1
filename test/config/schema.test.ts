/**
 * The `Config` type is computed from SCHEMA (src/config/schema.ts), so it cannot drift from it. Two halves:
 *
 * - Types, checked by `npm run typecheck` (tsc reads test/): the derivation itself on a small schema, enum keys
 *   typed as the union of their values, and `@ts-expect-error` lines that stop erroring, and so fail the
 *   typecheck, if a key became a plain `string` again or a key SCHEMA lacks were readable.
 * - Values, checked by `bun test`: the object the loader builds has exactly SCHEMA's keys at the paths the type
 *   says, with their defaults, and `config default` / `config dump` print every one of them.
 */
import { describe, expect, test } from "bun:test";
import {
  type EnumField,
  type FieldSpec,
  HOST_FIELDS,
  LOD_RULE_FIELDS,
  type LogLevel,
  MIRROR_FIELDS,
  SCHEMA,
  type SectionSpec,
} from "../../src/config/defaults.ts";
import { defaultConfig, parseConfig, renderToml } from "../../src/config/load.ts";
import type {
  Config,
  FieldsObject,
  HostConfig,
  LodRuleConfig,
  MirrorConfig,
  SectionsTree,
} from "../../src/config/schema.ts";

/** True when A and B are the same type (not merely assignable either way). */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
/** Compiles only for `true`. */
function assertType<_T extends true>(): void {}

describe("Config type", () => {
  test("is computed from a schema: fields by kind, dotted section paths nested", () => {
    const tiny = [
      {
        toml: "",
        ts: "",
        doc: "",
        fields: [
          { toml: "n", ts: "n", kind: "int", default: 1, doc: "", min: 0, max: 9 },
          { toml: "mode", ts: "mode", kind: "enum", default: "a", values: ["a", "b"], doc: "" },
        ],
      },
      {
        toml: "top",
        ts: "top",
        doc: "",
        fields: [{ toml: "on", ts: "on", kind: "bool", default: true, doc: "" }],
      },
      {
        toml: "top.inner",
        ts: "top.inner",
        doc: "",
        fields: [{ toml: "name", ts: "name", kind: "string", default: "", doc: "" }],
      },
    ] as const satisfies readonly SectionSpec[];
    assertType<
      Equal<
        SectionsTree<(typeof tiny)[number]>,
        { n: number; mode: "a" | "b"; top: { on: boolean; inner: { name: string } } }
      >
    >();
    assertType<Equal<FieldsObject<typeof MIRROR_FIELDS>, MirrorConfig>>();
  });

  test("enum keys are the union of their values; refused values are not among them", () => {
    assertType<Equal<Config["logLevel"], LogLevel>>();
    assertType<Equal<Config["metricsNetwork"], "tcp" | "unix">>();
    assertType<Equal<Config["fuse"]["opaqueXattr"], "trusted" | "user">>();
    assertType<Equal<Config["fuse"]["transport"], "workers">>();
    assertType<Equal<Config["backgroundFetch"]["dropPolicy"], "newest">>();
    assertType<Equal<HostConfig["mirrors"], MirrorConfig[]>>();
    assertType<Equal<Config["lod"]["replay"], Array<{ image: string; workload: string }>>>();
    assertType<Equal<Config["lod"]["record"], LodRuleConfig[]>>();
    const c: Config = defaultConfig();
    // Each line below is an error only while the key is an enum: typed `string`, the line would compile, and
    // tsc would report the unused @ts-expect-error.
    // @ts-expect-error "system" is not an opaque_xattr value
    c.fuse.opaqueXattr = "system";
    // @ts-expect-error "async" is refused by the schema, so it is not in the type
    c.fuse.transport = "async";
    // @ts-expect-error "loud" is not a log level
    c.logLevel = "loud";
    c.fuse.opaqueXattr = "user";
    expect(c.fuse.opaqueXattr).toBe("user");
  });

  test("keys SCHEMA lacks are not in the type; the kinds SCHEMA declares are", () => {
    const c = defaultConfig();
    // @ts-expect-error no [fuse] key is named this
    expect(c.fuse.readerThread).toBeUndefined();
    // @ts-expect-error attr_timeout is an "int", so not a string
    c.fuse.attrTimeoutSec = "1";
    // @ts-expect-error enable is a "bool"
    c.pullModes.sociV2.enable = 1;
    // @ts-expect-error a mirror's request_timeout_sec is an "int"
    const m: MirrorConfig = { host: "m", insecure: false, requestTimeoutSec: "0" };
    expect(m.host).toBe("m");
  });
});

/** [dotted TypeScript path, field] of every key of SCHEMA. */
function schemaKeys(): Array<[string, FieldSpec]> {
  const sections: readonly SectionSpec[] = SCHEMA;
  return sections.flatMap((s) => s.fields.map((f): [string, FieldSpec] => [s.ts ? `${s.ts}.${f.ts}` : f.ts, f]));
}

/** Dotted paths of every leaf (non-object value) of `tree`, arrays counting as leaves. */
function leafPaths(tree: object, prefix = ""): string[] {
  return Object.entries(tree).flatMap(([k, v]) => {
    const path = prefix ? `${prefix}.${k}` : k;
    return typeof v === "object" && v !== null && !Array.isArray(v) ? leafPaths(v, path) : [path];
  });
}

function at(tree: object, dotted: string): unknown {
  return dotted.split(".").reduce<unknown>((node, k) => (node as Record<string, unknown>)[k], tree);
}

describe("the configuration object", () => {
  test("has exactly SCHEMA's keys, each at its path with its default, and resolver.host", () => {
    const c = defaultConfig();
    const keys = schemaKeys();
    expect(keys.length).toBeGreaterThan(60);
    expect(leafPaths(c).sort()).toEqual(keys.map(([p]) => p).sort());
    expect(c.resolver).toEqual({ host: {} });
    for (const [path, f] of keys) expect([path, at(c, path)]).toEqual([path, f.default]);
  });

  test("names are unique: per table in TOML and TypeScript; no key shares a name with a table", () => {
    const sections: readonly SectionSpec[] = SCHEMA;
    for (const fields of [...sections.map((s) => s.fields), HOST_FIELDS, MIRROR_FIELDS, LOD_RULE_FIELDS]) {
      expect(new Set(fields.map((f) => f.toml)).size).toBe(fields.length);
      expect(new Set(fields.map((f) => f.ts)).size).toBe(fields.length);
    }
    expect(new Set(sections.map((s) => s.toml)).size).toBe(sections.length);
    expect(new Set(sections.map((s) => s.ts)).size).toBe(sections.length);
    // A key and a table of one name would make one property of two types in Config.
    const tables = new Set(sections.flatMap((s) => s.ts.split(".").map((_, i, a) => a.slice(0, i + 1).join("."))));
    for (const [path] of schemaKeys()) expect([path, tables.has(path)]).toEqual([path, false]);
    expect(tables.has("resolver")).toBe(false);
  });

  test("every enum's default is one of its values; every value loads, every refused one is refused", () => {
    const sections: readonly SectionSpec[] = SCHEMA;
    let enums = 0;
    for (const s of sections) {
      for (const f of s.fields.filter((f): f is EnumField => f.kind === "enum")) {
        enums++;
        const toml = (v: string) => `${s.toml ? `[${s.toml}]\n` : ""}${f.toml} = ${JSON.stringify(v)}\n`;
        expect(f.values).toContain(f.default);
        for (const v of f.values) expect(at(parseConfig(toml(v)), s.ts ? `${s.ts}.${f.ts}` : f.ts)).toBe(v);
        for (const [v, why] of Object.entries(f.refused ?? {})) expect(() => parseConfig(toml(v))).toThrow(why);
      }
    }
    expect(enums).toBe(5);
  });

  test("`config default` prints every key with its default; `config dump` every key with its value", () => {
    const sections: readonly SectionSpec[] = SCHEMA;
    const tomlValue = (v: unknown) =>
      Array.isArray(v) && v.length === 0 ? "[]" : typeof v === "string" ? JSON.stringify(v) : String(v);
    const tableLines = (text: string, table: string) => {
      const lines = text.split("\n");
      const start = table === "" ? 0 : lines.indexOf(`[${table}]`) + 1;
      const end = lines.findIndex((l, i) => i >= start && l.startsWith("["));
      return lines.slice(start, end === -1 ? undefined : end);
    };
    const dflt = renderToml();
    const changed = parseConfig(renderToml(defaultConfig()).replaceAll("= true", "= false"));
    const dump = renderToml(changed);
    for (const s of sections) {
      for (const f of s.fields) {
        expect(tableLines(dflt, s.toml)).toContain(`${f.toml} = ${tomlValue(f.default)}`);
        const path = s.ts ? `${s.ts}.${f.ts}` : f.ts;
        expect(tableLines(dump, s.toml)).toContain(`${f.toml} = ${tomlValue(at(changed, path))}`);
      }
    }
    expect(changed.snapshotter.enable).toBe(false);
  });
});

/**
 * The configuration tree's TypeScript type, computed from `SCHEMA` (src/config/defaults.ts), where every key, its
 * TOML spelling, its default and its meaning is declared once. Nothing here is written by hand per key, so the type
 * cannot drift from the schema: a key added, removed or renamed there is one here, an "int" is a `number`, and an
 * "enum" is the union of its values (`fuse.opaqueXattr` is `"trusted" | "user"`), which the loader has checked.
 * The meaning of each key is its `doc` in SCHEMA (`soci-ts config default` prints them).
 *
 * Where AWS's SOCI snapshotter has the same concept the TOML key is SOCI's (soci-formats-and-behaviour.md §5),
 * including its odd spellings (`[http] DialTimeoutMsec`), so an operator's knowledge carries over. TypeScript uses
 * camelCase; the mapping lives in SCHEMA only. test/config/schema.test.ts checks the type against SCHEMA.
 */
import type { FieldSpec, HOST_FIELDS, LOD_RULE_FIELDS, MIRROR_FIELDS, SCHEMA, SectionSpec } from "./defaults.ts";

/** The TypeScript type of a key's value: by its kind, and for an "enum" the union of its values. */
export type FieldValue<F extends FieldSpec> = F extends { kind: "bool" }
  ? boolean
  : F extends { kind: "int" }
    ? number
    : F extends { kind: "string" }
      ? string
      : F extends { kind: "enum"; values: readonly (infer V)[] }
        ? V
        : F extends { kind: "tables"; fields: infer Es extends readonly FieldSpec[] }
          ? Array<FieldsObject<Es>>
          : never;

/** One property per field of `Fs`, named by its `ts` and typed by FieldValue. */
export type FieldsObject<Fs extends readonly FieldSpec[]> = {
  [F in Fs[number] as F["ts"]]: FieldValue<F>;
};

/**
 * The tree of a union of sections `S`: the fields of the section at "" as properties, and one nested tree per
 * first segment of the other sections' dotted `ts` paths ("pullModes.sociV1" makes `pullModes: { sociV1: … }`).
 * (One mapped type, so that the recursion is deferred to each property.)
 */
export type SectionsTree<S extends SectionSpec> = {
  [K in TopFields<S>["ts"] | Head<Exclude<S["ts"], "">>]: K extends TopFields<S>["ts"]
    ? FieldValue<Extract<TopFields<S>, { ts: K }>>
    : Expand<SectionsTree<Under<S, K>>>;
};

/** The fields of the section of `S` at "". */
type TopFields<S extends SectionSpec> = Extract<S, { ts: "" }>["fields"][number];

/** The first segment of a dotted path. */
type Head<P extends string> = P extends `${infer H}.${string}` ? H : P;

/** The sections at or below `H`, with paths relative to it (`H` itself becomes ""). */
type Under<S extends SectionSpec, H extends string> = S extends SectionSpec
  ? S["ts"] extends H
    ? AtPath<S, "">
    : S["ts"] extends `${H}.${infer R}`
      ? AtPath<S, R>
      : never
  : never;

/** Section `S` moved to path `P`. */
type AtPath<S extends SectionSpec, P extends string> = { toml: S["toml"]; ts: P; doc: string; fields: S["fields"] };

/**
 * `T` (an intersection, or an instance of SectionsTree) as one object type written out property by property: what
 * editors and error messages then show instead of the aliases that made it.
 */
type Expand<T> = T extends infer O ? { [K in keyof O]: O[K] } : never;

/** One `mirrors = [{ … }]` entry of a `[resolver.host."<host>"]`: a pull-through cache tried before the origin. */
export type MirrorConfig = FieldsObject<typeof MIRROR_FIELDS>;

/** One `[lod] replay` or `[lod] record` rule: an image reference pattern and a workload name. */
export type LodRuleConfig = FieldsObject<typeof LOD_RULE_FIELDS>;

/** The settings of one registry host, `[resolver.host."<host>"]`: HOST_FIELDS and its mirrors, in order. */
export type HostConfig = Expand<FieldsObject<typeof HOST_FIELDS> & { mirrors: MirrorConfig[] }>;

/** The whole configuration: SCHEMA's tree, plus `resolver.host`, a map of host name to HostConfig. */
export type Config = Expand<SectionsTree<(typeof SCHEMA)[number]> & { resolver: { host: Record<string, HostConfig> } }>;

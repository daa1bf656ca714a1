import { describe, expect, test } from "bun:test";
import {
  type FieldSpec,
  type IntField,
  MIRROR_FIELDS,
  SCHEMA,
  WORKLOAD_NAME_CONFIG_RE,
  WORKLOAD_NAME_OR_EMPTY_RE,
} from "../../src/config/defaults.ts";
import { defaultConfig, parseConfig, renderToml } from "../../src/config/load.ts";
import { WORKLOAD_NAME_RE } from "../../src/soci/lod.ts";
import { ConfigError } from "../../src/util/errors.ts";

function expectKeyError(text: string, key: string, source?: string): ConfigError {
  try {
    parseConfig(text, source);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).key).toBe(key);
    expect((err as ConfigError).message).toContain(key);
    return err as ConfigError;
  }
  throw new Error(`parseConfig accepted ${JSON.stringify(text)}`);
}

describe("parseConfig()", () => {
  test("empty text gives the defaults", () => {
    expect(parseConfig("")).toEqual(defaultConfig());
    const c = defaultConfig();
    expect(c.index.spanSize).toBe(262144);
    expect(c.index.minLayerSize).toBe(10485760);
    expect(c.backgroundFetch.fetchPeriodMsec).toBe(500);
    expect(c.http.maxRetries).toBe(8);
    expect(c.pullModes.sociV2.enable).toBe(true);
  });

  test("overlays values, including SOCI's spellings and nested tables", () => {
    const c = parseConfig(`
      log_level = "debug"
      [http]
      RequestTimeoutMsec = 5000
      [background_fetch]
      disable = true
      [pull_modes.soci_v1]
      enable = false
      [resolver.host."docker.io"]
      mirrors = [{ host = "mirror.local:5000", insecure = true }]
      [resolver.host."127.0.0.1:5000"]
      username = "u"
      password = "p"
    `);
    expect(c.logLevel).toBe("debug");
    expect(c.http.requestTimeoutMsec).toBe(5000);
    expect(c.http.dialTimeoutMsec).toBe(3000);
    expect(c.backgroundFetch.disable).toBe(true);
    expect(c.pullModes.sociV1.enable).toBe(false);
    expect(c.resolver.host["docker.io"]!.mirrors).toEqual([
      { host: "mirror.local:5000", insecure: true, requestTimeoutSec: 0 },
    ]);
    expect(c.resolver.host["127.0.0.1:5000"]!.username).toBe("u");
  });

  test("unknown keys are named", () => {
    expectKeyError("nope = 1", "nope");
    expectKeyError("[background_fetch]\nfetch_perod_msec = 3", "background_fetch.fetch_perod_msec");
    expectKeyError("[pull_modes.soci_v3]\nenable = true", "pull_modes.soci_v3");
    expectKeyError('[resolver.host."h"]\nmirrors = [{ hots = "x" }]', 'resolver.host."h".mirrors[0].hots');
  });

  test("wrong types and bad values are named", () => {
    expect(expectKeyError('[fuse]\nattr_timeout = "1"', "fuse.attr_timeout").message).toContain(
      'expected an integer, got "1"',
    );
    expectKeyError("debug = 1", "debug");
    expectKeyError('log_level = "loud"', "log_level");
    expectKeyError("[index]\nspan_size = 0", "index.span_size");
    expectKeyError("[index]\nspan_size = 1.5", "index.span_size");
    expectKeyError("fuse = 3", "fuse");
    expectKeyError('[resolver.host."h"]\nmirrors = [{ insecure = true }]', 'resolver.host."h".mirrors[0].host');
  });

  test('[fuse] transport "async" is refused, naming the key and why (it hung serve; only "workers" serves)', () => {
    const err = expectKeyError('[fuse]\ntransport = "async"', "fuse.transport");
    expect(err.message).toContain('"async" transport');
    expect(err.message).toContain("thread pool");
    expect(err.message).toContain('use "workers"');
    expect(parseConfig('[fuse]\ntransport = "workers"').fuse.transport).toBe("workers");
  });

  test('[store] lod takes a workload name or "" (none); anything else is refused naming the key, on one line', () => {
    expect(defaultConfig().store.lod).toBe("");
    for (const name of ["python", "web-1.2_x", "A", "a".repeat(128)])
      expect(parseConfig(`[store]\nlod = "${name}"`).store.lod).toBe(name);
    const hostile = ["../etc", "a/b", ".hidden", "-x", "a b", "a".repeat(129), "x\n[store]", "é", "a:b", "*"];
    for (const name of hostile) {
      const err = expectKeyError(`[store]\nlod = ${JSON.stringify(name)}`, "store.lod", "/etc/soci-ts/config.toml");
      expect(err.message).toStartWith(
        'Cannot load config key "store.lod" from "/etc/soci-ts/config.toml": expected a workload name',
      );
      expect(err.message).not.toContain("\n");
      expect(err.message.length).toBeLessThan(300);
    }
    expectKeyError("[store]\nlod = 1", "store.lod");
    // The same names as soci-ts's workload names (soci/lod.ts, which config may not import), "" aside.
    for (const name of ["python", ...hostile])
      expect(WORKLOAD_NAME_OR_EMPTY_RE.test(name)).toBe(WORKLOAD_NAME_RE.test(name));
  });

  test("[lod] replay and record are ordered lists of { image, workload } rules; each bad entry names its key", () => {
    const c = parseConfig(`
      [lod]
      replay = [{ image = "registry.example/app/*", workload = "web" }, { workload = "py", image = "docker.io/library/python:**" }]
      record = [{ image = "**", workload = "all" }]
      record_quiet_sec = 2
    `);
    expect(c.lod.replay).toEqual([
      { image: "registry.example/app/*", workload: "web" },
      { image: "docker.io/library/python:**", workload: "py" },
    ]);
    expect(c.lod.record).toEqual([{ image: "**", workload: "all" }]);
    expect(c.lod.recordQuietSec).toBe(2);
    expect(c.lod.recordMaxSec).toBe(600);
    // Defaults are fresh lists, never shared between configs.
    const d = defaultConfig();
    d.lod.replay.push({ image: "a/b", workload: "w" });
    expect(defaultConfig().lod.replay).toEqual([]);
    // A dump loads back to the same rules.
    expect(parseConfig(renderToml(c)).lod).toEqual(c.lod);
    const bad: Array<[string, string, string]> = [
      ['replay = [{ image = "python:*", workload = "web" }]', "lod.replay[0].image", "with its registry host"],
      ['replay = [{ image = "a/b c", workload = "web" }]', "lod.replay[0].image", "image reference pattern"],
      ['replay = [{ image = "", workload = "web" }]', "lod.replay[0].image", "image reference pattern"],
      ['replay = [{ image = "a/b", workload = "w" }, { image = "a/b" }]', "lod.replay[1].workload", "missing"],
      ['record = [{ image = "a/b", workload = "../x" }]', "lod.record[0].workload", "expected a workload name"],
      ['record = [{ image = "a/b", workload = "" }]', "lod.record[0].workload", "expected a workload name"],
      ['replay = [{ image = "a/b", workload = "w", lod = "x" }]', "lod.replay[0].lod", "unknown key"],
      ['replay = { image = "a/b", workload = "w" }', "lod.replay", "expected an array of tables"],
      ['replay = ["a/b"]', "lod.replay[0]", "expected a table"],
      ["record_quiet_sec = -1", "lod.record_quiet_sec", "under its minimum"],
    ];
    for (const [line, key, why] of bad) {
      const err = expectKeyError(`[lod]\n${line}`, key, "/etc/soci-ts/config.toml");
      expect(err.message).toContain(why);
      expect(err.message).not.toContain("\n");
    }
    // A rule's workload is a workload name as soci/lod.ts spells it.
    for (const name of ["python", "", "../etc", "-x", "a".repeat(128), "a".repeat(129), "é"])
      expect(WORKLOAD_NAME_CONFIG_RE.test(name)).toBe(WORKLOAD_NAME_RE.test(name));
  });

  test("TOML syntax errors say so, on one line naming the file, the line and its text", () => {
    expect(() => parseConfig("[http\n")).toThrow(/Cannot parse config/);
    const err = (() => {
      try {
        parseConfig("[http]\nMaxRetries = 99999999999999999999\n", "/etc/c.toml");
      } catch (e) {
        return e as Error;
      }
    })();
    expect(err?.message).toBe(
      'Cannot parse config "/etc/c.toml": integer value cannot be represented losslessly (line 2: "MaxRetries = 99999999999999999999")',
    );
    expect(err?.cause).toBeUndefined(); // smol-toml's message draws the line over several more
  });

  test("every integer key has bounds; a value past them is refused naming the key, the file and the bound", () => {
    const isInt = <F extends FieldSpec>(f: F): f is Extract<F, IntField> => f.kind === "int";
    const ints: Array<{ f: IntField; dotted: string; toml: (v: number) => string }> = [
      ...SCHEMA.flatMap((sec) =>
        sec.fields.filter(isInt).map((f) => ({
          f,
          dotted: sec.toml ? `${sec.toml}.${f.toml}` : f.toml,
          toml: (v: number) => `${sec.toml ? `[${sec.toml}]\n` : ""}${f.toml} = ${v}\n`,
        })),
      ),
      ...MIRROR_FIELDS.filter(isInt).map((f) => ({
        f,
        dotted: `resolver.host."h".mirrors[0].${f.toml}`,
        toml: (v: number) => `[resolver.host."h"]\nmirrors = [{ host = "m", ${f.toml} = ${v} }]\n`,
      })),
    ];
    expect(ints.length).toBeGreaterThan(25);
    for (const { f, dotted, toml } of ints) {
      expect([f.toml, f.min <= f.default && f.default <= f.max]).toEqual([f.toml, true]);
      expect(() => parseConfig(toml(f.min), "/c.toml")).not.toThrow();
      expect(() => parseConfig(toml(f.max), "/c.toml")).not.toThrow();
      const over = expectKeyError(toml(f.max + 1), dotted, "/c.toml");
      expect(over.message).toBe(
        `Cannot load config key "${dotted}" from "/c.toml": ${f.max + 1} is over its maximum ${f.max}`,
      );
      const under = expectKeyError(toml(f.min - 1), dotted, "/c.toml");
      expect(under.message).toBe(
        `Cannot load config key "${dotted}" from "/c.toml": ${f.min - 1} is under its minimum ${f.min}`,
      );
    }
    // TOML's float syntax for an integral value is taken at its value, and bounded like any other
    expect(expectKeyError("[http]\nMaxRetries = 1e9", "http.MaxRetries").message).toBe(
      'Cannot load config key "http.MaxRetries": 1000000000 is over its maximum 100',
    );
  });
});

describe("renderToml()", () => {
  test("the default TOML parses back to the defaults, with a comment per key", () => {
    const text = renderToml();
    expect(parseConfig(text)).toEqual(defaultConfig());
    const keys = text.split("\n").filter((l) => /^\w+ = /.test(l));
    const comments = text.split("\n").filter((l) => l.startsWith("# ") && l.includes("(default "));
    expect(keys.length).toBeGreaterThan(40);
    expect(comments.length).toBe(keys.length);
  });

  test("a dump of a loaded config round-trips, hosts included", () => {
    const c = parseConfig(
      '[fuse]\nentry_timeout = 7\n[resolver.host."r:1"]\nplain_http = true\nmirrors = [{ host = "m:2" }]',
    );
    expect(parseConfig(renderToml(c))).toEqual(c);
  });
});

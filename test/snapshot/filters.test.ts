import { describe, expect, test } from "bun:test";
import { parseFilter, parseFilters } from "../../src/snapshot/filters.ts";
import type { SnapshotInfo } from "../../src/snapshot/types.ts";
import { InvalidArgumentError } from "../../src/util/errors.ts";

function info(
  name: string,
  parent: string,
  kind: SnapshotInfo["kind"],
  labels: Record<string, string> = {},
): SnapshotInfo {
  return { name, parent, kind, labels, created: new Date(0), updated: new Date(0) };
}

const L1 = info("sha256:l1", "", "committed", {
  "containerd.io/snapshot.ref": "sha256:l1",
  "containerd.io/snapshot/remote": "remote snapshot",
});
const L2 = info("default/4/sha256:l2", "sha256:l1", "committed", {
  "containerd.io/snapshot.ref": "sha256:l2",
  a: "1",
  "a.b": "2",
});
const ACT = info("default/5/extract-1 sha256:l3", "default/4/sha256:l2", "active", {
  "containerd.io/snapshot.ref": "sha256:l3",
});
const VIEW = info("k8s.io/9/view", "", "view");
const ALL = [L1, L2, ACT, VIEW];

function names(filters: string[]): string[] {
  const f = parseFilters(filters);
  return ALL.filter((i) => f.matchSnapshot(i)).map((i) => i.name);
}

describe("filters: parsing", () => {
  test("selectors, field paths, operators and quoted parts", () => {
    expect(parseFilter(`name==foo`)).toEqual([{ fieldpath: ["name"], operator: "==", value: "foo" }]);
    expect(parseFilter(`labels.a.b`)).toEqual([{ fieldpath: ["labels", "a", "b"], operator: "present", value: "" }]);
    expect(parseFilter(`labels."containerd.io/snapshot.ref"==sha256:abc,parent=="default/3/sha256:def"`)).toEqual([
      { fieldpath: ["labels", "containerd.io/snapshot.ref"], operator: "==", value: "sha256:abc" },
      { fieldpath: ["parent"], operator: "==", value: "default/3/sha256:def" },
    ]);
    expect(parseFilter(`kind!=view`)[0]).toMatchObject({ operator: "!=", value: "view" });
    // Values run to the next comma: "=", ":" and "." inside are part of them.
    expect(parseFilter(`labels.x==a=b.c:d,name`)).toEqual([
      { fieldpath: ["labels", "x"], operator: "==", value: "a=b.c:d" },
      { fieldpath: ["name"], operator: "present", value: "" },
    ]);
  });

  test("Go escapes in quoted strings, and /…/ or |…| after ~=", () => {
    expect(parseFilter(`name=="a\\"b\\tc\\x41\\u00e9\\101\\\\"`)[0]!.value).toBe('a"b\tcAé' + "A\\");
    const [s] = parseFilter(`name~=/^default\\/[0-9]+/`);
    expect(s!.value).toBe("^default/[0-9]+");
    expect(s!.re!.test("default/12/x")).toBe(true);
    expect(parseFilter(`name~=|a/b|`)[0]!.value).toBe("a/b");
    expect(() => parseFilter(`name~=|a|b|`)).toThrow(/unexpected input "b"/);
  });

  test("white space around separators and operators is allowed", () => {
    expect(parseFilter(` name == foo , kind==view `)).toEqual([
      { fieldpath: ["name"], operator: "==", value: "foo" },
      { fieldpath: ["kind"], operator: "==", value: "view" },
    ]);
  });

  const bad: Array<[string, RegExp]> = [
    [`name=`, /unsupported operator "="/],
    [`name===x`, /unsupported operator "==="/],
    [`name==`, /expected a value/],
    [`==x`, /expected a field name/],
    [`name==x,`, /expected a field name/],
    [`name==x y`, /unexpected input "y"/],
    [`labels./x/==1`, /expected a field name/],
    [`name==/x/`, /only allowed after "~="/],
    [`name=="x`, /not terminated/],
    [`name=="\\q"`, /illegal escape/],
    [`name=="\\x4"`, /bad \\x escape/],
    [`name~=(`, /bad regular expression/],
    [`labels.a:b`, /expected an operator/],
    [`   `, /expected a field name/],
  ];
  for (const [f, why] of bad) {
    test(`refused: ${f}`, () => {
      expect(() => parseFilters([f])).toThrow(InvalidArgumentError);
      expect(() => parseFilters([f])).toThrow(why);
      expect(() => parseFilters([f])).toThrow(`Cannot parse filter "${f}"`);
    });
  }

  test("every alternative is checked, even next to an empty (match-all) one", () => {
    expect(() => parseFilters(["", "name=="])).toThrow(InvalidArgumentError);
  });
});

describe("filters: matching snapshots", () => {
  test("no filters, or an empty one, match everything", () => {
    expect(names([])).toHaveLength(4);
    expect(names([""])).toHaveLength(4);
    expect(names(["name==nothing", ""])).toHaveLength(4);
  });

  test("kind, name, parent", () => {
    expect(names(["kind==committed"])).toEqual([L1.name, L2.name]);
    expect(names(["kind==active"])).toEqual([ACT.name]);
    expect(names(["kind!=committed"])).toEqual([ACT.name, VIEW.name]);
    expect(names([`parent==""`])).toEqual([L1.name, VIEW.name]);
    expect(names([`name=="default/5/extract-1 sha256:l3"`])).toEqual([ACT.name]);
  });

  test("containerd's remote-snapshot lookup", () => {
    expect(names([`labels."containerd.io/snapshot.ref"==sha256:l2,parent=="sha256:l1"`])).toEqual([L2.name]);
    expect(names([`labels."containerd.io/snapshot.ref"==sha256:l2,parent=="sha256:other"`])).toEqual([]);
    expect(names([`labels."containerd.io/snapshot/remote"`])).toEqual([L1.name]);
  });

  test("label presence, absence with != and unquoted dotted keys", () => {
    expect(names(["labels.a"])).toEqual([L2.name]);
    expect(names(["labels.a.b==2"])).toEqual([L2.name]);
    expect(names(["labels.a!=1"])).toEqual([L1.name, ACT.name, VIEW.name]); // absent reads as ""
    expect(names([`labels.a==""`, "labels.a!=1"]).length).toBe(3);
  });

  test("regular expressions: unanchored, Go inline flags", () => {
    expect(names(["name~=sha256:l"])).toEqual([L1.name, L2.name, ACT.name]);
    expect(names(["name~=^sha256"])).toEqual([L1.name]);
    expect(names(["name~=(?i)^K8S"])).toEqual([VIEW.name]);
    expect(names([`labels.a~="^$"`])).toEqual([L1.name, ACT.name, VIEW.name]);
  });

  test("comma is AND, several strings are OR; unknown fields are absent", () => {
    expect(names(["kind==committed,labels.a"])).toEqual([L2.name]);
    expect(names(["kind==view", "labels.a"])).toEqual([L2.name, VIEW.name]);
    expect(names(["size==0"])).toEqual([]);
    expect(names(["size!=0"])).toHaveLength(4);
  });
});

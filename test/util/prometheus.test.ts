import { describe, expect, test } from "bun:test";
import { InvalidArgumentError } from "../../src/util/errors.ts";
import { exponentialBuckets, MetricRegistry, parseExposition } from "../../src/util/prometheus.ts";

describe("Prometheus text exposition", () => {
  test("counters, gauges and histograms print as the 0.0.4 text format says", () => {
    const r = new MetricRegistry();
    const c = r.counter("app_requests_total", "Requests served", ["code"]);
    const g = r.gauge("app_temperature", "Degrees");
    const h = r.histogram("app_latency_ms", "Latency", { labelNames: ["op"], bounds: [1, 2, 4] });
    c.labels("200").inc();
    c.labels("200").inc(2);
    c.labels("500").inc();
    c.labels("500").inc(-5); // a counter never goes down
    g.set(-1.5);
    for (const v of [0.5, 1, 3, 100]) h.labels("get").observe(v);
    expect(r.expose()).toBe(
      [
        "# HELP app_requests_total Requests served",
        "# TYPE app_requests_total counter",
        'app_requests_total{code="200"} 3',
        'app_requests_total{code="500"} 1',
        "# HELP app_temperature Degrees",
        "# TYPE app_temperature gauge",
        "app_temperature -1.5",
        "# HELP app_latency_ms Latency",
        "# TYPE app_latency_ms histogram",
        'app_latency_ms_bucket{op="get",le="1"} 2',
        'app_latency_ms_bucket{op="get",le="2"} 2',
        'app_latency_ms_bucket{op="get",le="4"} 3',
        'app_latency_ms_bucket{op="get",le="+Inf"} 4',
        'app_latency_ms_sum{op="get"} 104.5',
        'app_latency_ms_count{op="get"} 4',
        "",
      ].join("\n"),
    );
  });

  test("label values and help are escaped; special values print as +Inf, -Inf, NaN", () => {
    const r = new MetricRegistry();
    const g = r.gauge("x", 'help with \\ and\nnewline "quotes"', ["path"]);
    g.labels('a"b\\c\nd').set(Infinity);
    g.labels("n").set(NaN);
    g.labels("m").set(-Infinity);
    const text = r.expose();
    expect(text).toContain('# HELP x help with \\\\ and\\nnewline "quotes"\n');
    expect(text).toContain('x{path="a\\"b\\\\c\\nd"} +Inf\n');
    expect(text).toContain('x{path="n"} NaN\n');
    expect(text).toContain('x{path="m"} -Inf\n');
    // What we print, we read back.
    const parsed = parseExposition(text);
    expect(parsed.get('x{path="a\\"b\\\\c\\nd"}')).toBe(Infinity);
    expect(parsed.get('x{path="m"}')).toBe(-Infinity);
  });

  test("families without series print nothing; removed series disappear", () => {
    const r = new MetricRegistry();
    const c = r.counter("ops", "Ops", ["op", "layer"]);
    r.gauge("empty", "Nothing yet");
    c.labels("read", "sha256:a").inc();
    c.labels("read", "sha256:b").inc();
    r.removeWhere("layer", "sha256:a");
    expect(r.expose()).toBe('# HELP ops Ops\n# TYPE ops counter\nops{op="read",layer="sha256:b"} 1\n');
  });

  test("collectors run before each exposition, and stop when removed", () => {
    const r = new MetricRegistry();
    const g = r.gauge("live", "Set at scrape time");
    let n = 0;
    const stop = r.addCollector(() => g.set(++n));
    expect(parseExposition(r.expose()).get("live")).toBe(1);
    expect(parseExposition(r.expose()).get("live")).toBe(2);
    stop();
    expect(parseExposition(r.expose()).get("live")).toBe(2);
  });

  test("a kept child is the same object: counting on it costs an addition", () => {
    const r = new MetricRegistry();
    const c = r.counter("hits", "Hits", ["layer"]);
    expect(c.labels("a")).toBe(c.labels("a"));
    expect(c.labels("a")).not.toBe(c.labels("b"));
  });

  test("bad names, labels, label counts and bucket bounds are refused", () => {
    const r = new MetricRegistry();
    expect(() => r.counter("1bad", "x")).toThrow(InvalidArgumentError);
    expect(() => r.counter("ok", "x", ["le"])).toThrow(/label "le"/);
    expect(() => r.counter("ok2", "x", ["__x"])).toThrow(InvalidArgumentError);
    r.counter("dup", "x");
    expect(() => r.gauge("dup", "x")).toThrow(/name is taken/);
    const c = r.counter("two", "x", ["a", "b"]);
    expect(() => c.labels("only one")).toThrow(/1 values for labels \["a","b"\]/);
    expect(() => r.histogram("h", "x", { bounds: [2, 1] })).toThrow(/ascending/);
  });

  test("exponential buckets are SOCI's 1, 2, 4 … 16384", () => {
    const b = exponentialBuckets(1, 2, 15);
    expect(b[0]).toBe(1);
    expect(b.at(-1)).toBe(16384);
    expect(b.length).toBe(15);
  });

  test("parseExposition refuses a malformed line", () => {
    expect(() => parseExposition('x{a="1"}\n')).toThrow(/Cannot parse metrics line/);
  });
});

/**
 * Prometheus metrics in memory and their text exposition (format 0.0.4), small enough to own: counters, gauges
 * and histograms with labels, in a registry that prints them. No I/O; the HTTP side is src/service.
 *
 * Text format, one family after the other (https://prometheus.io/docs/instrumenting/exposition_formats/):
 *   # HELP <name> <help, "\" and newline escaped>
 *   # TYPE <name> counter|gauge|histogram
 *   <name>{<label>="<value, "\", '"' and newline escaped>",…} <value>
 * A histogram's series are `<name>_bucket{…,le="<bound>"}` (cumulative counts, the last `le="+Inf"`),
 * `<name>_sum` and `<name>_count`. Values print as JavaScript numbers, `+Inf`, `-Inf` or `NaN`.
 *
 * Cost on hot paths: `labels(…)` looks a child up in a Map (callers keep the child), and a child's `inc` is one
 * addition; `observe` walks the bucket bounds (a dozen comparisons).
 */
import { InvalidArgumentError } from "./errors.ts";

/** The three metric types this module has. */
export type MetricType = "counter" | "gauge" | "histogram";

const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const KEY_SEP = "\u0000";

/** One counter series: a value that only goes up. */
export class CounterChild {
  /** The current value. */
  value = 0;
  /** Add `n` (default 1); negative `n` is ignored (a counter never goes down). */
  inc(n = 1): void {
    if (n > 0) this.value += n;
  }
}

/** One gauge series: a value that goes up and down. */
export class GaugeChild {
  /** The current value. */
  value = 0;
  /** Set the value. */
  set(v: number): void {
    this.value = v;
  }
  /** Add `n` (default 1). */
  inc(n = 1): void {
    this.value += n;
  }
  /** Subtract `n` (default 1). */
  dec(n = 1): void {
    this.value -= n;
  }
}

/** One histogram series: observations counted in buckets by upper bound. */
export class HistogramChild {
  /** Observations per bucket (not cumulative); the last slot is the +Inf bucket. */
  readonly counts: number[];
  /** Sum of the observed values. */
  sum = 0;
  /** Number of observations. */
  count = 0;
  readonly #bounds: readonly number[];

  constructor(bounds: readonly number[]) {
    this.#bounds = bounds;
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }

  /** Record one observation `v`. */
  observe(v: number): void {
    const b = this.#bounds;
    let i = 0;
    while (i < b.length && v > b[i]!) i++;
    this.counts[i]!++;
    this.sum += v;
    this.count++;
  }
}

type Child = CounterChild | GaugeChild | HistogramChild;

/** A metric family: a name, its help, its label names, and one child per set of label values. */
export abstract class Family<C extends Child> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  abstract readonly type: MetricType;
  readonly #children = new Map<string, { values: readonly string[]; child: C }>();

  constructor(name: string, help: string, labelNames: readonly string[]) {
    if (!NAME_RE.test(name)) throw new InvalidArgumentError(`Cannot define metric "${name}": not a valid metric name`);
    for (const l of labelNames) {
      if (!LABEL_RE.test(l) || l.startsWith("__") || l === "le")
        throw new InvalidArgumentError(`Cannot define metric "${name}": label "${l}" is not a valid label name`);
    }
    this.name = name;
    this.help = help;
    this.labelNames = labelNames;
  }

  protected abstract make(): C;

  /**
   * The child for these label values (one per label name, in order), made on first use. Keep it: `inc` on a
   * kept child costs an addition. Throws InvalidArgumentError when the number of values is wrong.
   */
  labels(...values: string[]): C {
    const key = values.join(KEY_SEP);
    const found = this.#children.get(key);
    if (found) return found.child;
    if (values.length !== this.labelNames.length) {
      throw new InvalidArgumentError(
        `Cannot label metric "${this.name}": ${values.length} values for labels ${JSON.stringify(this.labelNames)}`,
      );
    }
    const child = this.make();
    this.#children.set(key, { values: [...values], child });
    return child;
  }

  /** Drop the child of these label values, if any. */
  remove(...values: string[]): void {
    this.#children.delete(values.join(KEY_SEP));
  }

  /** Drop every child whose label `labelName` has value `value` (a layer that closed). */
  removeWhere(labelName: string, value: string): void {
    const i = this.labelNames.indexOf(labelName);
    if (i < 0) return;
    for (const [k, e] of this.#children) if (e.values[i] === value) this.#children.delete(k);
  }

  /** Drop every child (for gauges set afresh at each collection). */
  reset(): void {
    this.#children.clear();
  }

  /** Children with their label values, in the order they were made. */
  children(): Array<{ values: readonly string[]; child: C }> {
    return [...this.#children.values()];
  }

  /** This family in the text format (HELP, TYPE and every series); "" when it has no series. */
  expose(): string {
    if (this.#children.size === 0) return "";
    const lines = [`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} ${this.type}`];
    for (const { values, child } of this.#children.values()) this.exposeChild(lines, values, child);
    return `${lines.join("\n")}\n`;
  }

  protected exposeChild(lines: string[], values: readonly string[], child: C): void {
    lines.push(`${this.name}${labelText(this.labelNames, values)} ${formatValue((child as CounterChild).value)}`);
  }
}

/** A counter family. With no label names, `inc` counts on its only series. */
export class Counter extends Family<CounterChild> {
  readonly type = "counter";
  protected make(): CounterChild {
    return new CounterChild();
  }
  /** `labels().inc(n)` for a family without labels. */
  inc(n = 1): void {
    this.labels().inc(n);
  }
}

/** A gauge family. With no label names, `set` sets its only series. */
export class Gauge extends Family<GaugeChild> {
  readonly type = "gauge";
  protected make(): GaugeChild {
    return new GaugeChild();
  }
  /** `labels().set(v)` for a family without labels. */
  set(v: number): void {
    this.labels().set(v);
  }
}

/** A histogram family with fixed upper bounds (ascending, finite; +Inf is implied). */
export class Histogram extends Family<HistogramChild> {
  readonly type = "histogram";
  readonly bounds: readonly number[];

  constructor(name: string, help: string, opts: { labelNames?: readonly string[]; bounds: readonly number[] }) {
    super(name, help, opts.labelNames ?? []);
    const { bounds } = opts;
    for (let i = 0; i < bounds.length; i++) {
      if (!Number.isFinite(bounds[i]!) || (i > 0 && bounds[i]! <= bounds[i - 1]!))
        throw new InvalidArgumentError(`Cannot define histogram "${name}": bounds must be finite and ascending`);
    }
    this.bounds = bounds;
  }

  protected make(): HistogramChild {
    return new HistogramChild(this.bounds);
  }

  protected override exposeChild(lines: string[], values: readonly string[], child: HistogramChild): void {
    const names = [...this.labelNames, "le"];
    let cumulative = 0;
    for (let i = 0; i <= this.bounds.length; i++) {
      cumulative += child.counts[i]!;
      const le = i < this.bounds.length ? formatValue(this.bounds[i]!) : "+Inf";
      lines.push(`${this.name}_bucket${labelText(names, [...values, le])} ${cumulative}`);
    }
    const l = labelText(this.labelNames, values);
    lines.push(`${this.name}_sum${l} ${formatValue(child.sum)}`);
    lines.push(`${this.name}_count${l} ${child.count}`);
  }
}

/** `count` bounds `start`, `start·factor`, … (e.g. 1, 2, 4 … 16384 for SOCI's millisecond histograms). */
export function exponentialBuckets(start: number, factor: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => start * factor ** i);
}

/**
 * A set of families printed together, plus collectors: functions run before each exposition that set gauges
 * from live objects (the layers mounted now, the process's resident memory).
 */
export class MetricRegistry {
  readonly #families = new Map<string, Family<Child>>();
  readonly #collectors = new Set<() => void>();

  /** A new counter family. Throws InvalidArgumentError for a bad or taken name. */
  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    return this.#add(new Counter(name, help, labelNames));
  }

  /** A new gauge family. Throws like `counter`. */
  gauge(name: string, help: string, labelNames: readonly string[] = []): Gauge {
    return this.#add(new Gauge(name, help, labelNames));
  }

  /** A new histogram family with upper bounds `opts.bounds`. Throws like `counter`. */
  histogram(
    name: string,
    help: string,
    opts: { labelNames?: readonly string[]; bounds: readonly number[] },
  ): Histogram {
    return this.#add(new Histogram(name, help, opts));
  }

  /** Run `collect` before every exposition (until the returned function is called). */
  addCollector(collect: () => void): () => void {
    this.#collectors.add(collect);
    return () => this.#collectors.delete(collect);
  }

  /** Drop every series, of every family, whose label `labelName` is `value`. */
  removeWhere(labelName: string, value: string): void {
    for (const f of this.#families.values()) f.removeWhere(labelName, value);
  }

  /** The family called `name`, if any. */
  get(name: string): Family<Child> | undefined {
    return this.#families.get(name);
  }

  /** Every family in the text format, collectors run first (one that throws is skipped). */
  expose(): string {
    for (const c of this.#collectors) {
      try {
        c();
      } catch {
        // A collector that fails leaves its gauges as they were; the rest is still worth serving.
      }
    }
    let out = "";
    for (const f of this.#families.values()) out += f.expose();
    return out;
  }

  #add<F extends Family<Child>>(f: F): F {
    if (this.#families.has(f.name))
      throw new InvalidArgumentError(`Cannot define metric "${f.name}": the name is taken`);
    this.#families.set(f.name, f);
    return f;
  }
}

/** The Content-Type of the text format. */
export const EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/**
 * Parse text in the exposition format into `name{labels}` → value (comments skipped); for tests and
 * `soci-ts status`. Label sets are kept as printed. Throws InvalidArgumentError on a malformed line.
 */
export function parseExposition(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?) (\S+)$/.exec(line);
    if (!m) throw new InvalidArgumentError(`Cannot parse metrics line "${line}"`);
    const v = m[2]!;
    out.set(m[1]!, v === "+Inf" ? Infinity : v === "-Inf" ? -Infinity : Number(v));
  }
  return out;
}

function labelText(names: readonly string[], values: readonly string[]): string {
  if (names.length === 0) return "";
  return `{${names.map((n, i) => `${n}="${escapeLabel(values[i]!)}"`).join(",")}}`;
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

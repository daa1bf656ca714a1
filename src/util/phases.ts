/**
 * Named instants of one flow (a mount), in `performance.now()` milliseconds: the time since the process started,
 * so the first mark also shows what starting the process cost. Flows whose steps overlap mark them as they end;
 * a name marked again (the last of several layers, zTOCs) keeps its latest instant. Web-standard, no I/O.
 */
export class Phases {
  readonly #at = new Map<string, number>();

  /** Notes that `name` ended now (its latest instant is kept). */
  mark(name: string): void {
    this.#at.set(name, performance.now());
  }

  /** Milliseconds since process start when `name` was last marked, or undefined. */
  at(name: string): number | undefined {
    return this.#at.get(name);
  }

  /** Every phase with its instant (ms since process start, rounded), earliest first. */
  list(): Array<[string, number]> {
    return [...this.#at].sort((a, b) => a[1] - b[1]).map(([k, v]) => [k, Math.round(v)]);
  }
}

/** A callback taking phase marks (`Phases.mark`), for library code that reports its steps. */
export type PhaseMark = (name: string) => void;

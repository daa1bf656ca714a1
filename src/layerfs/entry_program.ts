/**
 * The image's entry program and what it loads before it does anything (its script interpreter, its ELF
 * interpreter, its shared libraries), fetched as soon as the layers holding them are open: a container that runs
 * its image's own program reads all of them first, one page fault after another, and cold each is a span round
 * trip, while the link is idle between the pull and the start (bench:containerd: the python binary and its five
 * libraries, 4 MB, fetched in the ~0.45 s containerd and runc take to create the task, instead of after it).
 *
 * `EntryProgramPrefetch` steps (one per image resolution, begun by the first of the image's layers acquired):
 *   1. The program (`entryCommands`): the image config's Entrypoint, else its Cmd, first word, and for a shell's
 *      `-c` (Docker's shell form, `CMD python app.py`) the command's first word too. A name without "/" is searched
 *      in the config's PATH (its Env; else the runtime's default PATH), a relative path from its WorkingDir; the
 *      first candidate that is an executable regular file in the merged image (image_paths.ts) is taken.
 *   2. Each file found: all its spans requested at once (the span manager coalesces them into one request), its
 *      head read as they come. A script's "#!" line names its interpreter (`env NAME` searched in PATH), taken as
 *      in step 1, at most `MAX_SCRIPT_DEPTH` deep as the kernel does. An ELF file (elf.ts) names its interpreter
 *      (asked for as soon as the first span is in) and its DT_NEEDED libraries, searched as the dynamic loader
 *      does: DT_RPATH (when there is no DT_RUNPATH), the config's LD_LIBRARY_PATH, DT_RUNPATH ($ORIGIN expanded),
 *      then the C library's directories (`LIBRARY_DIRS`, glibc's in place of /etc/ld.so.cache, or musl's); each
 *      library is step 2 again. (Not modelled: an executable's DT_RPATH applied to its libraries' own needs.)
 *   3. A file in a layer that is not open yet waits for it (containerd prepares an image's layers one by one), at
 *      most `layerWaitMs`: a layer containerd already has from another image is never prepared for this one.
 * Bounded: `maxBytes` of files (a file over what is left is skipped), `MAX_FILES` files, `MAX_SEARCH_DIRS` of
 * each search list, `MAX_QUERIES` paths per lookup (image_paths.ts bounds each path), the event loop given a
 * turn between lookup rounds, and one deadline for the whole (`timeoutMs`). Nothing waits for it; whatever stops
 * it (no program, a file not ELF, an unreadable span, the deadline, a layer closed or never opened) ends it with
 * one debug line naming why: the container's own reads fetch what it needs. It never holds what it was given
 * past its end: the zTOCs and span managers are let go then.
 */
import type { ImageConfig } from "../oci/types.ts";
import { silentLogger, type Logger } from "../util/log.ts";
import { raceSignal } from "../util/abort.ts";
import { errorMessage } from "../util/errors.ts";
import { looksLikeElf, multiarchTriplet, readElfNeeds, type FileReader } from "./elf.ts";
import { type ImageLayers, resolveImagePathsAsync, type ResolvedFile } from "./image_paths.ts";
import type { SpanManager } from "./span_manager.ts";

/** The PATH a runtime gives a container whose image sets none (containerd's and runc's default). */
export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/**
 * Library directories searched after DT_RUNPATH: glibc's on Debian/Ubuntu (ld.so.conf.d) and Fedora; musl's
 * default path when the interpreter is musl's.
 */
export const LIBRARY_DIRS = (triplet: string | undefined, musl: boolean): string[] =>
  musl
    ? ["/lib", "/usr/local/lib", "/usr/lib"]
    : [
        "/usr/local/lib",
        ...(triplet ? [`/usr/local/lib/${triplet}`, `/lib/${triplet}`, `/usr/lib/${triplet}`] : []),
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
      ];
/** Directories taken from each search list (PATH, LD_LIBRARY_PATH, DT_RPATH, DT_RUNPATH), duplicates dropped. */
export const MAX_SEARCH_DIRS = 64;
/** Paths asked in one lookup (a program's candidates, or one file's libraries in every directory). */
export const MAX_QUERIES = 1024;
/** Files fetched at most per image. */
export const MAX_FILES = 64;
/** Scripts whose interpreter is a script, followed this deep (the kernel's BINPRM recursion limit is 5). */
export const MAX_SCRIPT_DEPTH = 4;
/** Bytes of a script's first line read for its "#!" (the kernel's BINPRM_BUF_SIZE). */
const SHEBANG_BYTES = 256;
/** Shells whose `-c COMMAND` names a program too. */
const SHELLS = new Set(["sh", "bash", "dash", "ash", "zsh"]);

/** What a layer gives the prefetch once it is open: its span manager. */
export interface EntryProgramOptions {
  /** Bytes of files fetched at most (config `[prefetch] entry_program_max_bytes`). */
  maxBytes: number;
  /** Milliseconds the whole may take (the span fetch timeout). */
  timeoutMs: number;
  /** Milliseconds a file waits for its layer to open (default 10 000). */
  layerWaitMs?: number;
  /** The image's name, for log lines. */
  image: string;
  /** Called once it has ended (serve collects the garbage its fetches made: quiet_gc.ts). */
  onEnd?: () => void;
  logger?: Logger;
}

/** The commands of a config (step 1): each program's first word, with the environment it runs in. */
export interface EntryCommands {
  /** Program names or paths, in the order they run (a shell before its `-c` command's program). */
  programs: string[];
  /** The directories of PATH. */
  path: string[];
  /** The directories of LD_LIBRARY_PATH. */
  ldLibraryPath: string[];
  /** WorkingDir, "/" when unset. */
  workingDir: string;
}

/** Step 1: what a container of this config runs first; undefined when it names nothing. */
export function entryCommands(config: ImageConfig["config"]): EntryCommands | undefined {
  const c = (config ?? {}) as { Entrypoint?: unknown; Cmd?: unknown; Env?: unknown; WorkingDir?: unknown };
  const words = (v: unknown) => (Array.isArray(v) && v.every((w) => typeof w === "string") ? (v as string[]) : []);
  const entrypoint = words(c.Entrypoint);
  const argv = entrypoint.length > 0 ? [...entrypoint, ...words(c.Cmd)] : words(c.Cmd);
  if (argv.length === 0 || argv[0] === "") return undefined;
  const programs = [argv[0]!];
  const base = argv[0]!.slice(argv[0]!.lastIndexOf("/") + 1);
  if (SHELLS.has(base) && argv[1] === "-c" && argv[2] !== undefined) {
    const first = shellCommandProgram(argv[2]);
    if (first) programs.push(first);
  }
  const env = new Map<string, string>();
  for (const kv of words(c.Env)) {
    const eq = kv.indexOf("=");
    if (eq > 0) env.set(kv.slice(0, eq), kv.slice(eq + 1));
  }
  const dirs = (v: string | undefined) => searchDirs((v ?? "").split(":"));
  return {
    programs,
    path: dirs(env.get("PATH") ?? DEFAULT_PATH),
    ldLibraryPath: dirs(env.get("LD_LIBRARY_PATH")),
    workingDir: typeof c.WorkingDir === "string" && c.WorkingDir !== "" ? c.WorkingDir : "/",
  };
}

/** A search list without empty or repeated entries, at most MAX_SEARCH_DIRS of them. */
function searchDirs(list: readonly string[]): string[] {
  return [...new Set(list.filter((d) => d !== ""))].slice(0, MAX_SEARCH_DIRS);
}

/**
 * The program a shell command starts with: its first word after `exec` (and its options: `-a NAME`, `-c`, `-l`),
 * `env` (and its assignments) and variable assignments; undefined when that is not a plain word (quotes,
 * expansions, redirections, a compound command's keyword).
 */
export function shellCommandProgram(command: string): string | undefined {
  const words = command.trim().split(/\s+/);
  let i = 0;
  const assignment = (w: string) => /^[A-Za-z_][A-Za-z0-9_]*=/.test(w);
  for (;;) {
    const w = words[i];
    if (w === undefined) return undefined;
    if (assignment(w)) i++;
    else if (w === "exec") {
      i++;
      while (words[i]?.startsWith("-")) i += words[i] === "-a" ? 2 : 1;
    } else if (w === "env" || w === "/usr/bin/env") {
      i++;
      while (words[i] !== undefined && (assignment(words[i]!) || words[i]!.startsWith("-"))) i++;
    } else break;
  }
  const w = words[i]!;
  return /^[A-Za-z0-9_./+-]+$/.test(w) && !w.startsWith("-") ? w : undefined;
}

/** `path` from the root, a relative one from `workingDir`. */
function fromWorkingDir(path: string, workingDir: string): string {
  return path.startsWith("/") ? path : `${workingDir}/${path}`;
}

/** Candidate paths of program `name` (step 1's search). */
function programCandidates(name: string, cmd: EntryCommands): string[] {
  if (name.includes("/")) return [fromWorkingDir(name, cmd.workingDir)];
  return cmd.path.map((dir) => `${fromWorkingDir(dir, cmd.workingDir)}/${name}`);
}

/** One image's entry program prefetch (see the file comment). */
export class EntryProgramPrefetch {
  readonly #o: EntryProgramOptions;
  readonly #logger: Logger;
  #layers: ImageLayers | undefined;
  #config: Promise<ImageConfig | undefined> | undefined;
  #readers = new Map<string, SpanManager>();
  readonly #waiters = new Map<string, Array<(m: SpanManager) => void>>();
  #started = false;
  #ended = false;
  readonly #abort = new AbortController();
  readonly #seen = new Set<string>();
  readonly #fetches: Array<Promise<unknown>> = [];
  readonly #fetched: string[] = [];
  readonly #skipped: string[] = [];
  #bytes = 0;
  #cmd: EntryCommands | undefined;
  #triplet: string | undefined;
  /** The program's interpreter is musl's: its library directories are searched. */
  #musl = false;
  readonly #done = Promise.withResolvers<void>();

  /**
   * `layers`: the image's layers (bottom first) with their zTOCs; `config`: the image config, being fetched
   * (undefined when it could not be: the prefetch then does nothing).
   */
  constructor(layers: ImageLayers, config: Promise<ImageConfig | undefined>, opts: EntryProgramOptions) {
    this.#layers = layers;
    this.#config = config;
    this.#o = opts;
    this.#logger = opts.logger ?? silentLogger;
  }

  /**
   * Settles when the prefetch has ended and the fetches it had started by then are in or failed (tests; never
   * rejects).
   */
  get done(): Promise<void> {
    return this.#done.promise;
  }

  /** The files fetched (resolved paths), once `done`. */
  get fetched(): readonly string[] {
    return this.#fetched;
  }

  /** Layer `digest` is open, read through `manager`: begins the prefetch (once), and lets files there go on. */
  layerOpened(digest: string, manager: SpanManager): void {
    if (this.#ended) return;
    this.#readers.set(digest, manager);
    const waiting = this.#waiters.get(digest);
    if (waiting) {
      this.#waiters.delete(digest);
      for (const go of waiting) go(manager);
    }
    if (this.#started) return;
    this.#started = true;
    void this.#run();
  }

  async #run(): Promise<void> {
    const t0 = performance.now();
    const timer = setTimeout(
      () => this.#abort.abort(new Error(`it took over ${this.#o.timeoutMs} ms`)),
      this.#o.timeoutMs,
    );
    (timer as { unref?: () => void }).unref?.();
    let stopped: string | undefined;
    try {
      const config = await raceSignal(this.#config!, this.#abort.signal);
      this.#config = undefined;
      this.#cmd = config ? entryCommands(config.config) : undefined;
      if (!this.#cmd) {
        stopped = config ? "the image config names no program" : "no image config";
        return;
      }
      // 1.
      const found = await Promise.all(this.#cmd.programs.map((p) => this.#program(p)));
      if (found.every((f) => f === undefined)) {
        stopped = `no executable file for ${this.#cmd.programs.join(", ")} in the image`;
        return;
      }
      await Promise.all(found.map((f) => f && this.#file(f, 0)));
      this.#abort.signal.throwIfAborted();
    } catch (err) {
      stopped = errorMessage(err);
    } finally {
      clearTimeout(timer);
      await Promise.allSettled(this.#fetches);
      this.#end();
      this.#logger.debug(stopped ? "Entry program prefetch stopped" : "Entry program prefetched", {
        image: this.#o.image,
        files: this.#fetched,
        bytes: this.#bytes,
        ...(this.#skipped.length > 0 ? { skipped: this.#skipped } : {}),
        ...(stopped ? { why: stopped } : {}),
        ms: Math.round(performance.now() - t0),
      });
      this.#done.resolve();
      this.#o.onEnd?.();
    }
  }

  /** Let go of everything given; wake the waiters (they find the prefetch ended). */
  #end(): void {
    this.#ended = true;
    this.#abort.abort(new Error("the prefetch ended"));
    this.#layers = undefined;
    this.#readers.clear();
    this.#waiters.clear();
  }

  /** Step 1's search for program `name`: the first executable regular file of its candidates. */
  async #program(name: string): Promise<ResolvedFile | undefined> {
    const found = await this.#resolve(programCandidates(name, this.#cmd!));
    return found.find((f) => f !== undefined && (f.entry.mode & 0o111) !== 0);
  }

  /** A lookup of at most MAX_QUERIES paths in the image (the rest resolve to nothing); throws once ended. */
  async #resolve(paths: readonly string[]): Promise<Array<ResolvedFile | undefined>> {
    this.#abort.signal.throwIfAborted();
    const found = await resolveImagePathsAsync(this.#layers!, paths.slice(0, MAX_QUERIES));
    this.#abort.signal.throwIfAborted();
    return found;
  }

  /** Step 2 for one file found (`depth`: scripts followed so far). */
  async #file(f: ResolvedFile, depth: number): Promise<void> {
    this.#abort.signal.throwIfAborted();
    const digest = this.#layers![f.layer]!.digest;
    const size = f.entry.uncompressedSize;
    const key = `${digest} ${f.entry.uncompressedOffset}`;
    if (this.#seen.has(key) || size === 0) return;
    this.#seen.add(key);
    if (this.#seen.size > MAX_FILES || this.#bytes + size > this.#o.maxBytes) {
      this.#skipped.push(f.path);
      return;
    }
    this.#bytes += size;
    const m = await this.#reader(digest);
    this.#fetched.push(f.path);
    const start = f.entry.uncompressedOffset;
    // Every span of the file, in one go: the reads below join them as they come.
    const ids = m.unrequestedSpans(start, start + size);
    if (ids.length > 0) this.#fetches.push(m.fetchSpans(ids, this.#abort.signal).catch(() => {}));
    const read: FileReader = (offset, length) =>
      m.read(start + offset, Math.max(0, Math.min(length, size - offset)), {
        signal: this.#abort.signal,
        prefetch: true,
      });
    const head = await read(0, SHEBANG_BYTES);
    if (head[0] === 0x23 && head[1] === 0x21) return await this.#script(head, depth);
    if (!looksLikeElf(head)) return;
    const libs: Array<Promise<void>> = [];
    // Caught here: the dynamic section's read may fail while the interpreter's branch is still under way.
    let interpreterError: unknown;
    const needs = await readElfNeeds(read, size, {
      onInterpreter: (path) =>
        libs.push(
          this.#path(path, depth).catch((err) => {
            interpreterError ??= err;
          }),
        ),
    });
    if ("why" in needs) {
      this.#logger.debug("Entry program file not read as ELF", { image: this.#o.image, path: f.path, why: needs.why });
    } else if (needs.needed.length > 0) {
      if (needs.interpreter?.includes("/ld-musl-")) this.#musl = true;
      this.#triplet ??= multiarchTriplet(needs.machine, needs.class64);
      libs.push(this.#libraries(f, needs));
    }
    await Promise.all(libs);
    if (interpreterError !== undefined) throw interpreterError;
  }

  /** A script's "#!" line: its interpreter (through `env`, the program it names), step 2 again. */
  async #script(head: Uint8Array, depth: number): Promise<void> {
    if (depth >= MAX_SCRIPT_DEPTH) return;
    const nl = head.indexOf(0x0a);
    const line = new TextDecoder().decode(head.subarray(2, nl < 0 ? head.length : nl)).trim();
    const [interpreter, ...args] = line.split(/[ \t]+/);
    if (!interpreter) return;
    // A path: from the working directory when relative, as the kernel takes it.
    const found = await this.#program(interpreter.includes("/") ? interpreter : `./${interpreter}`);
    const named = interpreter.endsWith("/env") ? args.find((a) => !a.startsWith("-")) : undefined;
    const viaEnv = named ? await this.#program(named) : undefined;
    await Promise.all([found && this.#file(found, depth + 1), viaEnv && this.#file(viaEnv, depth + 1)]);
  }

  /** An absolute path (an ELF interpreter), step 2 again when it is a regular file. */
  async #path(path: string, depth: number): Promise<void> {
    const [found] = await this.#resolve([fromWorkingDir(path, this.#cmd!.workingDir)]);
    if (found) await this.#file(found, depth);
  }

  /** The libraries an ELF file needs, searched as the dynamic loader does (step 2), each step 2 again. */
  async #libraries(f: ResolvedFile, needs: { needed: string[]; rpath: string[]; runpath: string[] }): Promise<void> {
    const origin = `/${f.path.slice(0, Math.max(0, f.path.lastIndexOf("/")))}`;
    const expand = (dirs: string[]) =>
      dirs
        // biome-ignore lint/suspicious/noTemplateCurlyInString: the dynamic loader's own ${ORIGIN} token
        .map((d) => d.replaceAll("${ORIGIN}", origin).replaceAll("$ORIGIN", origin))
        .filter((d) => !d.includes("$"))
        .map((d) => fromWorkingDir(d, this.#cmd!.workingDir));
    const dirs = [
      ...new Set([
        ...(needs.runpath.length === 0 ? expand(searchDirs(needs.rpath)) : []),
        ...expand(this.#cmd!.ldLibraryPath),
        ...expand(searchDirs(needs.runpath)),
        ...LIBRARY_DIRS(this.#triplet, this.#musl),
      ]),
    ];
    const queries: string[] = [];
    const spans: Array<[number, number]> = [];
    for (const lib of needs.needed) {
      const paths = lib.includes("/") ? [fromWorkingDir(lib, this.#cmd!.workingDir)] : dirs.map((d) => `${d}/${lib}`);
      spans.push([queries.length, queries.length + paths.length]);
      queries.push(...paths);
    }
    // Whole libraries only: one whose candidates do not all fit in MAX_QUERIES is left out.
    const found = await this.#resolve(queries.slice(0, spans.findLast(([, b]) => b <= MAX_QUERIES)?.[1] ?? 0));
    await Promise.all(
      spans.map(([a, b]) => {
        const hit = found.slice(a, b).find((x) => x !== undefined);
        return hit && this.#file(hit, 0);
      }),
    );
  }

  /**
   * The span manager of layer `digest`, once it is open (step 3); rejects when the prefetch ends first, or when
   * the layer does not open within `layerWaitMs`.
   */
  #reader(digest: string): Promise<SpanManager> {
    const open = this.#readers.get(digest);
    if (open) return Promise.resolve(open);
    const signal = this.#abort.signal;
    if (signal.aborted) return Promise.reject(signal.reason);
    const waitMs = this.#o.layerWaitMs ?? 10_000;
    return new Promise<SpanManager>((resolve, reject) => {
      const stop = (err: unknown) => {
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        reject(err);
      };
      const onAbort = () => stop(signal.reason);
      const timer = setTimeout(() => stop(new Error(`layer "${digest}" was not opened within ${waitMs} ms`)), waitMs);
      (timer as { unref?: () => void }).unref?.();
      signal.addEventListener("abort", onAbort, { once: true });
      const list = this.#waiters.get(digest) ?? [];
      list.push((m) => {
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        resolve(m);
      });
      this.#waiters.set(digest, list);
    });
  }
}

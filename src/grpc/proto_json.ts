/**
 * A Bun macro (imported `with { type: "macro" }`): the .proto files under src/grpc/ parsed into protobufjs's JSON
 * form when the importing module is transpiled or bundled, so the object is inlined into the code and neither the
 * texts nor a parse of them reach run time. `bun build --compile` runs it once at build; `bun` from source and
 * `bun test` run it as they transpile the importing module.
 *
 * Why: parsing the 9 .proto texts of containerd's services with protobufjs's parser was ~35 ms of CPU at each
 * `soci-ts pull`'s start (bench/cli.ts); `Root.fromJSON` of the same descriptor takes a few.
 * After editing a .proto file, touch the module importing this one if Bun's transpiler cache might hold it (the
 * cache keys on the module's own text).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { type INamespace, parse, Root } from "protobufjs";

/**
 * The descriptor (protobufjs's `INamespace`, from `Root.toJSON`) of `files` (paths relative to src/grpc/, the
 * files they import included: imports are not followed), field names kept as in the .proto. Throws when a file
 * is missing or does not parse, which fails the build.
 */
export function protoDescriptor(files: readonly string[]): INamespace {
  const root = new Root();
  for (const f of files) parse(readFileSync(join(import.meta.dir, f), "utf8"), root, { keepCase: true });
  return root.toJSON();
}

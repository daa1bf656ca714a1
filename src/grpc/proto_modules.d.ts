/**
 * `.proto` files are imported as text (`import text from "./proto/x.proto" with { type: "text" }`), so that
 * `bun build --compile` embeds them: the executable cannot read files next to the sources at run time.
 */
declare module "*.proto" {
  /** The file's text. */
  const text: string;
  export default text;
}

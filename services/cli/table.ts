// Plain-text output of the CLI: tables (columns padded to their widest cell, two spaces apart, the last left
// ragged) and paths as a person reads them.

/** `header` and `rows` as aligned lines. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}

/** A path relative to the working directory when it is below it (`.data/nats/logs/planner.log`), else as given (the kit's messages show paths the same way). */
export { shownPath as shown } from "../kit/index.ts";

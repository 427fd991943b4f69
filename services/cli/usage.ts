// Command-line parsing shared by every `causeway` command group: node's parseArgs in strict mode, `--help`,
// and one form for usage errors (exit 2, the CW_ERR_USAGE code, then the usage text).
import { userInfo } from "node:os";
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { ErrorCode } from "../kit/index.ts";

/** Parsed arguments, or the exit code when parsing ended the command (help printed or a usage error). */
export type Parsed<O extends ParseArgsOptionsConfig> =
  | { values: ReturnType<typeof parseArgs<{ options: O; allowPositionals: true; strict: true }>>["values"]; positionals: string[]; exit?: undefined }
  | { exit: number };

/** Parses `args` against `options` (plus `--help`/`-h`); prints help or a usage error and returns `{ exit }`. */
export function parseCommand<const O extends ParseArgsOptionsConfig>(command: string, usage: string, args: string[], options: O): Parsed<O> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(usage);
    return { exit: 0 };
  }
  try {
    const { values, positionals } = parseArgs({ args, options, allowPositionals: true, strict: true });
    return { values, positionals };
  } catch (err) {
    return { exit: usageError(command, usage, (err as Error).message) };
  }
}

/** Prints a usage error for `causeway <command>` and returns exit code 2. */
export function usageError(command: string, usage: string, problem: string): number {
  console.error(`causeway ${command}: ${problem} (${ErrorCode.Usage})\n\n${usage}`);
  return 2;
}

/** Who is acting, for signed operator decisions: `--operator`, else $CAUSEWAY_OPERATOR, else the OS user. */
export function operatorName(given: string | undefined): string {
  if (given !== undefined && given.trim() !== "") return given;
  const fromEnv = process.env.CAUSEWAY_OPERATOR;
  if (fromEnv !== undefined && fromEnv.trim() !== "") return fromEnv;
  try {
    return userInfo().username || "operator";
  } catch {
    return "operator"; // no passwd entry (a container with an arbitrary uid)
  }
}

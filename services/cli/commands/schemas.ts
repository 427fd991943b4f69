// `causeway schemas`: the lockfile of published schemas (schemas/schemas.lock.json). `check` reports a published
// `$id` whose content changed or whose file is gone, and schemas not locked yet; `lock` adds new schemas to the
// lock and never rewrites an entry (services/kit/ops/schema-lock.ts).
import { parseCommand, usageError as sharedUsageError } from "../usage.ts";
import { defaultSchemaDir } from "../../kit/index.ts";
import { checkSchemaLock, lockSchemas, schemaLockPath } from "../../kit/ops/index.ts";

const USAGE = `usage: causeway schemas <subcommand> [--dir <dir>]

  schemas check   compare every schema with the lockfile: exit 1 when a published $id changed or is gone, or a schema is not locked
  schemas lock    add the schemas that are not locked yet; refuses (exit 1, nothing written) when a published $id changed or is gone

--dir: the schema directory (default: the repository's schemas/); the lockfile is <dir>/schemas.lock.json.`;

/** Runs `causeway schemas <args>`; resolves with the exit code. */
export function run(args: string[]): Promise<number> {
  const parsed = parseCommand("schemas", USAGE, args, { dir: { type: "string" } });
  if (parsed.exit !== undefined) return Promise.resolve(parsed.exit);
  const { values, positionals } = parsed;
  const dir = values.dir ?? defaultSchemaDir;
  const [sub, ...rest] = positionals;
  if (rest.length > 0) return Promise.resolve(usageError(`schemas ${sub} takes no arguments`));
  switch (sub) {
    case "check": {
      const problems = checkSchemaLock(dir);
      for (const p of problems) console.error(`✗ ${p.message}`);
      if (problems.length === 0) console.log(`✓ every schema in ${dir} matches ${schemaLockPath(dir)}`);
      return Promise.resolve(problems.length === 0 ? 0 : 1);
    }
    case "lock": {
      const added = lockSchemas(dir);
      for (const id of added) console.log(`+ ${id}`);
      console.log(added.length === 0 ? `✓ ${schemaLockPath(dir)}: nothing to add` : `✓ ${schemaLockPath(dir)}: ${added.length} schema(s) added`);
      return Promise.resolve(0);
    }
    case undefined:
      return Promise.resolve(usageError("missing subcommand"));
    default:
      return Promise.resolve(usageError(`unknown subcommand "${sub}"`));
  }
}

function usageError(problem: string): number {
  return sharedUsageError("schemas", USAGE, problem);
}

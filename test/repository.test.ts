// The repository stands alone: a fresh clone has everything its code, tests and docs refer to, and its
// `causeway` command runs with the project's own Node 24 whatever `node` the PATH has.
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, globSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, delimiter, dirname, extname, isAbsolute, join, relative, resolve } from "node:path";
import { after, describe, test } from "node:test";
import { promisify } from "node:util";
import { repoRoot } from "./harness/index.ts";

/** This file, relative to the repository. */
const SELF = relative(repoRoot, import.meta.filename);

/** A reference from a tracked file to a path outside the repository. */
interface Finding {
  file: string;
  line: number;
  ref: string;
}

/** Tracked files, or undefined outside a git checkout (an unpacked tarball has nothing to compare with). */
function trackedFiles(): string[] | undefined {
  try {
    return execFileSync("git", ["ls-files", "-z"], { cwd: repoRoot, encoding: "utf8" }).split("\0").filter((f) => f !== "");
  } catch {
    return undefined;
  }
}

function isOutside(path: string): boolean {
  const rel = relative(repoRoot, path);
  return rel === ".." || rel.startsWith(`..${"/"}`) || isAbsolute(rel);
}

function lineOf(text: string, index: number): number {
  return text.slice(0, index).split("\n").length;
}

/** Absolute paths into a developer's machine: the shared checkout directory and home directories. */
const MACHINE_PATH = /(?<![\w.~/-])(?:file:\/\/)?\/(?:work|home|Users|root)\/[^\s"'`)\]]*/g;
/** A relative path literal that climbs: `./…`, `../…`, or any path with a `..` segment. */
const CLIMBING = /^(?:\.{1,2}\/|[^\s]*\/\.\.(?:\/|$))[^\s]*$|^\.\.$/;
/** Markdown link targets: `[text](target)` and reference definitions `[label]: target`. */
const MD_LINK = /\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)|^\s*\[[^\]]+\]:\s*(\S+)/gm;
/** String literals without interpolation (an approximation that is enough for paths). */
const STRING_LITERAL = /"((?:[^"\\\n]|\\.)*)"|'((?:[^'\\\n]|\\.)*)'|`([^`$\\]*)`/g;
/** `join(base, "…", "…")` / `resolve(…)` from a base whose location is known. */
const PATH_CALL = /\b(?:join|resolve)\(\s*(import\.meta\.dirname|__dirname|repoRoot)((?:\s*,\s*(?:"[^"\n]*"|'[^'\n]*'))+)/g;
/** Relative path tokens in shell and make: `../x`, `./x`, at the start of a word. */
const SHELL_PATH = /(?<=^|[\s"'=(:])(\.{1,2}\/[^\s"'`;|&)]*)/gm;

function isShellScript(file: string, text: string): boolean {
  return extname(file) === ".sh" || basename(file) === "Makefile" || /^#!.*\b(?:ba|da)?sh\b/.test(text);
}

/** Every reference in `file` (relative to the repository) that resolves outside the repository. */
function outsideReferences(file: string, text: string): Finding[] {
  const findings: Finding[] = [];
  const dir = dirname(join(repoRoot, file));
  const note = (index: number, ref: string): void => { findings.push({ file, line: lineOf(text, index), ref }); };
  const climbsOut = (ref: string, from: string): boolean => CLIMBING.test(ref) && isOutside(resolve(from, ref));

  for (const m of text.matchAll(MACHINE_PATH)) note(m.index, m[0]);

  const ext = extname(file);
  if (ext === ".md") {
    for (const m of text.matchAll(MD_LINK)) {
      const target = (m[1] ?? m[2]!).replace(/[#?].*$/, "");
      if (target === "" || /^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // an anchor or a URL
      if (target.startsWith("/") || climbsOut(target, dir) || isOutside(resolve(dir, target))) note(m.index, target);
    }
  } else if ([".ts", ".js", ".mjs", ".cjs", ".json"].includes(ext)) {
    // Import specifiers are string literals too, so one pass covers `from "…"`, `import("…")` and paths.
    for (const m of text.matchAll(STRING_LITERAL)) {
      const value = m[1] ?? m[2] ?? m[3] ?? "";
      if (climbsOut(value, dir)) note(m.index, value);
    }
    for (const m of text.matchAll(PATH_CALL)) {
      const base = m[1] === "repoRoot" ? repoRoot : dir;
      const segments = [...m[2]!.matchAll(/"([^"\n]*)"|'([^'\n]*)'/g)].map((s) => s[1] ?? s[2]!);
      if (isOutside(resolve(base, ...segments))) note(m.index, m[0]);
    }
  } else if (isShellScript(file, text)) {
    // Scripts and make run from the repository root (or cd there first); a path must stay inside from both.
    for (const m of text.matchAll(SHELL_PATH)) {
      if (climbsOut(m[1]!, dir) || climbsOut(m[1]!, repoRoot)) note(m.index, m[1]!);
    }
  }
  return findings;
}

describe("repository - stands alone", () => {
  test("repository - no tracked file refers to a path outside the repository", (t) => {
    const files = trackedFiles();
    if (!files) return t.skip("not a git checkout");
    const findings: Finding[] = [];
    for (const file of files) {
      if (file === "package-lock.json") continue; // generated by npm; its paths are node_modules keys
      if (file === SELF) continue; // its examples below are outside references on purpose
      const path = join(repoRoot, file);
      if (!existsSync(path) || !lstatSync(path).isFile()) continue;
      const bytes = readFileSync(path);
      if (bytes.includes(0)) continue; // binary
      findings.push(...outsideReferences(file, bytes.toString("utf8")));
    }
    assert.deepEqual(findings.map((f) => `${f.file}:${f.line}: ${f.ref}`), []);
  });

  test("repository - the outside-reference check flags what it should and nothing legitimate", () => {
    const refs = (file: string, text: string): string[] => outsideReferences(file, text).map((f) => f.ref);
    assert.deepEqual(refs("README.md", "Design: [`../shared/DESIGN.md`](../shared/DESIGN.md)."), ["../shared/DESIGN.md"]);
    assert.deepEqual(refs("docs/a.md", "[principals](../infra/principals.json), [x](https://e.org/../y), [s](#top)"), []);
    assert.deepEqual(refs("docs/a.md", "[up](../../other/README.md)"), ["../../other/README.md"]);
    assert.deepEqual(refs("services/kit/a.ts", 'import { x } from "../lineage/b.ts";\nconst r = resolve(import.meta.dirname, "..", "..");'), []);
    assert.deepEqual(refs("services/kit/a.ts", 'import { x } from "../../../elsewhere/b.ts";'), ["../../../elsewhere/b.ts"]);
    assert.deepEqual(refs("test/kit/a.ts", 'readFileSync(join(repoRoot, "..", "shared", "vectors", "v.json"))').length, 1);
    assert.deepEqual(refs("test/kit/a.ts", 'const root = resolve(import.meta.dirname, "..", "..", "..");').length, 1);
    assert.deepEqual(refs("test/a.ts", 'for (const name of ["mallory", "../researcher"]) {}'), []);
    assert.deepEqual(refs("docs/a.md", "causeway: unknown principal: /work/main/infra/principals.json declares …"), ["/work/main/infra/principals.json"]);
    assert.deepEqual(refs("docs/a.md", "see test/agents/workflow.test.ts and /tmp/causeway/.data/keys"), []);
    assert.deepEqual(refs("Makefile", "demo:\n\tbin/causeway demo\nx:\n\tcat ../shared/DESIGN.md"), ["../shared/DESIGN.md"]);
    assert.deepEqual(refs("tools/install.sh", '#!/bin/sh\nroot=$(cd "$(dirname "$0")/.." && pwd)\n./tools/x'), []);
  });
});

describe("repository - npm scripts", () => {
  const pkg = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as { scripts: Record<string, string>; bin: Record<string, string> };

  test("repository - every file an npm script names exists (a glob matches at least one file)", () => {
    const missing: string[] = [];
    for (const [name, script] of Object.entries(pkg.scripts)) {
      for (const raw of script.split(/\s+/)) {
        const token = raw.replace(/^["']|["']$/g, "");
        if (token.startsWith("-") || !/\//.test(token) && !/\.(?:ts|js|sh)$/.test(token)) continue;
        const found = /[*?[{]/.test(token) ? globSync(token, { cwd: repoRoot }).length > 0 : existsSync(join(repoRoot, token));
        if (!found) missing.push(`${name}: ${token}`);
      }
    }
    assert.deepEqual(missing, []);
  });

  test("repository - package.json's bin entries exist and are executable", () => {
    for (const [name, file] of Object.entries(pkg.bin)) {
      const path = join(repoRoot, file);
      assert.ok(existsSync(path), `${name}: ${file} is missing`);
      assert.ok((statSync(path).mode & 0o111) !== 0, `${name}: ${file} is not executable`);
    }
  });
});

describe("repository - bin/causeway", () => {
  const run = promisify(execFile);
  const causeway = join(repoRoot, "bin", "causeway");
  const scratch = mkdtempSync(join(tmpdir(), "causeway-bin-"));
  after(() => rmSync(scratch, { recursive: true, force: true }));

  /** The major version of a node binary, or undefined when it does not run. */
  function majorOf(node: string): number | undefined {
    try {
      return Number(/^v(\d+)/.exec(execFileSync(node, ["--version"], { encoding: "utf8" }))?.[1]);
    } catch {
      return undefined;
    }
  }

  /** A `node` older than 24 from the PATH or the usual system places, for the PATH the wrapper must ignore. */
  function oldNode(): string | undefined {
    const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/bin", "/usr/local/bin", "/bin"];
    return dirs.map((d) => join(d, "node")).find((n) => existsSync(n) && (majorOf(n) ?? 99) < 24);
  }

  /** A PATH whose `node` is a system node older than 24 if the machine has one, else a `node` that always fails. */
  function pathWithWrongNode(): string {
    const old = oldNode();
    if (old) return [dirname(old), "/usr/bin", "/bin"].join(delimiter);
    const fake = join(scratch, "fake-node-bin");
    mkdirSync(fake, { recursive: true });
    copyFileSync("/bin/false", join(fake, "node"));
    return [fake, "/usr/bin", "/bin"].join(delimiter);
  }

  function assertUsage(out: { stdout: string; stderr: string }): void {
    assert.match(out.stdout, /^usage: causeway <command>/);
    assert.match(out.stdout, /lineage why\|trace/);
  }

  test("repository - bin/causeway --help runs with the project's Node 24 although PATH's node is older", async () => {
    const PATH = pathWithWrongNode();
    const old = oldNode();
    if (old) assert.ok((majorOf(old) ?? 0) < 24);
    assertUsage(await run(causeway, ["--help"], { cwd: repoRoot, env: { PATH } }));
  });

  test("repository - bin/causeway works from another directory and through a symlink", async () => {
    const env = { PATH: pathWithWrongNode() };
    assertUsage(await run(causeway, ["help"], { cwd: scratch, env }));
    const links = join(scratch, "links");
    mkdirSync(links, { recursive: true });
    symlinkSync(causeway, join(links, "causeway-abs"));
    symlinkSync("causeway-abs", join(links, "causeway")); // a relative link to a link
    assertUsage(await run(join(links, "causeway"), ["--help"], { cwd: tmpdir(), env }));
    assertUsage(await run("causeway", ["--help"], { cwd: scratch, env: { PATH: `${links}${delimiter}${env.PATH}` } }));
  });

  test("repository - bin/causeway without node_modules says to run make setup and exits 1", async () => {
    const clone = join(scratch, "fresh-clone");
    mkdirSync(join(clone, "bin"), { recursive: true });
    copyFileSync(causeway, join(clone, "bin", "causeway"));
    chmodSync(join(clone, "bin", "causeway"), 0o755);
    await assert.rejects(run(join(clone, "bin", "causeway"), ["--help"], { env: { PATH: "/usr/bin:/bin" } }), (err: { code?: number; stderr?: string }) => {
      assert.equal(err.code, 1);
      assert.match(err.stderr ?? "", /make setup/);
      assert.match(err.stderr ?? "", /npm ci/);
      return true;
    });
  });
});

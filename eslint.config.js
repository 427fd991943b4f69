// Lint for the bugs that bite in a message loop: floating promises (an un-awaited publish or ack),
// misused promises, value imports of types, and `export *` that hides a module's surface.
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["node_modules/**", ".tools/**", ".data/**", ".scratch/**", "eslint.config.js"] },
  {
    files: ["**/*.ts"],
    extends: [tseslint.configs.base],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // node:test's test()/describe() return promises the runner itself awaits.
      "@typescript-eslint/no-floating-promises": ["error", {
        allowForKnownSafeCalls: [{ from: "package", package: "node:test", name: ["test", "describe", "it", "suite"] }],
      }],
      "@typescript-eslint/no-misused-promises": "error",
      "@typescript-eslint/await-thenable": "error",
      "@typescript-eslint/consistent-type-imports": ["error", { fixStyle: "separate-type-imports" }],
      "@typescript-eslint/consistent-type-exports": "error",
      "@typescript-eslint/no-import-type-side-effects": "error",
      "no-restricted-syntax": ["error", { selector: "ExportAllDeclaration", message: "Name what a module exports; no `export *`." }],
    },
  },
  // The kit's boundary: outside services/kit, only its index is imported (services/kit/index.ts). Operator
  // tooling (the CLI) may take services/kit/ops/index.ts too, tests services/kit/internal.ts. A service imports no
  // other service's folder but its published contract (services/<service>/contract.ts).
  {
    files: ["services/**/*.ts"],
    ignores: ["services/kit/**", "services/cli/**"],
    rules: {
      "no-restricted-imports": ["error", {
        patterns: [
          { regex: "(^|/)kit/(?!index\\.ts$)", message: "Outside the kit, import only services/kit/index.ts (operator tooling: the CLI)." },
          { regex: "^\\.\\./(\\.\\./)?(coordinator|lineage|gateway|cli)/(?!contract\\.ts$)", message: "A service imports no other service's folder but its contract.ts." },
        ],
      }],
    },
  },
  {
    files: ["services/cli/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", {
        patterns: [
          { regex: "(^|/)kit/(?!index\\.ts$|ops/index\\.ts$)", message: "The CLI imports the kit through services/kit/index.ts and services/kit/ops/index.ts only." },
          { regex: "^\\.\\./(\\.\\./)?(coordinator|lineage|gateway|agents)/(?!contract\\.ts$)", message: "The CLI imports a service only through its contract.ts." },
        ],
      }],
    },
  },
  {
    files: ["test/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", {
        patterns: [
          { regex: "(^|/)services/kit/(?!index\\.ts$|ops/index\\.ts$|internal\\.ts$)", message: "Tests import the kit through index.ts, ops/index.ts or internal.ts." },
        ],
      }],
    },
  },
);

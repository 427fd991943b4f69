// The smallest instance of a JSON Schema that the scaffold can think of: what `causeway new agent` writes into a
// generated test as the data of an input, so the test passes as generated and shows the developer the shape to
// edit. It covers what the mesh's schemas use (objects with required properties, bounded strings, the uri, email
// and date-time formats, enums, consts, integers and numbers with bounds, arrays with minItems, $ref by $id); the
// caller validates the result against the registry and says so when a schema asks for more (a pattern).

/** Looks a schema up by its `$id` (for `$ref`). */
export type SchemaLookup = (id: string) => unknown;

const FORMATS: Readonly<Record<string, string>> = {
  "date-time": "2026-01-01T00:00:00Z",
  date: "2026-01-01",
  uri: "https://example.com/",
  "uri-reference": "https://example.com/",
  email: "someone@example.com",
  uuid: "00000000-0000-4000-8000-000000000000",
};

/** An instance of `schema` built from its required parts only; `lookup` resolves `$ref`s naming another schema's `$id`. */
export function exampleOf(schema: unknown, lookup: SchemaLookup = () => undefined, depth = 0): unknown {
  if (depth > 32 || schema === null || typeof schema !== "object") return null;
  const s = schema as Record<string, unknown>;
  if ("const" in s) return s.const;
  if (Array.isArray(s.enum) && s.enum.length > 0) return s.enum[0];
  if (typeof s.$ref === "string") return exampleOf(lookup(s.$ref), lookup, depth + 1);
  for (const key of ["oneOf", "anyOf", "allOf"] as const) {
    const options = s[key];
    if (Array.isArray(options) && options.length > 0 && s.type === undefined) return exampleOf(options[0], lookup, depth + 1);
  }
  const type = Array.isArray(s.type) ? (s.type as unknown[]).find((t) => t !== "null") : s.type;
  switch (type) {
    case "object": {
      const properties = (s.properties ?? {}) as Record<string, unknown>;
      const required = Array.isArray(s.required) ? (s.required as string[]) : [];
      return Object.fromEntries(required.map((name) => [name, exampleOf(properties[name] ?? {}, lookup, depth + 1)]));
    }
    case "array": {
      const count = typeof s.minItems === "number" ? s.minItems : 0;
      return Array.from({ length: count }, () => exampleOf(s.items ?? {}, lookup, depth + 1));
    }
    case "string": {
      if (typeof s.format === "string" && FORMATS[s.format] !== undefined) return FORMATS[s.format];
      const min = typeof s.minLength === "number" ? s.minLength : 0;
      const max = typeof s.maxLength === "number" ? s.maxLength : Infinity;
      const text = "example".padEnd(min, "-");
      return text.slice(0, Math.max(min, Math.min(max, text.length)));
    }
    case "integer":
    case "number": {
      const min = typeof s.minimum === "number" ? s.minimum : typeof s.exclusiveMinimum === "number" ? s.exclusiveMinimum + 1 : undefined;
      const max = typeof s.maximum === "number" ? s.maximum : typeof s.exclusiveMaximum === "number" ? s.exclusiveMaximum - 1 : undefined;
      const value = min ?? (max !== undefined && max < 0 ? max : 0);
      return type === "integer" ? Math.ceil(value) : value;
    }
    case "boolean":
      return false;
    case "null":
      return null;
    default:
      return {};
  }
}

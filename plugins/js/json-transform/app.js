// json-transform: a JSON document and a mapping in, the transformed document out.
//
// Input {"document": {...}, "mapping": {"name": "user.name", "city": "user.address.city",
// "first_tag": "tags[0]", "meta": {"id": "id"}}}. Each mapping value is a path into
// the document (dots for fields, [i] for array items, "$" for the whole document) or
// a nested mapping. A path that finds nothing gives null and counts in
// `missing_fields`; each found one in `fields_mapped`; `transform` times it all.
// Output `document`; the result is the transformed document.
import { action, InvalidInput } from "./ward-sdk.js";

function parsePath(path) {
  if (path === "$") return [];
  const parts = [];
  for (const piece of path.split(".")) {
    const m = piece.match(/^([^[\]]*)((?:\[\d+\])*)$/);
    if (!m || (!m[1] && !m[2])) throw new InvalidInput(`bad path ${JSON.stringify(path)}`);
    if (m[1]) parts.push(m[1]);
    for (const i of m[2].matchAll(/\[(\d+)\]/g)) parts.push(Number(i[1]));
  }
  if (parts.length === 0) throw new InvalidInput(`empty path ${JSON.stringify(path)}`);
  return parts;
}

function lookup(doc, parts) {
  let at = doc;
  for (const p of parts) {
    if (at === null || typeof at !== "object" || !(p in at)) return undefined;
    at = at[p];
  }
  return at;
}

export function transform(doc, mapping, counts = { mapped: 0, missing: 0 }) {
  const out = {};
  for (const [name, spec] of Object.entries(mapping)) {
    if (typeof spec === "string") {
      const found = lookup(doc, parsePath(spec));
      if (found === undefined) counts.missing += 1;
      else counts.mapped += 1;
      out[name] = found === undefined ? null : found;
    } else if (spec && typeof spec === "object" && !Array.isArray(spec)) {
      out[name] = transform(doc, spec, counts).out;
    } else {
      throw new InvalidInput(`mapping.${name} must be a path or a mapping`);
    }
  }
  return { out, counts };
}

export const run = action((ctx, input) => {
  if (!input || typeof input !== "object" || !("document" in input)) {
    throw new InvalidInput('input needs "document" and "mapping"');
  }
  const mapping = input.mapping;
  if (!mapping || typeof mapping !== "object" || Array.isArray(mapping)) {
    throw new InvalidInput("mapping must be an object");
  }
  const { out, counts } = ctx.time("transform", () => transform(input.document, mapping));
  ctx.counter("fields_mapped", counts.mapped);
  ctx.counter("missing_fields", counts.missing);
  if (counts.missing > 0) ctx.info(`${counts.missing} paths found nothing`);
  ctx.output("document", out);
  return out;
});

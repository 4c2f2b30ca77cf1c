// The API reference page: reads the OpenAPI document the service serves and lists, per
// tag, every operation with its roles, parameters, request body, answers and examples.
// Plain DOM (no framework, nothing from elsewhere), like the integrations page.
"use strict";

const ROLES = { admin: "admin token", ingest: "ingest token", account: "account token" };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function refName(ref) {
  return ref.split("/").pop();
}

// A schema in a few words: `IntegrationAnswer`, `array of AuditEventBody`, `string (date-time)`.
function typeOf(s) {
  if (!s) return "any";
  if (s.$ref) return refName(s.$ref);
  if (s.oneOf) return s.oneOf.map(typeOf).join(" or ");
  if (s.allOf) return s.allOf.map(typeOf).join(" and ");
  let t = Array.isArray(s.type) ? s.type.filter((x) => x !== "null").join(" or ") : s.type;
  if (t === "array") t = "array of " + typeOf(s.items);
  if (s.enum) t = (t ? t + ": " : "") + s.enum.filter((x) => x !== null).map((x) => JSON.stringify(x)).join(", ");
  if (s.format) t += " (" + s.format + ")";
  const nullable = (Array.isArray(s.type) && s.type.includes("null")) || (s.oneOf || []).some((x) => x.type === "null");
  return (t || "any") + (nullable ? ", or null" : "");
}

function limits(s) {
  const out = [];
  if (s.minimum !== undefined) out.push("≥ " + s.minimum);
  if (s.maximum !== undefined) out.push("≤ " + s.maximum);
  if (s.minLength !== undefined) out.push("at least " + s.minLength + " characters");
  if (s.maxLength !== undefined) out.push("at most " + s.maxLength + " characters");
  if (s.pattern !== undefined) out.push("matches " + s.pattern);
  if (s.minItems !== undefined) out.push("at least " + s.minItems + " items");
  return out.join("; ");
}

// The fields of an object schema (following allOf), as a table.
function fields(doc, schema) {
  const props = {};
  const required = new Set();
  const collect = (s) => {
    if (!s) return;
    if (s.$ref) return collect(doc.components.schemas[refName(s.$ref)]);
    (s.allOf || []).forEach(collect);
    Object.assign(props, s.properties || {});
    (s.required || []).forEach((r) => required.add(r));
  };
  collect(schema);
  const names = Object.keys(props);
  if (names.length === 0) return null;
  const body = el("tbody");
  for (const name of names) {
    const p = props[name];
    body.append(el("tr", {},
      el("th", { scope: "row" }, el("code", {}, name), required.has(name) ? " (required)" : ""),
      el("td", {}, typeOf(p)),
      el("td", {}, p.description || "", limits(p) ? el("span", { class: "muted" }, " " + limits(p)) : null)));
  }
  return el("div", { class: "table-wrap", role: "region", tabindex: "0", "aria-label": "Fields" },
    el("table", {}, el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Field"), el("th", { scope: "col" }, "Type"), el("th", { scope: "col" }, "Meaning"))), body));
}

function schemaSection(doc, title, content) {
  const json = content && content["application/json"];
  if (!json) {
    const other = content && Object.keys(content)[0];
    return other ? el("p", {}, title + ": ", el("code", {}, other)) : null;
  }
  const s = json.schema;
  const box = el("div", { class: "ref-schema" }, el("p", {}, title + ": ", el("code", {}, typeOf(s))));
  const target = s && s.type === "array" ? s.items : s;
  if (target && target.$ref) {
    const d = el("details", {}, el("summary", {}, "Fields of " + refName(target.$ref)));
    const t = fields(doc, target);
    if (t) d.append(t);
    box.append(d);
  }
  if (json.example !== undefined) {
    box.append(el("details", {}, el("summary", {}, "Example"), el("pre", {}, JSON.stringify(json.example, null, 2))));
  }
  return box;
}

function operation(doc, path, method, op) {
  const roles = (op.security || doc.security || [])
    .flatMap((r) => Object.keys(r)).map((r) => ROLES[r] || r);
  const id = "op-" + (op.operationId || method + path).replace(/[^A-Za-z0-9_-]/g, "-");
  const section = el("section", { class: "card ref-op", id, "aria-labelledby": id + "-h" },
    el("h3", { id: id + "-h" }, el("span", { class: "ref-method" }, method.toUpperCase()), " ", el("code", {}, path)),
    op.summary ? el("p", {}, op.summary) : null,
    op.description && op.description !== op.summary ? el("p", { class: "muted" }, op.description) : null,
    el("p", {}, "Who: ", roles.length ? roles.join(", ") : "anyone, without a token"));
  if (op.parameters && op.parameters.length) {
    const body = el("tbody");
    for (const p of op.parameters) {
      body.append(el("tr", {},
        el("th", { scope: "row" }, el("code", {}, p.name), p.required ? " (required)" : ""),
        el("td", {}, p.in),
        el("td", {}, typeOf(p.schema)),
        el("td", {}, p.description || "", limits(p.schema || {}) ? el("span", { class: "muted" }, " " + limits(p.schema)) : null)));
    }
    section.append(el("div", { class: "table-wrap", role: "region", tabindex: "0", "aria-label": "Parameters" },
      el("table", {}, el("caption", {}, "Parameters"),
        el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Name"), el("th", { scope: "col" }, "In"), el("th", { scope: "col" }, "Type"), el("th", { scope: "col" }, "Meaning"))), body)));
  }
  if (op.requestBody) {
    section.append(schemaSection(doc, "Request body", op.requestBody.content));
  }
  const list = el("ul", { class: "ref-answers" });
  for (const [status, r] of Object.entries(op.responses || {})) {
    const item = el("li", {}, el("strong", {}, status), " ", r.description || "");
    const s = schemaSection(doc, "Body", r.content);
    if (s) item.append(s);
    list.append(item);
  }
  section.append(el("h4", {}, "Answers"), list);
  return section;
}

async function main() {
  const root = document.getElementById("reference");
  let doc;
  try {
    const res = await fetch("/api/v1/openapi.json");
    if (!res.ok) throw new Error("the service answered " + res.status);
    doc = await res.json();
  } catch (e) {
    root.replaceChildren(el("p", { role: "alert" }, "The API document could not be loaded: " + e.message));
    root.removeAttribute("aria-busy");
    return;
  }
  const byTag = new Map((doc.tags || []).map((t) => [t.name, { tag: t, ops: [] }]));
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of ["get", "put", "post", "patch", "delete"]) {
      const op = item[method];
      if (!op) continue;
      const tag = (op.tags || ["other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, { tag: { name: tag }, ops: [] });
      byTag.get(tag).ops.push([path, method, op]);
    }
  }
  const nav = el("ul", { class: "ref-toc" });
  const sections = [];
  for (const { tag, ops } of byTag.values()) {
    if (!ops.length) continue;
    const id = "tag-" + tag.name.replace(/[^A-Za-z0-9_-]/g, "-");
    nav.append(el("li", {}, el("a", { href: "#" + id }, tag.name), tag.description ? " — " + tag.description : ""));
    const section = el("section", { id, "aria-labelledby": id + "-h", class: "ref-tag" }, el("h2", { id: id + "-h" }, tag.name));
    for (const [path, method, op] of ops) section.append(operation(doc, path, method, op));
    sections.push(section);
  }
  const intro = el("section", { class: "card", "aria-labelledby": "about-h" },
    el("h2", { id: "about-h" }, doc.info.title + " " + doc.info.version + " (OpenAPI " + doc.openapi + ")"));
  for (const para of (doc.info.description || "").split("\n\n")) intro.append(el("p", {}, para));
  root.replaceChildren(intro, el("nav", { "aria-label": "Operations by area" }, nav), ...sections);
  root.removeAttribute("aria-busy");
}

main();

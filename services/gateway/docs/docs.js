// Renders /api/openapi.json as a searchable list of operations. No dependencies, and every
// text from the spec is set as textContent (never parsed as HTML).
"use strict";

const METHODS = ["get", "post", "put", "patch", "delete"];
let spec = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  Object.entries(attrs || {}).forEach(([name, value]) => node.setAttribute(name, value));
  children.flat(Infinity).forEach((child) => {
    if (child === null || child === undefined || child === "") return;
    node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
  });
  return node;
}

function resolve(schema, seen) {
  let current = schema || {};
  const visited = seen || new Set();
  while (current.$ref && !visited.has(current.$ref)) {
    visited.add(current.$ref);
    const name = current.$ref.replace("#/components/schemas/", "");
    current = (spec.components.schemas || {})[name] || {};
  }
  return current;
}

function typeOf(schema) {
  const s = resolve(schema);
  let text = s.type || (s.properties ? "object" : "any");
  if (s.type === "array") text = `array of ${typeOf(s.items)}`;
  if (s.format) text += ` (${s.format})`;
  return text;
}

function constraints(schema) {
  const s = resolve(schema);
  const parts = [];
  if (s.enum) parts.push(`one of ${s.enum.map((v) => JSON.stringify(v)).join(", ")}`);
  if (s.minLength !== undefined || s.maxLength !== undefined) parts.push(`length ${s.minLength ?? 0}–${s.maxLength ?? "∞"}`);
  if (s.minimum !== undefined || s.maximum !== undefined) parts.push(`range ${s.minimum ?? "−∞"}–${s.maximum ?? "∞"}`);
  if (s.minItems !== undefined || s.maxItems !== undefined) parts.push(`items ${s.minItems ?? 0}–${s.maxItems ?? "∞"}`);
  if (s.pattern) parts.push(`pattern ${s.pattern}`);
  if (s.default !== undefined && s.default !== null) parts.push(`default ${JSON.stringify(s.default)}`);
  if (s.readOnly) parts.push("read-only");
  if (s.description) parts.push(s.description);
  return parts.join("; ");
}

// One row per field, nested objects flattened with dotted names.
function fieldRows(schema, prefix, depth, seen) {
  const s = resolve(schema);
  const rows = [];
  const required = new Set(s.required || []);
  Object.entries(s.properties || {}).forEach(([name, field]) => {
    const path = prefix ? `${prefix}.${name}` : name;
    rows.push({ name: path, type: typeOf(field), required: required.has(name), notes: constraints(field) });
    const inner = resolve(field);
    const key = field.$ref || path;
    if (depth < 4 && inner.properties && !seen.has(key)) rows.push(...fieldRows(field, path, depth + 1, new Set([...seen, key])));
    if (depth < 4 && inner.type === "array" && resolve(inner.items).properties) rows.push(...fieldRows(inner.items, `${path}[]`, depth + 1, seen));
  });
  return rows;
}

function fieldTable(rows) {
  if (!rows.length) return el("p", {}, "Any JSON object.");
  return el("table", {},
    el("tr", {}, el("th", {}, "field"), el("th", {}, "type"), el("th", {}, "notes")),
    rows.map((row) => el("tr", {},
      el("td", {}, el("code", {}, row.name), row.required ? el("span", { class: "req" }, " required") : null),
      el("td", {}, el("span", { class: "type" }, row.type)),
      el("td", {}, row.notes))));
}

function parametersSection(parameters) {
  if (!parameters.length) return null;
  return [el("h4", {}, "Parameters"), el("table", {},
    el("tr", {}, el("th", {}, "name"), el("th", {}, "in"), el("th", {}, "type"), el("th", {}, "notes")),
    parameters.map((p) => el("tr", {},
      el("td", {}, el("code", {}, p.name), p.required ? el("span", { class: "req" }, " required") : null),
      el("td", {}, p.in), el("td", {}, el("span", { class: "type" }, typeOf(p.schema))),
      el("td", {}, [p.description, constraints(p.schema)].filter(Boolean).join("; ")))))];
}

function bodySection(body) {
  if (!body) return null;
  return Object.entries(body.content || {}).map(([type, media]) => [
    el("h4", {}, `Request body (${type})`),
    body.description ? el("p", {}, body.description) : null,
    fieldTable(fieldRows(media.schema, "", 0, new Set())),
  ]);
}

function responsesSection(responses) {
  return [el("h4", {}, "Responses"), el("table", {},
    Object.entries(responses || {}).map(([status, response]) => {
      const json = (response.content || {})["application/json"];
      const data = json && resolve(json.schema).properties && resolve(json.schema).properties.data;
      const shape = data && resolve(data).properties ? fieldTable(fieldRows(data, "data", 0, new Set())) : null;
      const types = Object.keys(response.content || {}).filter((t) => t !== "application/json");
      return el("tr", {},
        el("td", {}, el("span", { class: "status" }, status)),
        el("td", {}, response.description || "", types.length ? ` (${types.join(", ")})` : "", shape));
    }))];
}

function securityText(security) {
  const requirements = security || [];
  const named = requirements.map((r) => Object.keys(r)).filter((names) => names.length);
  if (!named.length) return "public";
  return requirements.some((r) => !Object.keys(r).length) ? "token optional" : "token required";
}

function searchText(path, method, op) {
  const parts = [method, path, op.summary, op.description, (op.tags || []).join(" ")];
  (op.parameters || []).forEach((p) => parts.push(p.name));
  Object.values((op.requestBody || {}).content || {}).forEach((m) => fieldRows(m.schema, "", 0, new Set()).forEach((r) => parts.push(r.name)));
  Object.values(op.responses || {}).forEach((r) => parts.push(r.description, ...(r["x-error-codes"] || [])));
  return parts.filter(Boolean).join(" ").toLowerCase();
}

function operationNode(path, method, op, pathParameters) {
  const node = el("details", { "data-search": searchText(path, method, op) },
    el("summary", {},
      el("span", { class: `method ${method}` }, method.toUpperCase()),
      el("span", { class: "path" }, path),
      el("span", { class: "summary" }, op.summary || ""),
      el("span", { class: "lock" }, securityText(op.security))));
  node.addEventListener("toggle", () => {
    if (!node.open || node.dataset.rendered) return;
    node.dataset.rendered = "1";
    node.appendChild(el("div", { class: "body" },
      op.description ? el("p", {}, op.description) : null,
      parametersSection([...(pathParameters || []), ...(op.parameters || [])]),
      bodySection(op.requestBody),
      responsesSection(op.responses)));
  });
  return node;
}

function render() {
  document.getElementById("title").textContent = spec.info.title;
  document.getElementById("version").textContent = `version ${spec.info.version} · OpenAPI ${spec.openapi}`;
  document.getElementById("description").textContent = spec.info.description || "";
  document.title = `${spec.info.title} · reference`;
  const groups = new Map();
  Object.entries(spec.paths).forEach(([path, item]) => {
    METHODS.filter((m) => item[m]).forEach((method) => {
      const tag = (item[method].tags || ["other"])[0];
      if (!groups.has(tag)) groups.set(tag, []);
      groups.get(tag).push(operationNode(path, method, item[method], item.parameters));
    });
  });
  const main = document.getElementById("operations");
  main.replaceChildren(...[...groups.entries()].sort().map(([tag, nodes]) =>
    el("section", { "data-tag": tag }, el("h2", {}, tag), nodes)));
  filter();
}

function filter() {
  const words = document.getElementById("search").value.toLowerCase().split(/\s+/).filter(Boolean);
  let shown = 0;
  let total = 0;
  document.querySelectorAll("section").forEach((section) => {
    let visible = 0;
    section.querySelectorAll("details").forEach((node) => {
      const match = words.every((word) => node.dataset.search.includes(word));
      node.classList.toggle("hidden", !match);
      visible += match ? 1 : 0;
      total += 1;
    });
    section.classList.toggle("hidden", visible === 0);
    shown += visible;
  });
  document.getElementById("count").textContent = `${shown} of ${total} operations`;
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("search").addEventListener("input", filter);
  fetch("/api/openapi.json", { headers: { Accept: "application/json" } })
    .then((response) => {
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      return response.json();
    })
    .then((loaded) => { spec = loaded; render(); })
    .catch((error) => {
      document.getElementById("operations").replaceChildren(el("p", {}, `The API description could not be loaded: ${error.message}`));
    });
});

// Building the page safely. Every value from the API reaches the DOM as a text node or an
// attribute set with setAttribute: nothing here ever parses a string as markup, so a task's
// parameters, errors or labels cannot inject script (the server's CSP forbids inline
// script as a second line of defence).

const SVG_NS = "http://www.w3.org/2000/svg";

/** An HTML element: h("a", {href: "#/tasks"}, "Tasks"). Strings become text nodes. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttributes(el, attrs);
  append(el, children);
  return el;
}

/** An SVG element, the same way. */
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttributes(el, attrs);
  append(el, children);
  return el;
}

function setAttributes(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "href" && !isSafeHref(String(value))) {
      throw new Error(`refusing link target ${value}`);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
}

// Links point inside the console (hash routes) or to this origin's paths; never to a
// scheme such as javascript: that a crafted value could smuggle in.
function isSafeHref(value) {
  return value.startsWith("#") || value.startsWith("/") || value.startsWith("./");
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace an element's content. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A route link: link(["tasks", id], "text"). Each segment is URI-encoded. */
export function link(segments, text, attrs = {}) {
  return h("a", { href: routeHref(segments), ...attrs }, text);
}

export function routeHref(segments, query) {
  const path = "#/" + segments.map((s) => encodeURIComponent(String(s))).join("/");
  const qs = query ? query.toString() : "";
  return qs ? `${path}?${qs}` : path;
}

// ---- formatting --------------------------------------------------------------------

const dateFormat = new Intl.DateTimeFormat(undefined, {
  year: "numeric",
  month: "2-digit",
  day: "2-digit",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});

/** A <time> in the reader's time zone, the exact UTC instant in its tooltip. */
export function time(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return h("time", { datetime: date.toISOString(), title: date.toISOString() }, dateFormat.format(date));
}

export function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

export function shortId(id) {
  const text = String(id ?? "");
  return text.length > 12 ? `${text.slice(0, 12)}…` : text;
}

/** A task id as a link whose accessible name is the whole id. */
export function taskLink(id) {
  if (!id) return h("span", { class: "muted" }, "—");
  return link(["tasks", id], shortId(id), { class: "mono", title: id, "aria-label": `Task ${id}` });
}

export const TERMINAL = new Set([
  "COMPLETED",
  "FAILED",
  "CANCELLED",
  "DEAD_LETTER",
  "COMPLETED_WITH_ERRORS",
]);

export const STATUSES = [
  "QUEUED",
  "RUNNING",
  "RETRYING",
  "COMPLETED",
  "FAILED",
  "CANCELLED",
  "DEAD_LETTER",
  "COMPLETED_WITH_ERRORS",
];

/** A status in words and colour (colour is never the only cue). */
export function badge(status) {
  const text = String(status ?? "UNKNOWN");
  return h("span", { class: `badge status-${text.toLowerCase()}`, "data-status": text }, text);
}

/** Numbers a person reads: 12,345. */
export function number(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return "—";
  return Number(value).toLocaleString(undefined, { maximumFractionDigits: digits });
}

/** A section with a heading, for landmarks and the outline. */
let sectionCounter = 0;
export function section(title, ...children) {
  const id = `section-${++sectionCounter}`;
  return h("section", { "aria-labelledby": id }, h("h2", { id }, title), ...children);
}

/** A <dl> of [term, value] pairs, skipping absent values. */
export function fields(pairs) {
  const dl = h("dl", { class: "fields" });
  for (const [term, value] of pairs) {
    if (value === undefined) continue;
    dl.append(h("div", {}, h("dt", {}, term), h("dd", {}, value ?? h("span", { class: "muted" }, "—"))));
  }
  return dl;
}

/** A message in the page for the reader (and screen readers). */
export function notice(text, kind = "info") {
  return h("p", { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

/** Datetime-local input value (local time) from an ISO instant, and back. */
export function toLocalInput(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 16);
}

export function fromLocalInput(value) {
  if (!value) return "";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString();
}

/** Wait, or stop waiting when the page is left. */
export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

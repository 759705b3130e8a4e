// LLM usage and spend (GET /v1/usage) and the caller's quotas and budgets (GET /v1/quota).
// Either route may be missing on an older server: the page says so for each.

import { get, isNotFound } from "../api.js";
import { h, fill, notice, number, time, section } from "../dom.js";
import { heading, errorNotice, uniqueId } from "./common.js";

const GROUPS = ["user", "team", "task_type", "provider", "day"];

export async function usagePage({ main, params, signal, go }) {
  const range = defaultRange(params);
  const groupBy = params.getAll("group_by").filter((g) => GROUPS.includes(g));
  const usageSlot = h("div", { id: "usage" });
  const quotaSlot = h("div", { id: "quota" });
  main.append(heading("Usage and spend"), usageForm(range, groupBy.length ? groupBy : ["task_type"], go), usageSlot, section("Quotas and budgets", quotaSlot));
  await Promise.all([loadUsage(usageSlot, range, groupBy.length ? groupBy : ["task_type"], signal), loadQuota(quotaSlot, signal)]);
}

function defaultRange(params) {
  const now = new Date();
  const first = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
  return { from: params.get("from") || first.toISOString().slice(0, 10), to: params.get("to") || "" };
}

function usageForm(range, groupBy, go) {
  const fromId = uniqueId("from");
  const toId = uniqueId("to");
  const from = h("input", { id: fromId, type: "date", value: range.from });
  const to = h("input", { id: toId, type: "date", value: range.to });
  const boxes = GROUPS.map((g) => {
    const id = uniqueId(`group-${g}`);
    return h("div", { class: "check" }, h("input", { type: "checkbox", id, name: "group_by", value: g, checked: groupBy.includes(g) }), h("label", { for: id }, g.replace("_", " ")));
  });
  const form = h(
    "form",
    { class: "filters", "aria-label": "Usage range and grouping" },
    h(
      "div",
      { class: "field-row" },
      h("div", { class: "field" }, h("label", { for: fromId }, "From (UTC day)"), from),
      h("div", { class: "field" }, h("label", { for: toId }, "To (UTC day, exclusive; empty: now)"), to),
    ),
    h("fieldset", { class: "statuses" }, h("legend", {}, "Group by"), boxes),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Show usage")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    if (from.value) next.set("from", from.value);
    if (to.value) next.set("to", to.value);
    for (const box of form.querySelectorAll("input[name=group_by]:checked")) next.append("group_by", box.value);
    go("/usage", next);
  });
  return form;
}

async function loadUsage(slot, range, groupBy, signal) {
  const query = { from: `${range.from}T00:00:00Z`, group_by: groupBy };
  if (range.to) query.to = `${range.to}T00:00:00Z`;
  let report;
  try {
    report = await get("/v1/usage", { query, signal });
  } catch (error) {
    if (signal.aborted) return;
    fill(slot, isNotFound(error) ? notice("Usage is not available on this server.", "warning") : errorNotice(error));
    return;
  }
  const items = report.items || [];
  const currency = report.currency || "";
  const keys = [...new Set(items.flatMap((item) => Object.keys(item.group || {})))];
  const total = items.reduce(
    (sum, item) => ({
      prompt: sum.prompt + (item.prompt_tokens || 0),
      completion: sum.completion + (item.completion_tokens || 0),
      calls: sum.calls + (item.calls || 0),
      cost: sum.cost + (item.cost || 0),
    }),
    { prompt: 0, completion: 0, calls: 0, cost: 0 },
  );
  fill(
    slot,
    h("p", { class: "summary" }, `${number(total.calls)} calls, ${number(total.prompt + total.completion)} tokens, ${number(total.cost, 4)} ${currency} in this range.`),
    items.length
      ? h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { id: "usage-table" },
            h("caption", { class: "visually-hidden" }, "Usage by group"),
            h("thead", {}, h("tr", {}, [...keys.map(groupHeading), "Prompt tokens", "Completion tokens", "Calls", `Cost (${currency})`].map((t) => h("th", { scope: "col" }, t)))),
            h(
              "tbody",
              {},
              items.map((item) =>
                h(
                  "tr",
                  {},
                  keys.map((k) => h("td", { class: "mono" }, item.group?.[k] ?? "—")),
                  h("td", { class: "num" }, number(item.prompt_tokens)),
                  h("td", { class: "num" }, number(item.completion_tokens)),
                  h("td", { class: "num" }, number(item.calls)),
                  h("td", { class: "num" }, number(item.cost, 6)),
                ),
              ),
            ),
          ),
        )
      : notice("No usage in this range."),
  );
}

async function loadQuota(slot, signal) {
  let quota;
  try {
    quota = await get("/v1/quota", { signal });
  } catch (error) {
    if (signal.aborted) return;
    fill(slot, isNotFound(error) ? notice("Quotas and budgets are not available on this server.", "warning") : errorNotice(error));
    return;
  }
  const rows = limitsIn(quota, []);
  fill(
    slot,
    rows.length
      ? h(
          "table",
          { id: "quota-table" },
          h("caption", { class: "visually-hidden" }, "Your quotas and budgets"),
          h("thead", {}, h("tr", {}, ["Limit", "Used", "Of", "Resets"].map((t) => h("th", { scope: "col" }, t)))),
          h(
            "tbody",
            {},
            rows.map(({ name, entry }) =>
              h(
                "tr",
                {},
                h("th", { scope: "row" }, name),
                h("td", { class: "num" }, meter(name, entry), " ", number(entry.used, 4)),
                h("td", { class: "num" }, entry.limit === null || entry.limit === undefined ? "no limit" : number(entry.limit, 4)),
                h("td", {}, time(entry.resets_at)),
              ),
            ),
          ),
        )
      : notice("No quotas or budgets apply to you."),
  );
}

function groupHeading(key) {
  const text = key.replace(/_/g, " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** How much of a limit is used; the browser colours it amber past 80 % and red when full. */
function meter(name, entry) {
  const limit = Number(entry.limit) || 0;
  return h("meter", { min: 0, max: limit || 1, low: limit * 0.8, high: limit * 0.95, optimum: 0, value: Number(entry.used) || 0, "aria-label": `${name} used` });
}

/** Every {limit, used, resets_at} object in the answer, named by its path. The contract
 * fixes those three fields, not the nesting, so the page finds them wherever they are. */
function limitsIn(value, path) {
  if (!value || typeof value !== "object") return [];
  if (Array.isArray(value)) return value.flatMap((v, i) => limitsIn(v, [...path, v?.name ?? v?.window ?? String(i)]));
  if ("limit" in value && "used" in value) return [{ name: path.join(" · ").replace(/_/g, " ") || "limit", entry: value }];
  return Object.entries(value).flatMap(([k, v]) => limitsIn(v, [...path, k]));
}

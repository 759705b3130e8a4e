// Dead letters (administrators): the list with its filters, and bulk replay, which always
// shows a dry run's count before it offers to replay.

import { get, post } from "../api.js";
import { h, fill, time, link, taskLink, notice, number, section, toLocalInput, fromLocalInput, sleep } from "../dom.js";
import { heading, errorNotice, Pager, textField, uniqueId } from "./common.js";

const PAGE_SIZE = 50;
const STATES = ["active", "pending", "replaying", "replayed", "discarded", "all"];
const TEXT_FILTERS = [
  ["task_type", "Task type"],
  ["reason", "Reason"],
  ["user_id", "User id"],
  ["task_id", "Task id"],
  ["error_contains", "Error contains"],
];
const TIME_FILTERS = [
  ["since", "Dead-lettered since"],
  ["until", "Dead-lettered before"],
];

export async function deadLetterListPage({ main, params, signal, go }) {
  const filter = {};
  for (const [name] of [...TEXT_FILTERS, ...TIME_FILTERS]) if (params.get(name)) filter[name] = params.get(name);
  const state = STATES.includes(params.get("state")) ? params.get("state") : "active";
  const messages = h("div", { class: "messages" });
  const body = h("tbody");
  const pager = new Pager("Dead-letter pages", () => load());

  main.append(
    heading("Dead letters"),
    filterForm(filter, state, go),
    messages,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { id: "dead-letter-table" },
        h("caption", { class: "visually-hidden" }, "Dead letters, newest first"),
        h("thead", {}, h("tr", {}, ["Dead letter", "Dead-lettered", "Task type", "Reason", "Error", "User", "State", "Task"].map((t) => h("th", { scope: "col" }, t)))),
        body,
      ),
    ),
    pager.element,
    bulkReplay(filter, signal),
  );

  async function load() {
    try {
      const page = await get("/v1/dead-letters", { query: { ...filter, state, limit: PAGE_SIZE, cursor: pager.cursor }, signal });
      pager.loaded(page.next_cursor);
      fill(body, page.items.map(row));
      fill(messages, page.items.length ? "" : notice("No dead letters match these filters."));
    } catch (error) {
      if (!signal.aborted) fill(messages, errorNotice(error));
    }
  }
  await load();
}

function row(d) {
  return h(
    "tr",
    { "data-dead-letter-id": d.id },
    h("td", {}, link(["dead-letters", d.id], d.id.slice(0, 12), { class: "mono", title: d.id, "aria-label": `Dead letter ${d.id}` })),
    h("td", {}, time(d.dead_lettered_at)),
    h("td", { class: "mono" }, d.task_type ?? "—"),
    h("td", {}, d.reason),
    h("td", { class: "error-cell" }, h("strong", {}, d.error?.type ?? ""), d.error?.message ? `: ${clip(d.error.message, 140)}` : ""),
    h("td", { class: "mono" }, d.user_id ?? "—"),
    h("td", {}, d.state),
    h("td", {}, taskLink(d.task_id)),
  );
}

// crypto.randomUUID exists only on HTTPS or localhost; getRandomValues everywhere.
function randomKey() {
  return [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function clip(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function filterForm(filter, state, go) {
  const inputs = {};
  const textFields = TEXT_FILTERS.map(([name, label]) => {
    const [field, input] = textField(label, name, filter[name]);
    inputs[name] = input;
    return field;
  });
  const timeFields = TIME_FILTERS.map(([name, label]) => {
    const id = uniqueId(name);
    inputs[name] = h("input", { id, name, type: "datetime-local", value: toLocalInput(filter[name]) });
    return h("div", { class: "field" }, h("label", { for: id }, label), inputs[name]);
  });
  const stateId = uniqueId("state");
  const stateSelect = h("select", { id: stateId, name: "state" }, STATES.map((s) => h("option", { value: s, selected: s === state }, s)));
  const form = h(
    "form",
    { class: "filters", "aria-label": "Filter dead letters" },
    h("div", { class: "field-row" }, textFields, timeFields, h("div", { class: "field" }, h("label", { for: stateId }, "State"), stateSelect)),
    h(
      "div",
      { class: "actions" },
      h("button", { type: "submit", class: "primary" }, "Apply filters"),
      h("button", { type: "button", onclick: () => go("/dead-letters") }, "Clear filters"),
    ),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const [name] of TEXT_FILTERS) if (inputs[name].value.trim()) next.set(name, inputs[name].value.trim());
    for (const [name] of TIME_FILTERS) if (inputs[name].value) next.set(name, fromLocalInput(inputs[name].value));
    if (stateSelect.value !== "active") next.set("state", stateSelect.value);
    go("/dead-letters", next);
  });
  return form;
}

/** Bulk replay of the filtered pending dead letters: a dry run first, then the job. */
function bulkReplay(filter, signal) {
  const maxId = uniqueId("bulk-max");
  const rateId = uniqueId("bulk-rate");
  const max = h("input", { id: maxId, type: "number", min: 1, step: 1, inputmode: "numeric" });
  const rate = h("input", { id: rateId, type: "number", min: 0.1, step: "any", inputmode: "decimal" });
  const dryRun = h("button", { type: "button", id: "bulk-dry-run" }, "Dry run");
  const replay = h("button", { type: "button", class: "danger", id: "bulk-replay", disabled: true }, "Replay");
  const report = h("div", { class: "messages", id: "bulk-report" });
  let idempotencyKey = null;

  const request = (dry) => {
    const body = { filter, dry_run: dry };
    if (max.value) body.max = Number(max.value);
    if (rate.value) body.rate_per_second = Number(rate.value);
    return body;
  };
  const described = Object.entries(filter).map(([k, v]) => `${k} = ${v}`).join(", ") || "no filter: every pending dead letter";

  dryRun.addEventListener("click", async () => {
    replay.disabled = true;
    try {
      const result = await post("/v1/dead-letters/replay", request(true), { signal });
      idempotencyKey = randomKey();
      fill(
        report,
        notice(`${number(result.matched)} pending dead letters match; ${number(result.would_replay)} would be replayed.`),
        result.sample_ids.length ? h("p", {}, "Sample: ", result.sample_ids.map((id, i) => [i ? ", " : "", link(["dead-letters", id], id.slice(0, 12), { class: "mono", title: id })])) : null,
      );
      replay.textContent = `Replay ${number(result.would_replay)} dead letters`;
      replay.disabled = result.would_replay === 0;
    } catch (error) {
      fill(report, errorNotice(error));
    }
  });
  replay.addEventListener("click", async () => {
    replay.disabled = true;
    try {
      // One key per dry run: a double click or a retry returns the same job.
      const job = await post("/v1/dead-letters/replay", request(false), { signal, headers: { "Idempotency-Key": idempotencyKey } });
      await followJob(job, report, signal);
    } catch (error) {
      fill(report, errorNotice(error));
    }
  });
  [max, rate].forEach((input) => input.addEventListener("input", () => (replay.disabled = true)));

  return section(
    "Bulk replay",
    h("p", {}, `Replays the pending dead letters that match the filters above (${described}), each with a fresh attempt budget. Run a dry run first to see how many.`),
    h(
      "div",
      { class: "field-row" },
      h("div", { class: "field" }, h("label", { for: maxId }, "At most (optional)"), max),
      h("div", { class: "field" }, h("label", { for: rateId }, "Replays per second (optional)"), rate),
    ),
    h("div", { class: "actions" }, dryRun, replay),
    report,
  );
}

async function followJob(job, report, signal) {
  for (;;) {
    const counts = Object.entries(job.counts || {}).map(([k, v]) => `${number(v)} ${k}`).join(", ");
    fill(
      report,
      notice(`Replay job ${job.id}: ${job.state}, ${number(job.position)} of ${number(job.total)} done${counts ? ` (${counts})` : ""}.`),
    );
    if (job.state === "done" || signal.aborted) return;
    await sleep(1000, signal);
    job = await get(`/v1/dead-letters/replay-jobs/${encodeURIComponent(job.id)}`, { signal });
  }
}

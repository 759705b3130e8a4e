// One dead letter (administrators): why it died, its headers and death history, the
// message, and the two ways out: replay (optionally with edited parameters) or discard.

import { get, post, del, isNotFound } from "../api.js";
import { h, fill, time, json, link, taskLink, section, fields, notice, badge, number } from "../dom.js";
import { heading, errorNotice, parseJsonObject, uniqueId } from "./common.js";

export async function deadLetterPage({ main, args: [id], signal }) {
  const path = `/v1/dead-letters/${encodeURIComponent(id)}`;
  let record;
  try {
    record = await get(path, { signal });
  } catch (error) {
    if (signal.aborted) return;
    main.append(heading("Dead letter"), isNotFound(error) ? notice("No such dead letter.", "warning") : errorNotice(error));
    return;
  }
  const task = record.task_id ? await get(`/v1/tasks/${encodeURIComponent(record.task_id)}`, { signal }).catch(() => null) : null;
  const details = h("div");
  const show = (r) =>
    fill(
      details,
      section("Details", overview(r)),
      errorSection(r.error),
      section("Headers", headersTable(r.headers)),
      section("Death history", deathHistory(r.death_history)),
      section("Message body", bodyView(r)),
    );
  const actions = h("div", { class: "dl-actions" });
  main.append(heading("Dead letter"), h("p", { class: "mono subtitle" }, record.id), actions, details);
  const refresh = async () => {
    const latest = await get(path, { signal });
    show(latest);
    fill(actions, actionPanel(latest, task, path, signal, refresh));
  };
  show(record);
  fill(actions, actionPanel(record, task, path, signal, refresh));
}

function overview(r) {
  const linked = r.task;
  return fields([
    ["State", h("span", { id: "dead-letter-state" }, r.state)],
    ["Reason", r.reason],
    ["Task", r.task_id ? taskLink(r.task_id) : null],
    ["Task status", linked ? badge(linked.status) : undefined],
    ["Task attempts", linked ? `${linked.attempts} (replayed ${linked.replays} times)` : undefined],
    ["Task type", r.task_type ? h("span", { class: "mono" }, r.task_type) : null],
    ["User", r.user_id ? h("span", { class: "mono" }, r.user_id) : null],
    ["Dead-lettered", time(r.dead_lettered_at)],
    ["Replayed", r.replayed_at ? time(r.replayed_at) : undefined],
    ["Replayed by", r.replay?.by ?? undefined],
    ["Discarded", r.discarded_at ? time(r.discarded_at) : undefined],
    ["Discarded by", r.discard ? `${r.discard.by ?? "—"}${r.discard.note ? ` (${r.discard.note})` : ""}` : undefined],
    ["Source", r.source],
    ["Dispatch", r.dispatch ?? null],
    ["Generation", `${r.generation}${r.generation ? " (it died again after a replay)" : ""}`],
    ["Replay of", r.replay_of ? link(["dead-letters", r.replay_of], r.replay_of, { class: "mono" }) : undefined],
    ["Message id", r.message_id ? h("span", { class: "mono" }, r.message_id) : null],
    ["Original destination", r.original_destination ? Object.entries(r.original_destination).map(([k, v]) => `${k}: ${v}`).join(", ") : undefined],
  ]);
}

function errorSection(error) {
  if (!error) return "";
  return h(
    "section",
    { class: "error-box", "aria-labelledby": "dl-error-title", id: "dead-letter-error" },
    h("h2", { id: "dl-error-title" }, "Last error"),
    h("p", {}, h("strong", { class: "mono" }, error.type), ": ", error.message),
    error.traceback ? h("details", { class: "traceback" }, h("summary", {}, "Traceback"), h("pre", {}, error.traceback)) : null,
  );
}

function display(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

function headersTable(headers) {
  const entries = Object.entries(headers || {});
  if (!entries.length) return h("p", { class: "muted" }, "No headers.");
  return h(
    "table",
    { class: "kv", id: "dead-letter-headers" },
    h("caption", { class: "visually-hidden" }, "Message headers"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Header"), h("th", { scope: "col" }, "Value"))),
    h("tbody", {}, entries.map(([k, v]) => h("tr", {}, h("th", { scope: "row", class: "mono" }, k), h("td", { class: "mono wrap" }, display(v))))),
  );
}

function deathHistory(history) {
  if (!history || !history.length) return h("p", { class: "muted" }, "No death history.");
  const keys = [...new Set(history.flatMap((entry) => Object.keys(entry)))];
  return h(
    "table",
    { id: "death-history" },
    h("caption", { class: "visually-hidden" }, "Death history, as the broker recorded it"),
    h("thead", {}, h("tr", {}, keys.map((k) => h("th", { scope: "col" }, k)))),
    h("tbody", {}, history.map((entry) => h("tr", {}, keys.map((k) => h("td", { class: "mono wrap" }, entry[k] === undefined ? "" : display(entry[k])))))),
  );
}

function bodyView(r) {
  return [
    h("p", { class: "muted" }, `${r.content_type || "no content type"}, ${number(r.body_size)} bytes${r.body_truncated ? ", truncated" : ""}, ${r.body_encoding}`),
    typeof r.body === "string" ? h("pre", { class: "wrap" }, r.body) : json(r.body),
  ];
}

function actionPanel(record, task, path, signal, refresh) {
  const messages = h("div", { class: "messages", id: "dead-letter-messages" });
  if (record.state !== "pending") {
    const outcome =
      record.state === "replayed" && record.task_id
        ? [notice(`This dead letter was replayed.`), h("p", {}, link(["tasks", record.task_id], "Follow the replayed task", { id: "follow-task" }))]
        : notice(`This dead letter is ${record.state}: nothing more to do.`);
    return [messages, outcome];
  }
  return [messages, h("div", { class: "panels" }, replayForm(record, task, path, signal, refresh, messages), discardForm(path, signal, refresh, messages))];
}

function replayForm(record, task, path, signal, refresh, messages) {
  const editId = uniqueId("edit-parameters");
  const areaId = uniqueId("parameters");
  const current = task?.parameters ?? (record.body && typeof record.body === "object" ? record.body.parameters : null) ?? {};
  const edit = h("input", { type: "checkbox", id: editId });
  const area = h("textarea", { id: areaId, rows: 8, spellcheck: "false", disabled: true, "aria-describedby": `${areaId}-help` }, JSON.stringify(current, null, 2));
  edit.addEventListener("change", () => {
    area.disabled = !edit.checked;
    if (edit.checked) area.focus();
  });
  const button = h("button", { type: "submit", class: "primary", id: "replay" }, "Replay");
  const form = h(
    "form",
    { class: "panel", "aria-label": "Replay this dead letter" },
    h("h2", {}, "Replay"),
    h("p", {}, "Runs the task again with a fresh attempt budget."),
    h("div", { class: "check" }, edit, h("label", { for: editId }, "Replace the task's parameters")),
    h("div", { class: "field" }, h("label", { for: areaId }, "Parameters (JSON object)"), area),
    h("p", { class: "help", id: `${areaId}-help` }, "Validated by the server like a new submission."),
    button,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let body = {};
    if (edit.checked) {
      try {
        body = { parameters: parseJsonObject(area.value, "Parameters") };
      } catch (error) {
        area.setAttribute("aria-invalid", "true");
        fill(messages, notice(error.message, "error"));
        area.focus();
        return;
      }
    }
    button.disabled = true;
    try {
      const result = await post(`${path}/replay`, body, { signal });
      await refresh();
      document.getElementById("dead-letter-messages")?.replaceChildren(notice(`Replay: ${result.outcome.replace("_", " ")}.`));
      document.getElementById("follow-task")?.focus();
    } catch (error) {
      fill(messages, errorNotice(error));
      button.disabled = false;
    }
  });
  return form;
}

function discardForm(path, signal, refresh, messages) {
  const noteId = uniqueId("note");
  const note = h("input", { id: noteId, type: "text", maxlength: 1000, autocomplete: "off" });
  const ask = h("button", { type: "button", class: "danger", id: "discard" }, "Discard…");
  const confirm = h("button", { type: "submit", class: "danger", id: "confirm-discard", hidden: true }, "Yes, discard it");
  ask.addEventListener("click", () => {
    ask.hidden = true;
    confirm.hidden = false;
    confirm.focus();
  });
  const form = h(
    "form",
    { class: "panel", "aria-label": "Discard this dead letter" },
    h("h2", {}, "Discard"),
    h("p", {}, "Keeps the record but never replays it; recorded as an event on the task."),
    h("div", { class: "field" }, h("label", { for: noteId }, "Why (optional)"), note),
    ask,
    confirm,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (confirm.hidden) return;
    confirm.disabled = true;
    try {
      const result = await del(path, { query: { note: note.value.trim() }, signal });
      await refresh();
      document.getElementById("dead-letter-messages")?.replaceChildren(notice(`Discard: ${result.outcome.replace("_", " ")}.`));
    } catch (error) {
      fill(messages, errorNotice(error));
      confirm.disabled = false;
    }
  });
  return form;
}

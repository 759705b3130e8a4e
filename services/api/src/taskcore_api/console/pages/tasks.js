// The task list: filters kept in the address (so a view can be bookmarked or shared,
// without the credential), cursor paging that never counts the collection, and the first
// page polled while the tab is visible so the list follows new and changing tasks.

import { get, session } from "../api.js";
import { h, fill, badge, time, taskLink, notice, number, STATUSES, TERMINAL, toLocalInput, fromLocalInput } from "../dom.js";
import { heading, errorNotice, Pager, whileVisible, textField, uniqueId } from "./common.js";
import { progressBar } from "./progress.js";

const PAGE_SIZE = 50;
const LIST_POLL_MS = 3000;
const LABEL = /^[a-z0-9_.-]{1,63}:[^]{0,256}$/;

let taskTypes = null; // fetched once per page load: the registry changes only on deploys

export async function taskListPage({ main, params, signal, go }) {
  const filters = readFilters(params);
  const status = h("p", { class: "muted live-status", role: "status" });
  const body = h("tbody");
  const messages = h("div", { class: "messages" });
  const admin = session.isAdmin;
  const pager = new Pager("Task list pages", () => load());
  const live = h("input", { type: "checkbox", id: "live-updates", checked: true });

  const columns = ["Task", "Type", "Status", "Progress", "Attempts", "Created", "Finished", ...(admin ? ["User"] : []), "Labels"];
  main.append(
    heading("Tasks"),
    filterForm(filters, admin, go),
    h(
      "div",
      { class: "toolbar" },
      h("div", { class: "check" }, live, h("label", { for: "live-updates" }, "Live updates (first page)")),
      status,
    ),
    messages,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "tasks", id: "task-table" },
        h("caption", { class: "visually-hidden" }, "Tasks, newest first"),
        h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
        body,
      ),
    ),
    pager.element,
  );

  async function load() {
    const page = await get("/v1/tasks", { query: { ...filters.query, limit: PAGE_SIZE, cursor: pager.cursor }, signal });
    pager.loaded(page.next_cursor);
    showRows(body, page.items, admin);
    status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    messages.replaceChildren();
    if (filters.query.label.length && page.items.some((t) => !("labels" in t))) {
      messages.append(notice("This server does not filter by labels: the list shows tasks without that filter.", "warning"));
    }
    if (!page.items.length) messages.append(notice(pager.onFirstPage ? "No tasks match these filters." : "No more tasks."));
  }

  try {
    await load();
  } catch (error) {
    if (signal.aborted) return;
    messages.replaceChildren(errorNotice(error));
  }
  ensureTaskTypes(signal);
  whileVisible(
    LIST_POLL_MS,
    async () => {
      if (!live.checked || !pager.onFirstPage) return;
      try {
        await load();
      } catch (error) {
        // Keep showing the last good page, and say that it is getting old.
        if (!signal.aborted) status.textContent = `Live update failed at ${new Date().toLocaleTimeString()}: ${error.message}`;
      }
    },
    signal,
  );
}

function readFilters(params) {
  return {
    query: {
      status: params.getAll("status").filter((s) => STATUSES.includes(s)),
      task_type: params.get("task_type") || "",
      parent_task_id: params.get("parent_task_id") || "",
      created_after: params.get("created_after") || "",
      created_before: params.get("created_before") || "",
      user_id: params.get("user_id") || "",
      team_id: params.get("team_id") || "",
      label: params.getAll("label"),
    },
  };
}

function filterForm(filters, admin, go) {
  const q = filters.query;
  const statusBoxes = STATUSES.map((s) => {
    const id = uniqueId("status");
    return h(
      "div",
      { class: "check" },
      h("input", { type: "checkbox", id, name: "status", value: s, checked: q.status.includes(s) }),
      h("label", { for: id }, s),
    );
  });
  const [typeField, typeInput] = textField("Task type", "task_type", q.task_type, { list: "task-type-options" });
  const [parentField, parentInput] = textField("Parent task id", "parent_task_id", q.parent_task_id);
  const [teamField, teamInput] = textField("Team", "team_id", q.team_id);
  const [userField, userInput] = textField("User id", "user_id", q.user_id);
  const after = dateField("Created after", "created_after", q.created_after);
  const before = dateField("Created before", "created_before", q.created_before);
  const labels = h("div", { class: "labels" });
  const addLabel = (value = "") => {
    const id = uniqueId("label");
    const input = h("input", { id, name: "label", value, placeholder: "key:value", autocomplete: "off", spellcheck: "false" });
    const row = h(
      "div",
      { class: "label-row" },
      h("label", { for: id, class: "visually-hidden" }, `Label filter ${labels.children.length + 1}`),
      input,
      h("button", { type: "button", class: "small", "aria-label": "Remove this label filter", onclick: () => row.remove() }, "Remove"),
    );
    labels.append(row);
    return input;
  };
  q.label.forEach((l) => addLabel(l));
  const error = h("div", { class: "messages" });

  const form = h(
    "form",
    { class: "filters", "aria-label": "Filter tasks" },
    h("fieldset", { class: "statuses" }, h("legend", {}, "Status"), statusBoxes),
    h("div", { class: "field-row" }, typeField, parentField, after[0], before[0], teamField, admin ? userField : null),
    h(
      "fieldset",
      { class: "label-filters" },
      h("legend", {}, "Labels (all must match)"),
      labels,
      h("button", { type: "button", class: "small", onclick: () => addLabel().focus() }, "Add label filter"),
    ),
    error,
    h(
      "div",
      { class: "actions" },
      h("button", { type: "submit", class: "primary" }, "Apply filters"),
      h("button", { type: "button", onclick: () => go("/tasks") }, "Clear filters"),
    ),
    h("datalist", { id: "task-type-options" }),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const box of form.querySelectorAll("input[name=status]:checked")) next.append("status", box.value);
    const set = (name, value) => value && next.set(name, value.trim());
    set("task_type", typeInput.value);
    set("parent_task_id", parentInput.value);
    set("created_after", fromLocalInput(after[1].value));
    set("created_before", fromLocalInput(before[1].value));
    set("team_id", teamInput.value);
    if (admin) set("user_id", userInput.value);
    const bad = [];
    for (const input of labels.querySelectorAll("input")) {
      const value = input.value.trim();
      input.removeAttribute("aria-invalid");
      if (!value) continue;
      if (!LABEL.test(value)) {
        input.setAttribute("aria-invalid", "true");
        bad.push(value);
      } else next.append("label", value);
    }
    if (bad.length) {
      fill(error, notice(`A label filter is key:value, the key of a-z, 0-9, "_", "." or "-" (at most 63): ${bad.join(", ")}`, "error"));
      return;
    }
    go("/tasks", next);
  });
  return form;
}

function dateField(label, name, iso) {
  const id = uniqueId(name);
  const input = h("input", { id, name, type: "datetime-local", value: toLocalInput(iso) });
  return [h("div", { class: "field" }, h("label", { for: id }, label), input), input];
}

async function ensureTaskTypes(signal) {
  try {
    taskTypes ||= (await get("/v1/task-types", { signal })).items.map((t) => t.name);
  } catch {
    return; // suggestions only
  }
  const list = document.getElementById("task-type-options");
  if (list) list.replaceChildren(...taskTypes.map((name) => h("option", { value: name })));
}

/** Update the rows in place, keyed by task id, so a focused link keeps its focus. */
function showRows(body, tasks, admin) {
  const focused = document.activeElement;
  const existing = new Map([...body.children].map((row) => [row.dataset.taskId, row]));
  const rows = tasks.map((task) => {
    const row = existing.get(task.id);
    if (row && row.dataset.version === String(task.version)) return row;
    return taskRow(task, admin);
  });
  body.replaceChildren(...rows);
  if (focused && focused !== document.activeElement && body.contains(focused)) focused.focus();
}

function taskRow(task, admin) {
  return h(
    "tr",
    { "data-task-id": task.id, "data-version": task.version },
    h("td", {}, taskLink(task.id)),
    h("td", { class: "mono" }, task.task_type),
    h("td", {}, badge(task.status)),
    h("td", {}, TERMINAL.has(task.status) ? "" : progressBar(task.progress, { compact: true }) || ""),
    h("td", { class: "num" }, number(task.attempts)),
    h("td", {}, time(task.created_at)),
    h("td", {}, time(task.finished_at)),
    admin ? h("td", { class: "mono" }, task.user_id) : null,
    h("td", {}, labelList(task.labels)),
  );
}

export function labelList(labels) {
  const entries = Object.entries(labels || {});
  if (!entries.length) return "";
  return h(
    "ul",
    { class: "label-list" },
    entries.map(([k, v]) => h("li", { class: "label" }, `${k}: ${v}`)),
  );
}

// One task: its fields, error, progress, workflow graph, children and event timeline,
// followed live over the task's SSE stream until it is terminal.
//
// Live updates come from the stream (one connection, no polling); the task itself is
// re-read at most once a second while events arrive, and once at the end, for the
// fields events do not carry (result, timestamps, usage).

import { get, post, session, isNotFound } from "../api.js";
import { h, fill, badge, time, json, link, taskLink, section, fields, notice, number, TERMINAL } from "../dom.js";
import { follow } from "../sse.js";
import { renderGraph, stepsTable } from "../graph.js";
import { heading, errorNotice, Pager, whileVisible } from "./common.js";
import { progressBar } from "./progress.js";
import { labelList } from "./tasks.js";

const REFRESH_MS = 1000;
const EVENTS_PAGE = 200;
const CHILDREN_PAGE = 20;
// A dead-lettered task can come back (an operator replays it, perhaps from the CLI).
const DEAD_LETTER_POLL_MS = 5000;

export async function taskPage({ main, args: [id], signal }) {
  const path = `/v1/tasks/${encodeURIComponent(id)}`;
  let task;
  try {
    task = await get(path, { signal });
  } catch (error) {
    if (signal.aborted) return;
    main.append(heading("Task"), isNotFound(error) ? notice("No task with this id is visible to you.", "warning") : errorNotice(error));
    return;
  }
  const view = new TaskView(main, id, path, signal);
  view.show(task);
  view.loadEvents();
  view.followLive();
}

class TaskView {
  constructor(main, id, path, signal) {
    this.id = id;
    this.path = path;
    this.signal = signal;
    this.keys = new Map();
    this.seen = new Set();
    this.waiting = [];
    this.eventsComplete = false;
    this.title = h("span");
    this.liveState = h("span", { class: "live-state", role: "status", id: "live-state" });
    this.messages = h("div", { class: "messages" });
    this.slots = Object.fromEntries(
      ["status", "actions", "overview", "progress", "error", "deadLetters", "workflow", "children", "parameters", "result"].map((k) => [k, h("div", { class: `slot slot-${k}` })]),
    );
    this.timeline = h("ol", { class: "timeline hide-progress", id: "timeline", "aria-label": "Event timeline" });
    this.moreEvents = h("button", { type: "button", hidden: true, onclick: () => this.loadEvents() }, "Load more events");
    this.showProgress = h("input", { type: "checkbox", id: "show-progress" });
    this.showProgress.addEventListener("change", () => this.timeline.classList.toggle("hide-progress", !this.showProgress.checked));
    this.childPager = new Pager("Child task pages", () => this.loadChildren());
    this.childBody = h("tbody");
    main.append(
      heading(this.title),
      h("p", { class: "mono subtitle" }, id),
      h("div", { class: "page-head" }, this.slots.status, this.liveState, this.slots.actions),
      this.messages,
      this.slots.progress,
      this.slots.error,
      this.slots.deadLetters,
      section("Details", this.slots.overview),
      this.slots.workflow,
      this.slots.children,
      section("Parameters", this.slots.parameters),
      this.slots.result,
      section(
        "Events",
        h("div", { class: "check" }, this.showProgress, h("label", { for: "show-progress" }, "Show progress events")),
        this.timeline,
        this.moreEvents,
      ),
    );
  }

  /** Re-render a part only when what it shows changed (keeps focus and scroll). */
  part(name, key, build) {
    const text = JSON.stringify(key);
    if (this.keys.get(name) === text) return;
    this.keys.set(name, text);
    fill(this.slots[name], build());
  }

  show(task) {
    const previous = this.task;
    this.task = task;
    this.title.textContent = task.workflow ? `Workflow ${task.workflow.name || task.id}` : `${task.task_type} task`;
    this.part("status", task.status, () => h("span", { id: "task-status" }, badge(task.status)));
    this.part("actions", [task.status, task.cancel_requested], () => this.actions(task));
    this.part("overview", overviewKey(task), () => overview(task));
    this.part("progress", [task.progress, task.status], () => progressSection(task));
    this.part("error", task.error, () => (task.error ? errorSection(task.error) : ""));
    this.part("workflow", task.workflow ?? null, () => (task.workflow ? workflowSection(task.workflow) : ""));
    this.part("parameters", task.parameters, () => json(task.parameters));
    this.part("result", [task.result, task.status], () => (task.result !== null && task.result !== undefined ? resultSection(task.result) : ""));
    const childCounts = JSON.stringify(task.subtasks ?? null);
    if ((task.subtasks?.total || task.workflow) && childCounts !== this.childCounts) {
      this.childCounts = childCounts;
      this.loadChildren();
    }
    if (session.isAdmin && task.status === "DEAD_LETTER" && previous?.status !== "DEAD_LETTER") this.loadDeadLetters();
    if (task.status !== "DEAD_LETTER") this.part("deadLetters", null, () => "");
  }

  actions(task) {
    if (TERMINAL.has(task.status)) return "";
    if (task.cancel_requested) return h("span", { class: "muted" }, "Cancellation requested");
    const confirm = h("span", { class: "confirm", hidden: true });
    const ask = h("button", { type: "button", class: "danger", id: "cancel-task" }, "Cancel task…");
    const yes = h("button", { type: "button", class: "danger", id: "confirm-cancel" }, "Yes, cancel it");
    const no = h("button", { type: "button" }, "Keep it");
    ask.addEventListener("click", () => {
      ask.hidden = true;
      confirm.hidden = false;
      yes.focus();
    });
    no.addEventListener("click", () => {
      confirm.hidden = true;
      ask.hidden = false;
      ask.focus();
    });
    yes.addEventListener("click", async () => {
      yes.disabled = true;
      try {
        this.show(await post(`${this.path}/cancel`, undefined, { signal: this.signal }));
        fill(this.messages, notice("Cancellation requested."));
      } catch (error) {
        fill(this.messages, errorNotice(error));
        yes.disabled = false;
      }
    });
    confirm.append("Cancel this task? ", yes, " ", no);
    return h("div", { class: "actions" }, ask, confirm);
  }

  async refresh() {
    try {
      this.show(await get(this.path, { signal: this.signal }));
    } catch (error) {
      if (!this.signal.aborted) fill(this.messages, errorNotice(error));
    }
  }

  scheduleRefresh() {
    if (this.refreshTimer) return;
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null;
      if (!this.signal.aborted) this.refresh();
    }, REFRESH_MS);
  }

  async followLive() {
    const states = { live: "Following live", reconnecting: "Reconnecting…", ended: "" };
    try {
      await follow(`${this.path}/stream`, {
        signal: this.signal,
        onState: (state) => {
          this.liveState.textContent = states[state] ?? "";
          this.liveState.dataset.state = state;
        },
        onEvent: (event) => this.onStreamEvent(event),
      });
    } catch (error) {
      if (!this.signal.aborted) fill(this.messages, errorNotice(error));
      return;
    }
    if (this.signal.aborted) return;
    clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    await this.refresh();
    if (this.task.status === "DEAD_LETTER") this.awaitReplay();
  }

  onStreamEvent(event) {
    if (event.type === "state") {
      const task = JSON.parse(event.data);
      this.show(task);
      return TERMINAL.has(task.status);
    }
    const entry = JSON.parse(event.data);
    this.addEvents([entry], true);
    const progress = entry.type === "task.progress" ? entry.data?.progress : this.task.progress;
    this.show({ ...this.task, status: entry.status, progress });
    if (TERMINAL.has(entry.status)) return true;
    this.scheduleRefresh();
    return false;
  }

  async awaitReplay() {
    const watching = new AbortController();
    this.signal.addEventListener("abort", () => watching.abort());
    await whileVisible(
      DEAD_LETTER_POLL_MS,
      async () => {
        const task = await get(this.path, { signal: this.signal });
        if (task.status !== "DEAD_LETTER") {
          watching.abort();
          this.show(task);
          this.followLive();
        }
      },
      watching.signal,
    );
  }

  async loadEvents() {
    try {
      const page = await get(`${this.path}/events`, { query: { limit: EVENTS_PAGE, cursor: this.eventsCursor }, signal: this.signal });
      this.eventsCursor = page.next_cursor;
      this.eventsComplete = !page.next_cursor;
      this.addEvents(page.items, false);
      this.moreEvents.hidden = this.eventsComplete;
      if (!this.seen.size) this.timeline.replaceChildren(h("li", { class: "empty muted" }, "No events yet."));
    } catch (error) {
      if (!this.signal.aborted) this.timeline.after(errorNotice(error));
    }
  }

  /** Add events in sequence order, once each. Live events that arrive while the log is
   * still loading wait for it: the log page may or may not already hold them. */
  addEvents(entries, live) {
    if (live && !this.eventsComplete) {
      this.waiting.push(...entries);
      return;
    }
    this.timeline.querySelector("li.empty")?.remove();
    if (!live && this.eventsComplete) {
      entries = [...entries, ...this.waiting].sort((a, b) => a.sequence - b.sequence);
      this.waiting = [];
    }
    for (const entry of entries) {
      if (this.seen.has(entry.sequence)) continue;
      this.seen.add(entry.sequence);
      this.timeline.append(timelineItem(entry));
    }
    const hidden = this.timeline.querySelectorAll("li.progress-event").length;
    this.showProgress.nextSibling.textContent = `Show progress events (${hidden})`;
  }

  async loadChildren() {
    try {
      const page = await get("/v1/tasks", {
        query: { parent_task_id: this.id, limit: CHILDREN_PAGE, cursor: this.childPager.cursor },
        signal: this.signal,
      });
      this.childPager.loaded(page.next_cursor);
      this.childrenSection();
      fill(this.childSummary, subtaskSummary(this.task.subtasks));
      fill(
        this.childBody,
        page.items.map((child) =>
          h("tr", {}, h("td", {}, taskLink(child.id)), h("td", { class: "mono" }, child.task_type), h("td", {}, badge(child.status)), h("td", {}, time(child.created_at)), h("td", {}, time(child.finished_at))),
        ),
      );
    } catch (error) {
      if (!this.signal.aborted) fill(this.childSummary ?? this.slots.children, errorNotice(error));
    }
  }

  /** Built once, then only its rows and summary change (the pager keeps its focus). */
  childrenSection() {
    if (this.childSummary) return;
    this.childSummary = h("div");
    fill(
      this.slots.children,
      section(
        "Children",
        this.childSummary,
        h(
          "table",
          { class: "children", id: "children" },
          h("caption", { class: "visually-hidden" }, "Child tasks"),
          h("thead", {}, h("tr", {}, ["Task", "Type", "Status", "Created", "Finished"].map((t) => h("th", { scope: "col" }, t)))),
          this.childBody,
        ),
        this.childPager.element,
      ),
    );
  }

  async loadDeadLetters() {
    try {
      const page = await get("/v1/dead-letters", { query: { task_id: this.id, state: "all", limit: 10 }, signal: this.signal });
      this.part("deadLetters", page.items.map((d) => [d.id, d.state]), () =>
        page.items.length
          ? section(
              "Dead letters",
              h(
                "ul",
                { class: "dead-letter-links" },
                page.items.map((d) => h("li", {}, link(["dead-letters", d.id], `${d.reason} · ${d.state}`, { class: "dead-letter-link" }), " ", time(d.dead_lettered_at))),
              ),
            )
          : "",
      );
    } catch {
      // Only a shortcut for admins; the dead-letter pages list them all.
    }
  }
}

function overviewKey(task) {
  const { progress, events, result, parameters, workflow, ...rest } = task;
  return rest;
}

function overview(task) {
  const usage = task.usage;
  return fields([
    ["Status", badge(task.status)],
    ["Type", h("span", { class: "mono" }, task.task_type)],
    ["Id", h("span", { class: "mono" }, task.id)],
    ["User", h("span", { class: "mono" }, task.user_id)],
    ["Team", "team_id" in task ? task.team_id : undefined],
    ["Labels", task.labels && Object.keys(task.labels).length ? labelList(task.labels) : undefined],
    ["Priority", String(task.priority)],
    ["Tier", task.tier],
    ["Attempts", `${task.attempts} (retries in this budget: ${task.retry_count} of ${Math.max(0, task.max_attempts - 1)})`],
    ["Created", time(task.created_at)],
    ["Scheduled for", "scheduled_for" in task ? time(task.scheduled_for) : undefined],
    ["Started", time(task.started_at)],
    ["Last attempt", time(task.last_attempt_at)],
    ["Next attempt", task.next_attempt_at ? time(task.next_attempt_at) : undefined],
    ["Finished", time(task.finished_at)],
    ["Updated", time(task.updated_at)],
    ["Executor", task.execution_node_id ? h("span", { class: "mono" }, task.execution_node_id) : null],
    ["Parent", task.parent_task_id ? taskLink(task.parent_task_id) : undefined],
    ["Root", task.root_task_id && task.root_task_id !== task.id ? taskLink(task.root_task_id) : undefined],
    ["Schedule", task.schedule_id ? h("span", { class: "mono" }, task.schedule_id) : undefined],
    ["Usage", usage ? `${number(usage.prompt_tokens)} prompt + ${number(usage.completion_tokens)} completion tokens, ${number(usage.calls)} calls, cost ${number(usage.cost, 6)}` : undefined],
    ["Version", String(task.version)],
  ]);
}

function progressSection(task) {
  if (!task.progress) return "";
  // A finished task's progress is only what it last reported: no bar that stops at 94%.
  if (TERMINAL.has(task.status)) return section("Last reported progress", json(task.progress));
  return section("Progress", progressBar(task.progress), json(task.progress));
}

function errorSection(error) {
  return h(
    "section",
    { class: "error-box", "aria-labelledby": "error-title", id: "task-error" },
    h("h2", { id: "error-title" }, "Error"),
    h("p", {}, h("strong", { class: "mono" }, error.type), ": ", h("span", { class: "error-message" }, error.message)),
    h("p", { class: "muted" }, error.retryable ? "Retryable." : "Not retryable."),
    error.traceback ? h("details", { open: true, class: "traceback" }, h("summary", {}, "Traceback"), h("pre", {}, error.traceback)) : null,
  );
}

function resultSection(result) {
  const text = JSON.stringify(result, null, 2);
  // Results may be up to a megabyte: fold big ones away until asked for.
  const body = h("pre", { class: "json", id: "task-result" }, text);
  return section("Result", text.length > 4000 ? h("details", {}, h("summary", {}, `Show result (${number(text.length)} characters)`), body) : body);
}

function workflowSection(workflow) {
  return section(
    "Workflow",
    fields([
      ["Name", workflow.name || "—"],
      ["On failure", workflow.on_failure || "fail_fast"],
    ]),
    h("div", { class: "graph-wrap", id: "workflow-graph" }, renderGraph(workflow.steps || {}, { title: workflow.name || "Workflow steps" })),
    stepsTable(workflow.steps || {}),
  );
}

function subtaskSummary(counts) {
  if (!counts || !counts.total) return "";
  const parts = ["queued", "running", "completed", "failed", "cancelled", "dead_letter"]
    .filter((k) => counts[k])
    .map((k) => `${number(counts[k])} ${k.replace("_", " ")}`);
  return h("p", {}, `${number(counts.total)} children: ${parts.join(", ") || "none open"}.`);
}

function timelineItem(entry) {
  const progress = entry.type === "task.progress";
  const data = entry.data && Object.keys(entry.data).length ? entry.data : null;
  return h(
    "li",
    { class: progress ? "progress-event" : "", "data-type": entry.type, "data-sequence": entry.sequence },
    h("span", { class: "seq" }, `#${entry.sequence}`),
    " ",
    time(entry.occurred_at),
    " ",
    h("strong", { class: "event-type" }, entry.type),
    data ? h("details", {}, h("summary", {}, "Data"), json(data)) : null,
  );
}

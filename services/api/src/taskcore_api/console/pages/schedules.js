// Recurring schedules (GET /v1/schedules): list, pause, resume. A server without the
// route answers 404, and the page says schedules are not available there.

import { get, post, session, isNotFound } from "../api.js";
import { h, fill, time, taskLink, notice } from "../dom.js";
import { heading, errorNotice, notAvailable, Pager } from "./common.js";

const PAGE_SIZE = 50;

export async function schedulesPage({ main, signal }) {
  const messages = h("div", { class: "messages" });
  const body = h("tbody");
  const pager = new Pager("Schedule pages", () => load());
  const admin = session.isAdmin;

  async function load() {
    const page = await get("/v1/schedules", { query: { limit: PAGE_SIZE, cursor: pager.cursor }, signal });
    pager.loaded(page.next_cursor);
    fill(body, page.items.map((s) => row(s)));
    fill(messages, page.items.length ? "" : notice("No schedules yet. Create them with POST /v1/schedules."));
  }

  function row(s) {
    const button = h("button", { type: "button", class: "small", "aria-label": `${s.paused ? "Resume" : "Pause"} ${s.name}` }, s.paused ? "Resume" : "Pause");
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const updated = await post(`/v1/schedules/${encodeURIComponent(s.id)}/${s.paused ? "resume" : "pause"}`, undefined, { signal });
        const fresh = row(updated && updated.id ? updated : { ...s, paused: !s.paused });
        tr.replaceWith(fresh);
        fresh.querySelector("button")?.focus();
        fill(messages, notice(`${s.name}: ${s.paused ? "resumed" : "paused"}.`));
      } catch (error) {
        fill(messages, errorNotice(error));
        button.disabled = false;
      }
    });
    const tr = h(
      "tr",
      { "data-schedule-id": s.id },
      h("th", { scope: "row" }, s.name),
      h("td", { class: "mono nowrap" }, s.cron),
      h("td", {}, s.timezone || "UTC"),
      h("td", { class: "mono" }, s.task?.task_type ?? "—"),
      h("td", {}, s.paused ? h("span", { class: "badge status-cancelled" }, "Paused") : h("span", { class: "badge status-completed" }, "Active")),
      h("td", {}, s.paused ? h("span", { class: "muted" }, "—") : time(s.next_run_at)),
      h("td", {}, time(s.last_run_at)),
      h("td", {}, taskLink(s.last_task_id)),
      h("td", {}, `${s.overlap ?? "allow"} / ${s.catch_up ?? "none"}`),
      admin ? h("td", { class: "mono" }, s.user_id ?? "—") : null,
      h("td", {}, button),
    );
    return tr;
  }

  try {
    await load();
  } catch (error) {
    if (signal.aborted) return;
    if (isNotFound(error)) return notAvailable(main, "Schedules", "Schedules are not available on this server.");
    main.append(heading("Schedules"), errorNotice(error));
    return;
  }
  const columns = ["Name", "Cron", "Time zone", "Task type", "State", "Next run", "Last run", "Last task", "Overlap / catch-up", ...(admin ? ["User"] : []), "Action"];
  main.append(
    heading("Schedules"),
    messages,
    h(
      "div",
      { class: "table-wrap" },
      h("table", { id: "schedule-table" }, h("caption", { class: "visually-hidden" }, "Schedules"), h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))), body),
    ),
    pager.element,
  );
}

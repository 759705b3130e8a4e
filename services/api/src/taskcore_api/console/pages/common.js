// Pieces several pages share: headings, error and "not available" messages, pagers, live
// polling while the tab is visible.

import { ApiError } from "../api.js";
import { h, fill, notice, sleep } from "../dom.js";

export function heading(text, ...extra) {
  return h("h1", { tabindex: "-1" }, text, ...extra);
}

/** An error from the API, said plainly (the server's message names the field). */
export function errorNotice(error) {
  const text = error instanceof ApiError ? error.explanation : `The request failed: ${error.message}`;
  return notice(text, "error");
}

/** The page for a route this server does not have (yet): a 404 from the list route. */
export function notAvailable(main, title, sentence) {
  fill(
    main,
    heading(title),
    notice(sentence, "warning"),
    h("p", {}, "This server's API does not offer this route. Newer taskcore versions do."),
  );
}

/**
 * Cursor paging without counting: remembers the cursors that led here, so "Previous"
 * works, and offers "Next" while the server gives a next_cursor.
 */
export class Pager {
  constructor(label, onChange) {
    this.cursors = [null];
    this.next = null;
    this.onChange = onChange;
    this.first = h("button", { type: "button", onclick: () => this.go(0) }, "First page");
    this.previous = h("button", { type: "button", onclick: () => this.go(this.cursors.length - 2) }, "Previous page");
    this.nextButton = h("button", { type: "button", onclick: () => this.forward() }, "Next page");
    this.position = h("span", { class: "muted" });
    this.element = h("nav", { class: "pager", "aria-label": label }, this.first, this.previous, this.nextButton, this.position);
    this.update();
  }

  get cursor() {
    return this.cursors[this.cursors.length - 1];
  }

  get onFirstPage() {
    return this.cursors.length === 1;
  }

  reset() {
    this.cursors = [null];
    this.next = null;
  }

  /** After a page loaded: the server's next_cursor. */
  loaded(nextCursor) {
    this.next = nextCursor || null;
    this.update();
  }

  forward() {
    if (!this.next) return;
    this.cursors.push(this.next);
    this.onChange();
  }

  go(index) {
    this.cursors = this.cursors.slice(0, Math.max(1, index + 1));
    this.onChange();
  }

  update() {
    this.first.disabled = this.onFirstPage;
    this.previous.disabled = this.onFirstPage;
    this.nextButton.disabled = !this.next;
    this.position.textContent = `Page ${this.cursors.length}`;
  }
}

/**
 * Run `tick` every `ms` while the tab is visible and the page is open; pauses in a
 * background tab (no requests nobody sees), and ticks at once when it comes back.
 */
export async function whileVisible(ms, tick, signal) {
  const wake = () => {
    if (document.visibilityState === "visible") waiter?.();
  };
  let waiter = null;
  document.addEventListener("visibilitychange", wake);
  signal.addEventListener("abort", () => document.removeEventListener("visibilitychange", wake));
  while (!signal.aborted) {
    await sleep(ms, signal);
    if (signal.aborted) return;
    if (document.visibilityState !== "visible") {
      await new Promise((resolve) => {
        waiter = resolve;
        signal.addEventListener("abort", resolve);
      });
      waiter = null;
      if (signal.aborted) return;
    }
    try {
      await tick();
    } catch (error) {
      if (signal.aborted) return;
      // A failed poll is retried on the next tick; the page shows the last good data.
    }
  }
}

/** A JSON object from a textarea, or a clear reason why not. */
export function parseJsonObject(text, what) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new Error(`${what} is not valid JSON: ${error.message}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new Error(`${what} must be a JSON object.`);
  }
  return value;
}

/** A labelled text input: returns [wrapper, input]. */
export function textField(label, name, value = "", attrs = {}) {
  const id = `field-${name}-${++fieldCounter}`;
  const input = h("input", { id, name, value: value ?? "", type: "text", autocomplete: "off", spellcheck: "false", ...attrs });
  return [h("div", { class: "field" }, h("label", { for: id }, label), input), input];
}
let fieldCounter = 0;

export function uniqueId(prefix) {
  return `${prefix}-${++fieldCounter}`;
}

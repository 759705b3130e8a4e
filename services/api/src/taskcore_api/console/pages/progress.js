// A task's progress as a bar when its shape says how far along it is. Task types report
// free-form JSON; these are the shapes in common use (ours: diag.sleep's
// {elapsed_seconds, of}). Anything else shows as JSON on the task page.

import { h } from "../dom.js";

const DONE = ["current", "done", "completed", "processed", "elapsed_seconds", "step", "value"];
const TOTAL = ["total", "of", "steps", "max"];

/** How far along, from 0 to 1, or null when the progress does not say. */
export function fractionOf(progress) {
  if (!progress || typeof progress !== "object") return null;
  const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
  if (num(progress.percent) !== null) return clamp(progress.percent / 100);
  if (num(progress.fraction) !== null) return clamp(progress.fraction);
  const total = TOTAL.map((k) => num(progress[k])).find((v) => v !== null && v > 0);
  const done = DONE.map((k) => num(progress[k])).find((v) => v !== null);
  return total !== undefined && done !== undefined ? clamp(done / total) : null;
}

function clamp(x) {
  return Math.min(1, Math.max(0, x));
}

/** A labelled <progress>, or null when the progress has no fraction. */
export function progressBar(progress, { compact = false } = {}) {
  const fraction = fractionOf(progress);
  if (fraction === null) return null;
  const percent = Math.round(fraction * 100);
  return h(
    "span",
    { class: compact ? "progress compact" : "progress" },
    h("progress", { max: 100, value: percent, "aria-label": `Progress ${percent}%` }),
    h("span", { class: "progress-text" }, `${percent}%`),
  );
}

// A workflow's steps as a left-to-right graph in SVG, coloured by status.
//
// Hand-written rather than vendored: a workflow has at most 100 steps, and a layered
// layout (each step one column right of its furthest dependency, rows ordered by the
// mean row of their dependencies to keep edges short) reads well at that size. Graph
// libraries (dagre, elkjs, cytoscape) are 100 KB to 1 MB of script for the same picture.

import { h, svg, routeHref } from "./dom.js";

const NODE_WIDTH = 190;
const NODE_HEIGHT = 48;
const GAP_X = 60;
const GAP_Y = 18;
const PAD = 12;
// A for_each step may run many tasks; the table links the first ones (all are its children).
const SHOWN_TASKS = 20;

/**
 * Pure layout: `steps` is the workflow view's `{"<step id>": {status, task_ids, depends_on}}`.
 * Returns {nodes: [{id, status, taskIds, dependsOn, layer, row, x, y}], edges: [{from, to, d}],
 * width, height}. Unknown dependencies are ignored; a cycle (which the API refuses) cannot
 * loop forever.
 */
export function layoutSteps(steps) {
  const ids = Object.keys(steps || {});
  const known = new Set(ids);
  const deps = new Map(ids.map((id) => [id, (steps[id].depends_on || []).filter((d) => known.has(d) && d !== id)]));
  const layer = new Map();
  const visiting = new Set();
  const layerOf = (id) => {
    if (layer.has(id)) return layer.get(id);
    if (visiting.has(id)) return 0;
    visiting.add(id);
    const value = deps.get(id).reduce((max, d) => Math.max(max, layerOf(d) + 1), 0);
    visiting.delete(id);
    layer.set(id, value);
    return value;
  };
  ids.forEach(layerOf);

  const columns = [];
  for (const id of ids) (columns[layer.get(id)] ||= []).push(id);
  const row = new Map();
  columns.forEach((column, c) => {
    if (c > 0) {
      const weight = (id) => {
        const rows = deps.get(id).filter((d) => layer.get(d) === c - 1).map((d) => row.get(d));
        return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : Number.POSITIVE_INFINITY;
      };
      const weights = new Map(column.map((id) => [id, weight(id)]));
      column.sort((a, b) => weights.get(a) - weights.get(b) || 0);
    }
    column.forEach((id, r) => row.set(id, r));
  });

  const tallest = Math.max(1, ...columns.map((c) => c.length));
  const height = PAD * 2 + tallest * NODE_HEIGHT + (tallest - 1) * GAP_Y;
  const width = PAD * 2 + columns.length * NODE_WIDTH + Math.max(0, columns.length - 1) * GAP_X;
  const nodes = ids.map((id) => {
    const c = layer.get(id);
    const offset = ((tallest - columns[c].length) * (NODE_HEIGHT + GAP_Y)) / 2;
    return {
      id,
      status: steps[id].status || "PENDING",
      taskIds: steps[id].task_ids || [],
      dependsOn: deps.get(id),
      layer: c,
      row: row.get(id),
      x: PAD + c * (NODE_WIDTH + GAP_X),
      y: PAD + offset + row.get(id) * (NODE_HEIGHT + GAP_Y),
    };
  });
  const at = new Map(nodes.map((n) => [n.id, n]));
  const edges = nodes.flatMap((node) =>
    node.dependsOn.map((from) => {
      const a = at.get(from);
      const [x1, y1] = [a.x + NODE_WIDTH, a.y + NODE_HEIGHT / 2];
      const [x2, y2] = [node.x, node.y + NODE_HEIGHT / 2];
      const bend = Math.max(20, (x2 - x1) / 2);
      return { from, to: node.id, d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2 - 2},${y2}` };
    }),
  );
  return { nodes, edges, width: Math.max(width, NODE_WIDTH + PAD * 2), height };
}

let graphCounter = 0;

/** The graph as an <svg> element; each step is a <g data-step data-status> and, when it
 * ran as one task, a link to that task's page. */
export function renderGraph(steps, { title = "Workflow steps" } = {}) {
  const layout = layoutSteps(steps);
  const n = ++graphCounter;
  const arrow = `arrow-${n}`;
  const titleId = `graph-title-${n}`;
  const root = svg("svg", {
    class: "workflow-graph",
    viewBox: `0 0 ${layout.width} ${layout.height}`,
    width: layout.width,
    height: layout.height,
    // A group, not an image: its steps are links to their tasks.
    role: "group",
    "aria-labelledby": titleId,
  });
  root.append(
    svg("title", { id: titleId }, `${title}: ${summary(layout.nodes)}`),
    svg(
      "defs",
      {},
      svg(
        "marker",
        { id: arrow, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        svg("path", { d: "M0,0 L10,5 L0,10 z", class: "edge-head" }),
      ),
    ),
  );
  for (const edge of layout.edges) {
    root.append(svg("path", { class: "edge", d: edge.d, "marker-end": `url(#${arrow})`, "data-from": edge.from, "data-to": edge.to }));
  }
  for (const node of layout.nodes) root.append(stepNode(node));
  return root;
}

function stepNode(node) {
  const status = String(node.status);
  const many = node.taskIds.length > 1 ? ` · ${node.taskIds.length} tasks` : "";
  const group = svg(
    "g",
    { class: `step status-${status.toLowerCase()}`, transform: `translate(${node.x},${node.y})`, "data-step": node.id, "data-status": status },
    svg("title", {}, `${node.id}: ${status}${many}`),
    svg("rect", { width: NODE_WIDTH, height: NODE_HEIGHT, rx: 6 }),
    svg("text", { x: 10, y: 20, class: "step-id" }, clip(node.id, 24)),
    svg("text", { x: 10, y: 38, class: "step-status" }, `${status}${many}`),
  );
  if (node.taskIds.length === 1) {
    return svg("a", { href: routeHref(["tasks", node.taskIds[0]]), "aria-label": `Step ${node.id}: ${status}` }, group);
  }
  return group;
}

function clip(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function summary(nodes) {
  const counts = {};
  for (const node of nodes) counts[node.status] = (counts[node.status] || 0) + 1;
  return `${nodes.length} steps (${Object.entries(counts).map(([s, c]) => `${c} ${s}`).join(", ")})`;
}

/** The same steps as a table, for keyboards and screen readers, and every task of a
 * for_each step. */
export function stepsTable(steps) {
  const layout = layoutSteps(steps);
  const ordered = [...layout.nodes].sort((a, b) => a.layer - b.layer || a.row - b.row);
  return h(
    "table",
    { class: "steps" },
    h("caption", {}, "Steps, in dependency order"),
    h("thead", {}, h("tr", {}, ["Step", "Status", "Depends on", "Tasks"].map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      ordered.map((node) =>
        h(
          "tr",
          { "data-step": node.id },
          h("th", { scope: "row", class: "mono" }, node.id),
          h("td", {}, h("span", { class: `badge status-${String(node.status).toLowerCase()}` }, node.status)),
          h("td", { class: "mono" }, node.dependsOn.join(", ") || "—"),
          h(
            "td",
            {},
            node.taskIds.length
              ? [
                  node.taskIds
                    .slice(0, SHOWN_TASKS)
                    .map((id, i) => [i ? ", " : "", h("a", { href: routeHref(["tasks", id]), class: "mono", title: id, "aria-label": `Task ${id}` }, id.slice(0, 8))]),
                  node.taskIds.length > SHOWN_TASKS ? ` and ${node.taskIds.length - SHOWN_TASKS} more` : "",
                ]
              : "—",
          ),
        ),
      ),
    ),
  );
}

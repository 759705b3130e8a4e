// The console's shell: hash routes, sign-in gate, navigation, page life cycles.
//
// Routes live in the URL's fragment (#/tasks/ID), which browsers never send to a server,
// so the API serves one static page. Each page gets an AbortSignal that fires when the
// reader navigates away, which stops its polling, streams and pending requests.

import { session } from "./api.js";
import { h, fill } from "./dom.js";
import { signInPage } from "./pages/signin.js";
import { taskListPage } from "./pages/tasks.js";
import { taskPage } from "./pages/task.js";
import { deadLetterListPage } from "./pages/dead-letters.js";
import { deadLetterPage } from "./pages/dead-letter.js";
import { schedulesPage } from "./pages/schedules.js";
import { usagePage } from "./pages/usage.js";

const ROUTES = [
  { pattern: /^\/signin$/, page: signInPage, open: true },
  { pattern: /^\/tasks$/, page: taskListPage },
  { pattern: /^\/tasks\/([^/]+)$/, page: taskPage },
  { pattern: /^\/dead-letters$/, page: deadLetterListPage, admin: true },
  { pattern: /^\/dead-letters\/([^/]+)$/, page: deadLetterPage, admin: true },
  { pattern: /^\/schedules$/, page: schedulesPage },
  { pattern: /^\/usage$/, page: usagePage },
];

const main = document.getElementById("main");
let leave = null;

function currentRoute() {
  const raw = window.location.hash.replace(/^#/, "");
  const [path, query = ""] = raw.split("?", 2);
  return { path: path || "/tasks", params: new URLSearchParams(query) };
}

/** Go to a route: go("/tasks", params). */
export function go(path, params) {
  const query = params && params.toString();
  window.location.hash = query ? `${path}?${query}` : path;
}

async function render() {
  const { path, params } = currentRoute();
  if (!path.startsWith("/")) return; // an in-page anchor such as #main, not a route
  leave?.abort();
  const controller = new AbortController();
  leave = controller;
  const route = ROUTES.find((r) => r.pattern.test(path));
  if (!route) return go("/tasks");
  if (!route.open && !session.credential) {
    return go("/signin", new URLSearchParams({ next: path === "/signin" ? "/tasks" : `${path}${params.size ? `?${params}` : ""}` }));
  }
  updateChrome(path);
  main.replaceChildren();
  if (route.admin && !session.isAdmin) {
    fill(main, h("h1", { tabindex: "-1" }, "Not available"), h("p", {}, "This page is for administrators."));
  } else {
    const args = path.match(route.pattern).slice(1).map(decodeURIComponent);
    try {
      await route.page({ main, args, params, signal: controller.signal, go });
    } catch (error) {
      if (controller.signal.aborted) return;
      main.append(h("p", { class: "notice notice-error", role: "alert" }, `Something went wrong: ${error.message}`));
    }
  }
  if (!controller.signal.aborted) arrived(firstRender);
  firstRender = false;
}

let firstRender = true;

function arrived(initial) {
  const heading = main.querySelector("h1");
  if (!heading) return;
  document.title = `${heading.textContent} · taskcore console`;
  const autofocus = main.querySelector("[autofocus]");
  if (autofocus) return autofocus.focus();
  // After an in-page navigation, move focus to the new heading so keyboard and
  // screen-reader users land on it. A fresh load leaves focus at the top of the
  // document, where the first Tab reaches "Skip to content".
  if (initial) return;
  heading.setAttribute("tabindex", "-1");
  heading.focus({ preventScroll: true });
  document.getElementById("announcer").textContent = heading.textContent;
}

function updateChrome(path) {
  const signedIn = Boolean(session.credential);
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("account").hidden = !signedIn;
  document.querySelector("[data-admin]").hidden = !session.isAdmin;
  document.getElementById("holder").textContent = signedIn ? `${session.holder} · ${session.role}` : "";
  for (const a of document.querySelectorAll("#nav a")) {
    const active = path === a.dataset.route || path.startsWith(`${a.dataset.route}/`);
    if (active) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

document.getElementById("sign-out").addEventListener("click", () => {
  session.signOut();
  go("/signin");
});

document.getElementById("skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});

window.addEventListener("taskcore:unauthorized", () => {
  session.signOut();
  go("/signin", new URLSearchParams({ expired: "1" }));
});

window.addEventListener("hashchange", render);
render();

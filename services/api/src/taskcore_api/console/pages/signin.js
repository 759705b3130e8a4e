// Sign in with an API key or a JWT. The credential is checked against the API before it
// is kept, in this tab's sessionStorage only.

import { probeCredential, session, ApiError } from "../api.js";
import { h, notice } from "../dom.js";
import { heading } from "./common.js";

export async function signInPage({ main, params, go }) {
  const message = h("div", { class: "messages" });
  if (params.get("expired")) message.append(notice("The server refused your credential: sign in again.", "warning"));
  const input = h("input", {
    id: "credential",
    name: "credential",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    autofocus: true,
    "aria-describedby": "credential-help",
  });
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h(
    "form",
    { class: "signin", "aria-labelledby": "signin-title" },
    h("div", { class: "field" }, h("label", { for: "credential" }, "API key or JWT"), input),
    h(
      "p",
      { id: "credential-help", class: "help" },
      "Kept in this browser tab only (session storage) and sent as a bearer token to this server's API. Closing the tab or signing out forgets it.",
    ),
    button,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const credential = input.value.trim();
    if (!credential) return;
    button.disabled = true;
    message.replaceChildren(notice("Checking…"));
    try {
      const role = await probeCredential(credential);
      session.signIn(credential, role);
      input.value = "";
      const next = params.get("next");
      go(next && next.startsWith("/") && !next.startsWith("/signin") ? next : "/tasks");
    } catch (error) {
      const text =
        error instanceof ApiError && error.status === 401
          ? "The server does not accept this credential."
          : `Could not sign in: ${error.message}`;
      message.replaceChildren(notice(text, "error"));
      input.setAttribute("aria-invalid", "true");
      input.focus();
    } finally {
      button.disabled = false;
    }
  });
  main.append(h("div", { class: "signin-wrap" }, heading("Sign in"), h("span", { id: "signin-title", hidden: true }, "Sign in"), message, form));
}

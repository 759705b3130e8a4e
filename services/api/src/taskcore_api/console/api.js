// The console's only way to the server: the public /v1 API with the operator's bearer
// credential. The credential lives in this tab's sessionStorage (gone when the tab
// closes); it is never put in a URL, a cookie or localStorage, and requests omit cookies.

const CREDENTIAL = "taskcore.console.credential";
const ROLE = "taskcore.console.role";

// The console is served at <api root>/ui/, so the API is one level up. Resolving it from
// the page's own address keeps the console working behind a proxy that adds a prefix.
export const API_ROOT = new URL("../", new URL(".", window.location.href));

export const session = {
  get credential() {
    return window.sessionStorage.getItem(CREDENTIAL);
  },
  /** "admin" or "user", as the server showed it at sign-in (a display hint only: the
   * server checks every call itself). */
  get role() {
    return window.sessionStorage.getItem(ROLE) || "user";
  },
  get isAdmin() {
    return this.role === "admin";
  },
  /** What to call the signed-in holder: a JWT's subject, else the kind of credential. */
  get holder() {
    return describeCredential(this.credential);
  },
  signIn(credential, role) {
    window.sessionStorage.setItem(CREDENTIAL, credential);
    window.sessionStorage.setItem(ROLE, role);
  },
  signOut() {
    window.sessionStorage.removeItem(CREDENTIAL);
    window.sessionStorage.removeItem(ROLE);
  },
};

export class ApiError extends Error {
  constructor(status, code, message, details = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = Array.isArray(details) ? details : [];
  }

  /** The message with the fields the server named, for people. */
  get explanation() {
    const fields = this.details
      .filter((d) => d && d.field)
      .map((d) => `${d.field}: ${d.reason}`)
      .join("; ");
    return fields ? `${this.message} (${fields})` : this.message;
  }
}

export const isNotFound = (error) => error instanceof ApiError && error.status === 404;

/** Build a /v1 URL; array values repeat the parameter, empty values are left out. */
export function apiUrl(path, query = {}) {
  const url = new URL(path.replace(/^\//, ""), API_ROOT);
  for (const [name, value] of Object.entries(query)) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item !== undefined && item !== null && item !== "") url.searchParams.append(name, item);
    }
  }
  return url;
}

function headersFor(credential, extra = {}) {
  return { Accept: "application/json", Authorization: `Bearer ${credential}`, ...extra };
}

/**
 * Call the API and return its JSON. Throws ApiError with the server's error body. A 401
 * with the stored credential signs the tab out (the key was revoked or the token expired).
 */
export async function call(method, path, { query, body, signal, credential, headers } = {}) {
  const stored = credential === undefined;
  const key = stored ? session.credential : credential;
  if (!key) throw new ApiError(401, "unauthorized", "You are not signed in.");
  const init = {
    method,
    headers: headersFor(key, headers),
    signal,
    cache: "no-store",
    credentials: "omit",
    redirect: "error",
  };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(apiUrl(path, query), init);
  if (!response.ok) {
    const error = await errorOf(response);
    if (error.status === 401 && stored) window.dispatchEvent(new CustomEvent("taskcore:unauthorized"));
    throw error;
  }
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path, options = {}) => call("GET", path, options);
export const post = (path, body, options = {}) => call("POST", path, { ...options, body });
export const del = (path, options = {}) => call("DELETE", path, options);

/** Open a text/event-stream with the Authorization header (EventSource cannot send one). */
export async function openStream(path, { signal, lastEventId } = {}) {
  const headers = headersFor(session.credential, { Accept: "text/event-stream" });
  if (lastEventId) headers["Last-Event-ID"] = lastEventId;
  const response = await fetch(apiUrl(path), {
    headers,
    signal,
    cache: "no-store",
    credentials: "omit",
    redirect: "error",
  });
  if (!response.ok) {
    const error = await errorOf(response);
    if (error.status === 401) window.dispatchEvent(new CustomEvent("taskcore:unauthorized"));
    throw error;
  }
  return response;
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not our JSON error shape (a proxy's page, say): fall back to the status line.
  }
  const error = body && typeof body === "object" ? body.error : null;
  if (error && typeof error === "object") {
    return new ApiError(response.status, error.code || "error", error.message || response.statusText, error.details);
  }
  return new ApiError(response.status, "http_error", `The server answered ${response.status} ${response.statusText}.`);
}

/** Check a credential and learn its role: any user may list tasks; only admins may list
 * dead letters (a user gets 403 there). */
export async function probeCredential(credential) {
  await call("GET", "/v1/tasks", { query: { limit: 1 }, credential });
  try {
    await call("GET", "/v1/dead-letters", { query: { limit: 1 }, credential });
    return "admin";
  } catch (error) {
    if (error instanceof ApiError && (error.status === 403 || error.status === 404)) return "user";
    throw error;
  }
}

function describeCredential(credential) {
  if (!credential) return "";
  const parts = credential.split(".");
  if (parts.length === 3) {
    try {
      // Read for display only; the server verifies the token on every call.
      const payload = JSON.parse(atob(parts[1].replace(/-/g, "+").replace(/_/g, "/")));
      if (payload && typeof payload.sub === "string") return payload.sub;
    } catch {
      // Not a JWT after all: an API key with dots in it.
    }
  }
  return "API key";
}

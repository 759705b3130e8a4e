// Server-Sent Events read from a fetch() body. EventSource cannot send an Authorization
// header, and putting the credential in the URL would leak it into logs and history, so
// the console parses the text/event-stream format itself (the WHATWG "parse an event
// stream" rules: CR, LF or CRLF line ends, `data` lines joined with "\n", comments ignored).

import { openStream, ApiError } from "./api.js";
import { sleep } from "./dom.js";

export class SseParser {
  constructor() {
    this.buffer = "";
    this.lastEventId = "";
    this.retry = null;
    this.resetEvent();
  }

  resetEvent() {
    this.data = [];
    this.type = "";
  }

  /** Feed decoded text; returns the events it completed, as {type, data, id}. */
  push(text) {
    this.buffer += text;
    const events = [];
    let start = 0;
    for (;;) {
      const cr = this.buffer.indexOf("\r", start);
      const lf = this.buffer.indexOf("\n", start);
      if (cr === -1 && lf === -1) break;
      let end = cr === -1 ? lf : lf === -1 ? cr : Math.min(cr, lf);
      let next = end + 1;
      if (this.buffer[end] === "\r") {
        // A CR at the very end may be the first half of a CRLF: wait for more text.
        if (end === this.buffer.length - 1) break;
        if (this.buffer[end + 1] === "\n") next += 1;
      }
      const event = this.line(this.buffer.slice(start, end));
      if (event) events.push(event);
      start = next;
    }
    this.buffer = this.buffer.slice(start);
    return events;
  }

  line(line) {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.type = value;
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
    return null;
  }

  dispatch() {
    if (this.data.length === 0) {
      this.resetEvent();
      return null;
    }
    const event = { type: this.type || "message", data: this.data.join("\n"), id: this.lastEventId };
    this.resetEvent();
    return event;
  }
}

/**
 * Follow a stream until `onEvent` returns true (e.g. the task is terminal) or `signal`
 * aborts. A dropped connection reconnects with Last-Event-ID, so nothing is missed or
 * repeated; a refusal (404, 401, 403) is thrown, since retrying cannot help.
 * `onState` hears "live", "reconnecting" and "ended".
 */
export async function follow(path, { onEvent, onState = () => {}, signal }) {
  let lastEventId = "";
  let delay = 1000;
  while (!signal.aborted) {
    try {
      const response = await openStream(path, { signal, lastEventId });
      onState("live");
      delay = 1000;
      const parser = new SseParser();
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const event of parser.push(decoder.decode(value, { stream: true }))) {
          if (event.id) lastEventId = event.id;
          if (onEvent(event)) {
            reader.cancel().catch(() => {});
            onState("ended");
            return;
          }
        }
      }
      if (parser.retry) delay = parser.retry;
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && error.status < 500) throw error;
    }
    // The server closed early (a restart, a proxy's timeout) or the network dropped.
    onState("reconnecting");
    await sleep(delay, signal);
    delay = Math.min(delay * 2, 15000);
  }
}

/**
 * The live connection: an EventSource on `/api/v1/events` (the session cookie authenticates it).
 * The browser reconnects by itself when the stream drops on the network; when the server refused
 * the reconnection (a session that ended answers 401) the browser gives up, so the page asks the
 * API once (a 401 there goes to the sign-in form) and opens a new stream. The state is shown so an
 * operator knows whether the page is current.
 */
import { useEffect, useRef, useState } from "preact/hooks";
import { api } from "./api.js";

export type LiveState = "connecting" | "live" | "down";

export interface FleetMessage {
  kinds: string[];
  hosts: string[];
  more: boolean;
}

/** What the page is told after a reconnection: anything may have changed while it was not listening. */
export const RESYNC: FleetMessage = { kinds: [], hosts: [], more: true };

/** How long the page waits before opening a new stream after the server refused one. */
const REOPEN_MS = 3000;

export function useLive(onMessage: (message: FleetMessage) => void): LiveState {
  const [state, setState] = useState<LiveState>("connecting");
  const handler = useRef(onMessage);
  handler.current = onMessage;
  useEffect(() => {
    let source: EventSource | null = null;
    let reopen: ReturnType<typeof setTimeout> | undefined;
    // Every `hello` after the first is a reconnection: the page reloads what it shows.
    let connectedBefore = false;
    const open = () => {
      const current = new EventSource("/api/v1/events");
      source = current;
      current.addEventListener("hello", () => {
        setState("live");
        if (connectedBefore) handler.current(RESYNC);
        connectedBefore = true;
      });
      current.addEventListener("error", () => {
        setState("down");
        if (current.readyState !== EventSource.CLOSED) return;
        reopen = setTimeout(() => {
          void api.summary().then(open, open);
        }, REOPEN_MS);
      });
      current.addEventListener("fleet", (event) => {
        setState("live");
        try {
          handler.current(JSON.parse((event as MessageEvent<string>).data) as FleetMessage);
        } catch {
          // A message this page cannot read changes nothing.
        }
      });
    };
    open();
    return () => {
      clearTimeout(reopen);
      source?.close();
    };
  }, []);
  return state;
}

/**
 * The live connection: an EventSource on `/api/v1/events` (the session cookie authenticates it).
 * The browser reconnects by itself when the stream drops; the state is shown so an operator knows
 * whether the page is current.
 */
import { useEffect, useRef, useState } from "preact/hooks";

export type LiveState = "connecting" | "live" | "down";

export interface FleetMessage {
  kinds: string[];
  hosts: string[];
  more: boolean;
}

export function useLive(onMessage: (message: FleetMessage) => void): LiveState {
  const [state, setState] = useState<LiveState>("connecting");
  const handler = useRef(onMessage);
  handler.current = onMessage;
  useEffect(() => {
    const source = new EventSource("/api/v1/events");
    source.addEventListener("hello", () => setState("live"));
    source.addEventListener("open", () => setState("live"));
    source.addEventListener("error", () => setState(source.readyState === EventSource.CLOSED ? "down" : "down"));
    source.addEventListener("fleet", (event) => {
      setState("live");
      try {
        handler.current(JSON.parse((event as MessageEvent<string>).data) as FleetMessage);
      } catch {
        // A message this page cannot read changes nothing.
      }
    });
    return () => source.close();
  }, []);
  return state;
}

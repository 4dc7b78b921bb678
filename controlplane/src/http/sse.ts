/**
 * `GET /api/v1/events`: the fleet's changes as server-sent events. Events are coalesced: at most
 * one `fleet` message per `flushMs`, naming the hosts that changed and what changed, so a fleet
 * reporting thousands of runs a minute costs a dashboard a few messages a second. A comment line
 * every `keepAliveMs` keeps proxies from closing an idle stream. The browser's EventSource
 * reconnects by itself (after `retry` ms) when the stream ends.
 *
 * Before each write the stream asks `allowed()`: a dashboard session that ended (logout, expiry)
 * gets nothing more, and its stream is closed (the page then finds itself signed out).
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { FleetEventKind, FleetEvents } from "../events/events.js";

/** Hosts named in one message; past it the message says `more: true` and a page reloads everything. */
export const MAX_HOSTS_PER_MESSAGE = 200;

export interface SseOptions {
  flushMs: number;
  keepAliveMs: number;
  /** Milliseconds the browser waits before reconnecting. */
  retryMs: number;
}

export const DEFAULT_SSE: SseOptions = { flushMs: 250, keepAliveMs: 25_000, retryMs: 2000 };

/** The message a dashboard receives: `event: fleet`, `data:` this as JSON. */
export interface FleetMessage {
  kinds: FleetEventKind[];
  hosts: string[];
  more: boolean;
}

export function streamEvents(
  req: IncomingMessage,
  res: ServerResponse,
  events: FleetEvents,
  options: SseOptions = DEFAULT_SSE,
  allowed: () => boolean = () => true,
): void {
  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    // nginx and others buffer responses unless told not to.
    "x-accel-buffering": "no",
  });
  res.write(`retry: ${options.retryMs}\nevent: hello\ndata: {}\n\n`);
  const kinds = new Set<FleetEventKind>();
  const hosts = new Set<string>();
  let more = false;
  let timer: NodeJS.Timeout | null = null;
  /** False (and the stream ended) when the session behind it is gone. */
  const still = () => {
    let yes = false;
    try {
      yes = allowed();
    } catch {
      // A check that fails closes the stream; it never takes the process down from a timer.
    }
    if (yes) return true;
    stop();
    res.end();
    return false;
  };
  const flush = () => {
    timer = null;
    if (!still()) return;
    const message: FleetMessage = { kinds: [...kinds], hosts: [...hosts], more };
    kinds.clear();
    hosts.clear();
    more = false;
    res.write(`event: fleet\ndata: ${JSON.stringify(message)}\n\n`);
  };
  const unsubscribe = events.subscribe((event) => {
    kinds.add(event.kind);
    if (event.host !== null) {
      if (hosts.size < MAX_HOSTS_PER_MESSAGE) hosts.add(event.host);
      else if (!hosts.has(event.host)) more = true;
    }
    timer ??= setTimeout(flush, options.flushMs);
  });
  const keepAlive = setInterval(() => {
    if (still()) res.write(": keep-alive\n\n");
  }, options.keepAliveMs);
  keepAlive.unref();
  function stop() {
    unsubscribe();
    clearInterval(keepAlive);
    if (timer) clearTimeout(timer);
  }
  req.once("close", stop);
  res.once("close", stop);
}

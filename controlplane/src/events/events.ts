/**
 * What changed in the fleet, as it happens: the ingest emits an event once a message is stored,
 * the webhook once a push is recorded; the HTTP API streams them to dashboards (server-sent
 * events). In-process only: a listener that throws is dropped, never the emitter.
 */

/** Heartbeats are not events: they change nothing a page shows but the time last seen. */
export type FleetEventKind = "status" | "report" | "facts" | "push";

export interface FleetEvent {
  kind: FleetEventKind;
  /** The host the message came from; null for a push. */
  host: string | null;
}

export type FleetListener = (event: FleetEvent) => void;

export interface FleetEvents {
  emit(event: FleetEvent): void;
  /** Returns the unsubscriber. */
  subscribe(listener: FleetListener): () => void;
  /** Listeners subscribed now (the dashboards connected). */
  readonly listeners: number;
}

export function createFleetEvents(): FleetEvents {
  const listeners = new Set<FleetListener>();
  return {
    emit(event) {
      for (const listener of listeners) {
        try {
          listener(event);
        } catch {
          listeners.delete(listener);
        }
      }
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    get listeners() {
      return listeners.size;
    },
  };
}

/**
 * The control plane's view of MQTT: an embedded broker (Aedes, `embedded.ts`) or a client of an
 * external one (Mosquitto, EMQX, HiveMQ: `external.ts`). The ingest sees only this interface.
 */
export interface InboundMessage {
  topic: string;
  payload: Buffer;
  /** The authenticated username (embedded broker), or null when unknown (external broker). */
  sender: string | null;
  /** A retained message replayed at subscribe (external broker, a replica's cold start). */
  retained?: boolean;
}

export interface FleetBroker {
  start(): Promise<void>;
  /** Called for every message published by a client (not by the control plane itself). */
  onMessage(handler: (message: InboundMessage) => void): void;
  publish(topic: string, payload: string, options: { qos: 0 | 1; retain?: boolean }): Promise<void>;
  /** Disconnects a host's live connection (after `hosts remove`). */
  disconnect(host: string): Promise<void>;
  close(): Promise<void>;
}

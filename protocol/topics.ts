/**
 * MQTT protocol v1: topic names and the small constants both sides share. Loads nothing (the
 * agent's supervisor imports it and must stay light); the payload schemas are in `schema.ts`.
 *
 * A host's id is its MQTT client id and its username. Every payload is JSON with `v: 1`.
 */

export const PROTOCOL_VERSION = 1;
export const TOPIC_ROOT = "driftless/v1";

/** Host ids: what a topic level, a client id and a username can all hold safely. */
export const HOST_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** A payload larger than this is dropped by the control plane; the agent trims diffs to stay under it. */
export const MAX_PAYLOAD_BYTES = 1024 * 1024;

/** The heartbeat period; a host whose heartbeat is late by this many beats is `stale`. */
export const HEARTBEAT_MS = 60_000;
export const STALE_AFTER_BEATS = 3;

/** Topics an agent publishes on (its own id only). */
export type HostUpTopic = "status" | "heartbeat" | "report" | "facts";
/** Topics the control plane publishes on for one host. */
export type HostDownTopic = "ack" | "cmd";

export function hostTopic(host: string, kind: HostUpTopic | HostDownTopic): string {
  return `${TOPIC_ROOT}/hosts/${host}/${kind}`;
}

export const FLEET_CMD_TOPIC = `${TOPIC_ROOT}/fleet/cmd`;

/** The subscription of the control plane's ingest (shared between replicas with `$share/driftlessctl/`). */
export const INGEST_FILTER = `${TOPIC_ROOT}/hosts/+/+`;
export const SHARED_GROUP = "driftlessctl";

/** `driftless/v1/hosts/{id}/{kind}` split, or null for any other topic. */
export function parseHostTopic(topic: string): { host: string; kind: string } | null {
  const parts = topic.split("/");
  if (parts.length !== 5 || `${parts[0]}/${parts[1]}` !== TOPIC_ROOT || parts[2] !== "hosts") return null;
  const host = parts[3] as string;
  if (!HOST_ID_PATTERN.test(host)) return null;
  return { host, kind: parts[4] as string };
}

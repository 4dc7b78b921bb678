/**
 * The parts of the store's behaviour that do not depend on the database: presence as seen at a
 * given time, and the acknowledgement watermark. Pure, shared by every FleetStore implementation.
 */
import { HEARTBEAT_MS, STALE_AFTER_BEATS } from "../../../protocol/topics.js";
import type { Presence } from "./types.js";

/** An online host with no heartbeat (or online status) for this long is `stale`. */
export const STALE_AFTER_MS = HEARTBEAT_MS * STALE_AFTER_BEATS;

/** Presence at `nowMs`, from the last status state and the time of the last sign of life. */
export function effectivePresence(stored: string | null, lastBeatMs: number | null, nowMs: number): Presence {
  if (stored === null) return "unknown";
  if (stored === "online") return lastBeatMs === null || nowMs - lastBeatMs > STALE_AFTER_MS ? "stale" : "online";
  return stored as Presence;
}

/** How a status or facts message reached the control plane. */
export interface ReceiveOptions {
  /**
   * A retained message the broker replayed when this replica subscribed (a replica's cold
   * start), not one the host just sent: no sign of life, and nothing new when the session is
   * already known.
   */
  replayed?: boolean;
}

/**
 * Whether a status changes anything, given the host's stored session and presence. Replicas
 * that all read the status topic may apply the same statuses in different orders; these rules
 * make that come out the same:
 * - a status of an older session never overrides a newer one;
 * - within one session, `offline` and `lost` are final (the agent says them last, then a new
 *   connection has a new session): an `online` of that session arriving after them is a late
 *   copy, ignored, so two replicas never flip a host back and forth;
 * - a replayed (retained) status of a session already stored is ignored: a replica starting
 *   must not make a silent host look alive again.
 */
export function statusApplies(
  stored: { session: number; presence: string | null },
  status: { session: number; state: string },
  options: ReceiveOptions = {},
): boolean {
  if (status.session < stored.session) return false;
  if (status.session > stored.session) return true;
  if (options.replayed && stored.presence !== null) return false;
  return !(status.state === "online" && (stored.presence === "offline" || stored.presence === "lost"));
}

/**
 * The acknowledgement state of one host: `upTo` (every report with a seq up to it is stored, or
 * null before the first report) and the seq ranges stored above it, not yet contiguous.
 *
 * A report covers the seqs [from, seq] (`from` = seq for a run, `fromSeq` for a summary that folds
 * older runs). Reports arrive in order per host, so a range starting above `upTo + 1` means one in
 * between was lost on the way (a broker restarted without persistence, or the ingest is shared
 * between replicas): `upTo` stays, the agent keeps the later reports in its outbox and sends them
 * again from `upTo + 1`. The first report ever seen from a host sets `upTo` to its seq (what came
 * before was acknowledged by someone else, or never existed).
 */
export interface AckState {
  upTo: number | null;
  pending: Array<[number, number]>;
}

export function advanceAck(state: AckState, from: number, to: number): AckState {
  let upTo = state.upTo;
  let pending = state.pending.slice();
  if (upTo === null) upTo = to;
  else if (from <= upTo + 1) upTo = Math.max(upTo, to);
  else if (!pending.some(([a, b]) => a <= from && b >= to)) pending.push([from, to]);
  // Pull in the ranges that have become contiguous, drop the ones now covered.
  pending.sort((x, y) => x[0] - y[0]);
  const rest: Array<[number, number]> = [];
  for (const range of pending) {
    if (range[0] <= upTo + 1) upTo = Math.max(upTo, range[1]);
    else rest.push(range);
  }
  pending = rest.filter(([, b]) => b > upTo);
  return { upTo, pending };
}

import { describe, expect, it } from "vitest";
import { validate } from "../../controlplane/src/ingest/ingest.js";
import { advanceAck, effectivePresence, STALE_AFTER_MS } from "../../controlplane/src/store/logic.js";
import { MAX_PAYLOAD_BYTES } from "../../protocol/topics.js";
import { runReport, statusPayload } from "../support/payloads.js";

const message = (topic: string, payload: unknown, sender: string | null = "edge-1") => ({
  topic,
  payload: Buffer.isBuffer(payload)
    ? payload
    : Buffer.from(typeof payload === "string" ? payload : JSON.stringify(payload)),
  sender,
});
const T = "driftless/v1/hosts/edge-1";

describe("ingest validation", () => {
  it("accepts a host's own message, with its kind, host and parsed payload", () => {
    expect(validate(message(`${T}/report`, runReport("edge-1", 3)))).toMatchObject({
      kind: "report",
      host: "edge-1",
      payload: { seq: 3, kind: "run" },
    });
    // An external broker does not say who sent it: topic and payload must agree.
    expect(validate(message(`${T}/status`, statusPayload("edge-1"), null))).toMatchObject({ kind: "status" });
  });

  it("says why it drops the rest", () => {
    const drop = (m: ReturnType<typeof message>) => (validate(m) as { drop?: string }).drop;
    expect(drop(message("driftless/v1/hosts/edge-1/cmd", { v: 1, host: "edge-1", cmd: "converge" }))).toBe("topic");
    expect(drop(message("driftless/v1/hosts/edge-1/ack", { v: 1, host: "edge-1", upTo: 1 }))).toBe("topic");
    expect(drop(message("driftless/v1/hosts/bad host/status", statusPayload("edge-1")))).toBe("topic");
    expect(drop(message("other/topic", {}))).toBe("topic");
    expect(drop(message(`${T}/report`, Buffer.alloc(MAX_PAYLOAD_BYTES + 1, 0x20)))).toBe("size");
    expect(drop(message(`${T}/report`, "{"))).toBe("json");
    expect(drop(message(`${T}/report`, { ...runReport("edge-1", 1), extra: true }))).toBe("schema");
    expect(drop(message(`${T}/report`, runReport("edge-2", 1)))).toBe("identity");
    expect(drop(message(`${T}/report`, runReport("edge-1", 1), "edge-2"))).toBe("identity");
    expect(drop(message(`${T}/status`, statusPayload("edge-2"), null))).toBe("identity");
  });
});

describe("store logic", () => {
  it("is stale only when an online host was silent longer than the stale period", () => {
    expect(effectivePresence(null, null, 0)).toBe("unknown");
    expect(effectivePresence("online", 1000, 1000 + STALE_AFTER_MS)).toBe("online");
    expect(effectivePresence("online", 1000, 1001 + STALE_AFTER_MS)).toBe("stale");
    expect(effectivePresence("lost", 1000, 1001 + STALE_AFTER_MS)).toBe("lost");
  });

  it("acknowledges only what is contiguous", () => {
    let state = advanceAck({ upTo: null, pending: [] }, 5, 5);
    expect(state).toEqual({ upTo: 5, pending: [] });
    state = advanceAck(state, 8, 8);
    state = advanceAck(state, 9, 12);
    expect(state).toEqual({
      upTo: 5,
      pending: [
        [8, 8],
        [9, 12],
      ],
    });
    state = advanceAck(state, 6, 7);
    expect(state).toEqual({ upTo: 12, pending: [] });
    // Older than the mark (an agent whose state was reset): nothing moves back.
    expect(advanceAck(state, 1, 1)).toEqual({ upTo: 12, pending: [] });
  });
});

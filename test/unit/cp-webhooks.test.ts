import { createHmac } from "node:crypto";
import { describe, expect, it } from "vitest";
import { classifyDelivery } from "../../controlplane/src/http/webhooks.js";

const SECRET = "It's a Secret to Everybody";
const SHA = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c";
const hmac = (body: Buffer, secret = SECRET) => createHmac("sha256", secret).update(body).digest("hex");
const push = (extra: Record<string, unknown> = {}) =>
  Buffer.from(JSON.stringify({ ref: "refs/heads/main", before: "0".repeat(40), after: SHA, ...extra }));

describe("GitHub deliveries", () => {
  it("accepts the HMAC-SHA256 signature GitHub documents (its own test vector)", () => {
    // docs.github.com, "Validating webhook deliveries": this body and secret give this signature.
    const body = Buffer.from("Hello, World!");
    expect(hmac(body)).toBe("757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
  });

  it("reads the branch and commit of a signed push", () => {
    const body = push();
    const delivery = classifyDelivery(
      { "x-github-event": "push", "x-github-delivery": "d-1", "x-hub-signature-256": `sha256=${hmac(body)}` },
      body,
      SECRET,
    );
    expect(delivery).toEqual({
      kind: "push",
      provider: "github",
      deliveryId: "github:d-1",
      ref: "refs/heads/main",
      branch: "main",
      commit: SHA,
    });
  });

  it("refuses a wrong, missing or malformed signature before reading the body", () => {
    const body = push();
    const headers = { "x-github-event": "push", "x-github-delivery": "d-1" };
    for (const signature of [
      undefined,
      `sha256=${hmac(body, "other")}`,
      hmac(body),
      "sha256=zz",
      `sha1=${hmac(body)}`,
    ]) {
      expect(classifyDelivery({ ...headers, "x-hub-signature-256": signature }, body, SECRET)).toMatchObject({
        kind: "unauthorized",
        provider: "github",
      });
    }
    // The signature of other bytes (a re-serialised body) does not match.
    const reformatted = Buffer.from(JSON.stringify(JSON.parse(body.toString()), null, 2));
    expect(
      classifyDelivery({ ...headers, "x-hub-signature-256": `sha256=${hmac(reformatted)}` }, body, SECRET).kind,
    ).toBe("unauthorized");
  });

  it("ignores pings, other events, tags and deleted branches", () => {
    const sign = (body: Buffer, event: string) => ({
      "x-github-event": event,
      "x-hub-signature-256": `sha256=${hmac(body)}`,
    });
    const ping = Buffer.from(JSON.stringify({ zen: "Keep it logically awesome.", hook_id: 1 }));
    expect(classifyDelivery(sign(ping, "ping"), ping, SECRET)).toMatchObject({ kind: "ignored", reason: "ping" });
    expect(classifyDelivery(sign(ping, "issues"), ping, SECRET)).toMatchObject({
      kind: "ignored",
      reason: "not a push",
    });
    const tag = push({ ref: "refs/tags/v1" });
    expect(classifyDelivery(sign(tag, "push"), tag, SECRET)).toMatchObject({ kind: "ignored" });
    const deleted = push({ after: "0".repeat(40), deleted: true });
    expect(classifyDelivery(sign(deleted, "push"), deleted, SECRET)).toMatchObject({
      kind: "ignored",
      reason: "branch deleted",
    });
  });

  it("says a signed body that is not a push payload is invalid", () => {
    const body = Buffer.from("not json");
    expect(
      classifyDelivery({ "x-github-event": "push", "x-hub-signature-256": `sha256=${hmac(body)}` }, body, SECRET),
    ).toMatchObject({ kind: "invalid", provider: "github" });
    const noCommit = push({ after: "main" });
    expect(
      classifyDelivery(
        { "x-github-event": "push", "x-hub-signature-256": `sha256=${hmac(noCommit)}` },
        noCommit,
        SECRET,
      ),
    ).toMatchObject({ kind: "invalid", reason: "push without a commit id" });
  });

  it("recognises a retry without a delivery id by its bytes", () => {
    const body = push();
    const headers = { "x-github-event": "push", "x-hub-signature-256": `sha256=${hmac(body)}` };
    const a = classifyDelivery(headers, body, SECRET);
    const b = classifyDelivery(headers, Buffer.from(body), SECRET);
    expect(a.kind === "push" && b.kind === "push" && a.deliveryId === b.deliveryId).toBe(true);
  });
});

describe("Gitea and Forgejo deliveries", () => {
  it("checks the hex signature of X-Gitea-Signature or X-Forgejo-Signature", () => {
    const body = push({ ref: "refs/heads/release/1.2" });
    // Gitea also sends X-GitHub-Event: its own headers decide.
    const gitea = { "x-gitea-event": "push", "x-github-event": "push", "x-gitea-delivery": "g-1" };
    expect(classifyDelivery({ ...gitea, "x-gitea-signature": hmac(body) }, body, SECRET)).toMatchObject({
      kind: "push",
      provider: "gitea",
      deliveryId: "gitea:g-1",
      branch: "release/1.2",
    });
    expect(classifyDelivery({ ...gitea, "x-gitea-signature": hmac(body, "x") }, body, SECRET).kind).toBe(
      "unauthorized",
    );
    const forgejo = { "x-forgejo-event": "push", "x-forgejo-delivery": "f-1", "x-forgejo-signature": hmac(body) };
    expect(classifyDelivery(forgejo, body, SECRET)).toMatchObject({ kind: "push", deliveryId: "gitea:f-1" });
    expect(classifyDelivery({ "x-forgejo-event": "push" }, body, SECRET).kind).toBe("unauthorized");
  });
});

describe("GitLab deliveries", () => {
  const body = Buffer.from(
    JSON.stringify({
      object_kind: "push",
      ref: "refs/heads/main",
      before: "95790bf891e76fee5e1747ab589903a6a1f80f22",
      after: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
      checkout_sha: SHA,
    }),
  );

  it("compares X-Gitlab-Token with the secret and takes checkout_sha as the commit", () => {
    const headers = { "x-gitlab-event": "Push Hook", "x-gitlab-token": SECRET, "x-gitlab-event-uuid": "u-1" };
    expect(classifyDelivery(headers, body, SECRET)).toMatchObject({
      kind: "push",
      provider: "gitlab",
      deliveryId: "gitlab:u-1",
      commit: SHA,
    });
    expect(classifyDelivery({ ...headers, "idempotency-key": "k-1" }, body, SECRET)).toMatchObject({
      deliveryId: "gitlab:k-1",
    });
    expect(classifyDelivery({ ...headers, "x-gitlab-token": `${SECRET} ` }, body, SECRET).kind).toBe("unauthorized");
    expect(classifyDelivery({ "x-gitlab-event": "Push Hook" }, body, SECRET).kind).toBe("unauthorized");
  });

  it("ignores tag pushes and deleted branches (checkout_sha null)", () => {
    const headers = { "x-gitlab-event": "Tag Push Hook", "x-gitlab-token": SECRET };
    expect(classifyDelivery(headers, body, SECRET)).toMatchObject({ kind: "ignored", reason: "not a push" });
    const deleted = Buffer.from(JSON.stringify({ ref: "refs/heads/x", after: "0".repeat(40), checkout_sha: null }));
    expect(
      classifyDelivery({ "x-gitlab-event": "Push Hook", "x-gitlab-token": SECRET }, deleted, SECRET),
    ).toMatchObject({ kind: "ignored", reason: "branch deleted" });
  });
});

it("does not know a request without any provider's event header", () => {
  expect(classifyDelivery({ "x-hub-signature-256": "sha256=00" }, push(), SECRET)).toEqual({ kind: "unknown" });
});

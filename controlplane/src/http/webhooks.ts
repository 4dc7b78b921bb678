/**
 * Git webhooks: who sent a delivery, whether it is authentic, and which branch and commit a push
 * brought. Pure: headers, raw body and secret in, a decision out; the HTTP handler dedupes and
 * publishes.
 *
 * Providers:
 * - GitHub: `X-GitHub-Event`, `X-GitHub-Delivery`, `X-Hub-Signature-256: sha256=<hex>` (HMAC-SHA256
 *   of the raw body with the secret).
 * - Gitea and Forgejo: `X-Gitea-Event` / `X-Forgejo-Event`, `X-Gitea-Delivery` / `X-Forgejo-Delivery`,
 *   `X-Gitea-Signature` / `X-Forgejo-Signature: <hex>` (same HMAC). Checked before GitHub: they also
 *   send `X-GitHub-Event`.
 * - GitLab: `X-Gitlab-Event`, `X-Gitlab-Token` (the secret itself), `Idempotency-Key` or
 *   `X-Gitlab-Event-UUID` as the delivery id.
 *
 * The signature or token is checked before the body is parsed; comparisons are constant-time.
 */
import { createHash, createHmac, timingSafeEqual } from "node:crypto";

export type Provider = "github" | "gitea" | "gitlab";

export type Headers = Readonly<Record<string, string | string[] | undefined>>;

export type Delivery =
  /** Not from a provider we know (no event header). */
  | { kind: "unknown" }
  | { kind: "unauthorized"; provider: Provider; reason: string }
  /** Authentic, but nothing to do: a ping, another event, a tag, a deleted branch. */
  | { kind: "ignored"; provider: Provider; event: string; reason: string }
  /** Authentic but unreadable. */
  | { kind: "invalid"; provider: Provider; reason: string }
  | { kind: "push"; provider: Provider; deliveryId: string; ref: string; branch: string; commit: string };

const COMMIT = /^[0-9a-f]{40}([0-9a-f]{24})?$/;
const ZERO = /^0+$/;

function header(headers: Headers, name: string): string | undefined {
  const value = headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}

/** Equal-length digests compared in constant time: neither the content nor the length leaks. */
export function safeEqual(a: string | Buffer, b: string | Buffer): boolean {
  const da = createHash("sha256").update(a).digest();
  const db = createHash("sha256").update(b).digest();
  return timingSafeEqual(da, db);
}

function hmacHex(secret: string, body: Buffer): string {
  return createHmac("sha256", secret).update(body).digest("hex");
}

/** `<hex>` (Gitea, Forgejo) or `sha256=<hex>` (GitHub) checked against the body's HMAC. */
function signatureMatches(given: string | undefined, prefix: string, secret: string, body: Buffer): boolean {
  if (given === undefined || !given.startsWith(prefix)) return false;
  const hex = given.slice(prefix.length).trim().toLowerCase();
  return safeEqual(hex, hmacHex(secret, body));
}

export function classifyDelivery(headers: Headers, body: Buffer, secret: string): Delivery {
  const giteaEvent = header(headers, "x-forgejo-event") ?? header(headers, "x-gitea-event");
  if (giteaEvent !== undefined) {
    const forgejo = header(headers, "x-forgejo-signature");
    const gitea = header(headers, "x-gitea-signature");
    const ok =
      forgejo !== undefined || gitea !== undefined
        ? signatureMatches(forgejo ?? gitea, "", secret, body)
        : signatureMatches(header(headers, "x-hub-signature-256"), "sha256=", secret, body);
    if (!ok) return { kind: "unauthorized", provider: "gitea", reason: "signature missing or wrong" };
    const id = header(headers, "x-forgejo-delivery") ?? header(headers, "x-gitea-delivery");
    return readPush("gitea", giteaEvent, giteaEvent === "push", id, body);
  }
  const gitlabEvent = header(headers, "x-gitlab-event");
  if (gitlabEvent !== undefined) {
    const token = header(headers, "x-gitlab-token");
    if (token === undefined || !safeEqual(token, secret)) {
      return { kind: "unauthorized", provider: "gitlab", reason: "token missing or wrong" };
    }
    const id = header(headers, "idempotency-key") ?? header(headers, "x-gitlab-event-uuid");
    return readPush("gitlab", gitlabEvent, gitlabEvent === "Push Hook", id, body);
  }
  const githubEvent = header(headers, "x-github-event");
  if (githubEvent !== undefined) {
    if (!signatureMatches(header(headers, "x-hub-signature-256"), "sha256=", secret, body)) {
      return { kind: "unauthorized", provider: "github", reason: "signature missing or wrong" };
    }
    return readPush("github", githubEvent, githubEvent === "push", header(headers, "x-github-delivery"), body);
  }
  return { kind: "unknown" };
}

function readPush(provider: Provider, event: string, isPush: boolean, id: string | undefined, body: Buffer): Delivery {
  if (!isPush) return { kind: "ignored", provider, event, reason: event === "ping" ? "ping" : "not a push" };
  let payload: unknown;
  try {
    payload = JSON.parse(body.toString("utf8"));
  } catch {
    return { kind: "invalid", provider, reason: "body is not JSON" };
  }
  if (typeof payload !== "object" || payload === null)
    return { kind: "invalid", provider, reason: "body is not an object" };
  const fields = payload as Record<string, unknown>;
  const ref = fields.ref;
  if (typeof ref !== "string") return { kind: "invalid", provider, reason: "push without a ref" };
  if (!ref.startsWith("refs/heads/")) return { kind: "ignored", provider, event, reason: `not a branch: ${ref}` };
  const branch = ref.slice("refs/heads/".length);
  // GitLab's checkout_sha is the branch's head; null when the branch was deleted.
  const commit = provider === "gitlab" && "checkout_sha" in fields ? fields.checkout_sha : fields.after;
  if (commit === null || (typeof commit === "string" && ZERO.test(commit)) || fields.deleted === true) {
    return { kind: "ignored", provider, event, reason: "branch deleted" };
  }
  if (typeof commit !== "string" || !COMMIT.test(commit)) {
    return { kind: "invalid", provider, reason: "push without a commit id" };
  }
  if (branch.length === 0 || branch.length > 200) return { kind: "invalid", provider, reason: "branch name" };
  // Without a delivery id a retry is recognised by its bytes.
  const deliveryId = id?.trim() ? id.trim() : `sha256-${createHash("sha256").update(body).digest("hex")}`;
  return { kind: "push", provider, deliveryId: `${provider}:${deliveryId}`.slice(0, 200), ref, branch, commit };
}

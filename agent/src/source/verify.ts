/**
 * Commit signature verification: the agent applies a commit only when its signature verifies
 * against the host's trust configuration (`trust:` in agent.yaml).
 *
 * - SSH signatures (`git -c gpg.format=ssh commit -S`) are checked with node:crypto only
 *   (`ssh-signature.ts`, keys in `ssh-key.ts`), against keys in git's allowed-signers format
 *   (`signers.ts`; ssh-keygen(1), ALLOWED SIGNERS), the way `git verify-commit` does through
 *   `ssh-keygen -Y verify -n git`.
 * - OpenPGP signatures (`gpg`) are checked with the `openpgp` package (`openpgp.ts`), loaded on
 *   first use only: it is large, and most runs verify nothing.
 *
 * This module is the entry: it loads the trust files and sends each signature to its checker.
 *
 * What a signature covers is the commit object without its `gpgsig` header, byte for byte:
 * `splitSignedCommit()` cuts a raw commit object the way git does. (isomorphic-git's
 * `readCommit().payload` is not that: see `splitSignedCommit`.)
 *
 * Nothing here prints private material: messages name keys by their public fingerprints.
 */
import { type DriftlessError, ErrorList } from "../errors.js";
import { PGP_BEGIN, parseOpenPgpKeys, verifyOpenPgp } from "./openpgp.js";
import { parseAllowedSigners } from "./signers.js";
import { SSH_BEGIN, verifySsh } from "./ssh-signature.js";
import { type SignatureVerdict, startsWith, type TrustStore, trustError } from "./trust-common.js";

export type { AllowedSigner, SignatureVerdict, TrustStore } from "./trust-common.js";

/** The trust files, read by the caller (the path names the file in messages). */
export interface TrustSources {
  allowedSigners?: { file: string; text: string };
  openpgpKeys?: { file: string; text: string };
}

export interface VerifyOptions {
  /** The commit id, to name the commit in `reason` ("commit 1a2b3c4 is not signed"). */
  commit?: string;
}

/**
 * Parses both trust files. Rejects with an `ErrorList` of every problem found (each a
 * `DriftlessError` with code `ETRUST`, phase `load`, located by file and line), not the first.
 */
export async function loadTrustStore(sources: TrustSources): Promise<TrustStore> {
  const errors: DriftlessError[] = [];
  const store: TrustStore = {};
  if (!sources.allowedSigners && !sources.openpgpKeys) {
    errors.push(trustError("no trust file given: name allowedSigners or openpgpKeys"));
  }
  if (sources.allowedSigners) {
    const { file, text } = sources.allowedSigners;
    const parsed = parseAllowedSigners(file, text);
    errors.push(...parsed.errors);
    if (parsed.errors.length === 0 && parsed.signers.length === 0) {
      errors.push(trustError("lists no keys, so no SSH-signed commit could be trusted", { file }));
    }
    store.allowedSigners = { file, signers: parsed.signers };
  }
  if (sources.openpgpKeys) {
    const { file, text } = sources.openpgpKeys;
    const parsed = await parseOpenPgpKeys(file, text);
    errors.push(...parsed.errors);
    store.openpgp = { file, keys: parsed.keys };
  }
  if (errors.length > 0) throw new ErrorList(errors);
  return store;
}

/**
 * Verifies a commit's signature. `payload` is the commit object without its gpgsig header
 * (a string is taken as UTF-8), `signature` the gpgsig value (undefined: unsigned). Never
 * throws for a bad, unknown or malformed signature: the verdict says why it is not trusted.
 */
export async function verifyCommitSignature(
  store: TrustStore,
  payload: string | Uint8Array,
  signature: string | undefined,
  options: VerifyOptions = {},
): Promise<SignatureVerdict> {
  const commit = options.commit ? `commit ${options.commit.slice(0, 7)}` : "the commit";
  if (signature === undefined || signature.trim() === "") {
    return { trusted: false, reason: `${commit} is not signed` };
  }
  const bytes = typeof payload === "string" ? Buffer.from(payload, "utf8") : Buffer.from(payload);
  const armor = signature.replace(/\r\n/g, "\n").trim();
  if (armor.startsWith(SSH_BEGIN)) return verifySsh(store, bytes, armor, commit);
  if (armor.startsWith(PGP_BEGIN)) return verifyOpenPgp(store, bytes, armor, commit);
  if (armor.startsWith("-----BEGIN SIGNED MESSAGE-----")) {
    return { trusted: false, reason: `${commit} is signed with X.509 (gpgsm), which Driftless does not support` };
  }
  return { trusted: false, reason: `${commit} has a signature in a format Driftless does not recognise` };
}

/**
 * Splits a raw commit object (`git cat-file commit`, or isomorphic-git's
 * `readObject({ format: "content" })`) into what its signature signs and the signature, exactly
 * as git does (commit.c, parse_buffer_signed_by_header): the `gpgsig` header and its
 * continuation lines are removed, as is any other `gpgsig*` header (`gpgsig-sha256`); every
 * other byte, the message included, is kept as it is.
 *
 * Use this rather than isomorphic-git's `readCommit().payload`, which rebuilds the payload and
 * gets it wrong: for SSH signatures it returns the headers twice plus the signature (it looks
 * for `-----END PGP SIGNATURE-----`), it drops headers written after `gpgsig`, and it normalises
 * the message (CR removed, trailing newlines collapsed), so valid signatures fail.
 */
export function splitSignedCommit(raw: Uint8Array): { payload: Uint8Array; signature?: string } {
  const buf = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
  const payload: Buffer[] = [];
  const signature: Buffer[] = [];
  let inSignature = false;
  let otherSignature = false;
  let sawSignature = false;
  let line = 0;
  while (line < buf.length) {
    const newline = buf.indexOf(0x0a, line);
    let next = newline === -1 ? buf.length : newline + 1;
    let sig = -1;
    if (inSignature && buf[line] === 0x20) {
      sig = line + 1;
    } else if (startsWith(buf, line, "gpgsig ")) {
      sig = line + "gpgsig ".length;
      otherSignature = false;
    } else if (startsWith(buf, line, "gpgsig")) {
      otherSignature = true;
    } else if (otherSignature && buf[line] !== 0x20) {
      otherSignature = false;
    }
    if (sig !== -1) {
      signature.push(buf.subarray(sig, next));
      sawSignature = true;
      inSignature = true;
    } else {
      if (buf[line] === 0x0a) next = buf.length; // end of headers: the rest is the message
      if (!otherSignature) payload.push(buf.subarray(line, next));
      inSignature = false;
    }
    line = next;
  }
  const result: { payload: Uint8Array; signature?: string } = { payload: Buffer.concat(payload) };
  if (sawSignature) result.signature = Buffer.concat(signature).toString("utf8");
  return result;
}

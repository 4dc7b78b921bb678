/** SSH commit signatures (SSHSIG, OpenSSH PROTOCOL.sshsig), checked with node:crypto only. */
import { createHash, verify as cryptoVerify } from "node:crypto";
import { errorMessage } from "../errors.js";
import { matchPatternList } from "./signers.js";
import {
  Malformed,
  SshReader,
  sshFingerprint,
  sshPublicKey,
  sshString,
  Unsupported,
  unsignedMpint,
} from "./ssh-key.js";
import { decodeBase64, type SignatureVerdict, type TrustStore, truncate } from "./trust-common.js";

export const SSH_BEGIN = "-----BEGIN SSH SIGNATURE-----";
const SSH_END = "-----END SSH SIGNATURE-----";
const SSHSIG_MAGIC = Buffer.from("SSHSIG");
const GIT_NAMESPACE = "git";

interface SshSig {
  publicKey: Buffer;
  namespace: Buffer;
  reserved: Buffer;
  hashAlgorithm: string;
  signature: Buffer;
}

export function verifySsh(store: TrustStore, payload: Buffer, armor: string, commit: string): SignatureVerdict {
  const fail = (reason: string, fingerprint?: string): SignatureVerdict => ({
    trusted: false,
    format: "ssh",
    ...(fingerprint ? { fingerprint } : {}),
    reason,
  });
  let sig: SshSig;
  let keyType: string;
  try {
    sig = parseSshSig(armor);
    keyType = new SshReader(sig.publicKey).text();
  } catch (error) {
    return fail(`${commit} has a malformed SSH signature (${errorMessage(error)})`);
  }
  const fingerprint = sshFingerprint(sig.publicKey);
  const keyName = `SSH key ${fingerprint}`;
  const namespace = sig.namespace.toString("utf8");
  if (namespace !== GIT_NAMESPACE) {
    return fail(
      `${commit} has an SSH signature made for namespace "${truncate(namespace)}", not "git", so it does not sign Git commits`,
      fingerprint,
    );
  }
  if (keyType.includes("-cert-v01@")) {
    return fail(
      `${commit} is signed with an SSH certificate (${keyType}); Driftless does not support certificates or cert-authority lines`,
      fingerprint,
    );
  }

  // The signature must verify before anything is said about who made it.
  let valid: boolean;
  try {
    valid = checkSshSignature(keyType, sig, payload);
  } catch (error) {
    if (error instanceof Unsupported) return fail(`${commit} is signed with ${keyName}: ${error.message}`, fingerprint);
    return fail(`${commit} has a malformed SSH signature from ${keyName} (${errorMessage(error)})`, fingerprint);
  }
  if (!valid) {
    return fail(
      `${commit} has a bad SSH signature from ${keyName}: the commit was changed after it was signed, or the signature is damaged`,
      fingerprint,
    );
  }

  const allowed = store.allowedSigners;
  if (!allowed) {
    return fail(
      `${commit} is signed with ${keyName}, but no allowed signers file is configured (trust.allowedSigners)`,
      fingerprint,
    );
  }
  const lines = allowed.signers.filter((s) => Buffer.compare(Buffer.from(s.key), sig.publicKey) === 0);
  if (lines.length === 0) {
    return fail(`${commit} is signed with ${keyName}, which is not in ${allowed.file}`, fingerprint);
  }
  const committed = committerTime(payload);
  const refusals: string[] = [];
  for (const line of lines) {
    const where = `${allowed.file}:${line.line}`;
    if (line.certAuthority) {
      // A plain key never matches a cert-authority line (OpenSSH); certificates are not supported.
      refusals.push(
        `${where} lists that key as a certificate authority (cert-authority), which Driftless does not support`,
      );
      continue;
    }
    if (line.namespaces !== undefined && matchPatternList(GIT_NAMESPACE, line.namespaces) !== 1) {
      refusals.push(`${where} allows that key only for namespaces "${line.namespaces}", not "git"`);
      continue;
    }
    // valid-after / valid-before are checked against the committer date, as git does
    // (it passes -Overify-time with that date to ssh-keygen). The date is the signer's claim.
    if (line.validAfter !== undefined || line.validBefore !== undefined) {
      if (committed === null) {
        refusals.push(`${where} limits that key in time, and the commit has no committer date to check it against`);
        continue;
      }
      if (line.validAfter !== undefined && committed < line.validAfter) {
        refusals.push(
          `${where} allows that key only from ${isoTime(line.validAfter)}, and the commit is dated ${isoTime(committed)}`,
        );
        continue;
      }
      if (line.validBefore !== undefined && committed > line.validBefore) {
        refusals.push(
          `${where} allows that key only until ${isoTime(line.validBefore)}, and the commit is dated ${isoTime(committed)}`,
        );
        continue;
      }
    }
    const signer = line.principals.join(",");
    return {
      trusted: true,
      format: "ssh",
      signer,
      fingerprint,
      reason: `${commit} is signed by ${signer} with ${keyName} (${allowed.file}:${line.line})`,
    };
  }
  return fail(`${commit} is signed with ${keyName}, but ${refusals.join("; and ")}`, fingerprint);
}

function parseSshSig(armor: string): SshSig {
  const lines = armor.split("\n").map((l) => l.trim());
  if (lines[0] !== SSH_BEGIN) throw new Malformed(`no "${SSH_BEGIN}" line`);
  const end = lines.indexOf(SSH_END);
  if (end === -1) throw new Malformed(`no "${SSH_END}" line`);
  const blob = decodeBase64(lines.slice(1, end).join(""));
  if (!blob) throw new Malformed("not base64");
  if (blob.length < SSHSIG_MAGIC.length || !blob.subarray(0, SSHSIG_MAGIC.length).equals(SSHSIG_MAGIC)) {
    throw new Malformed("no SSHSIG magic");
  }
  const reader = new SshReader(blob, SSHSIG_MAGIC.length);
  const version = reader.u32();
  if (version !== 1) throw new Malformed(`unsupported SSHSIG version ${version}`);
  const sig: SshSig = {
    publicKey: reader.bytes(),
    namespace: reader.bytes(),
    reserved: reader.bytes(),
    hashAlgorithm: reader.text(),
    signature: reader.bytes(),
  };
  if (!reader.done()) throw new Malformed("trailing data");
  return sig;
}

/** True when the signature is good; throws Unsupported / Malformed when it cannot be checked. */
function checkSshSignature(keyType: string, sig: SshSig, payload: Buffer): boolean {
  if (sig.hashAlgorithm !== "sha256" && sig.hashAlgorithm !== "sha512") {
    throw new Unsupported(`hash algorithm "${truncate(sig.hashAlgorithm)}" is not supported (sha256, sha512)`);
  }
  const digest = createHash(sig.hashAlgorithm).update(payload).digest();
  const signed = Buffer.concat([
    SSHSIG_MAGIC,
    sshString(sig.namespace),
    sshString(sig.reserved),
    sshString(Buffer.from(sig.hashAlgorithm)),
    sshString(digest),
  ]);
  const sigReader = new SshReader(sig.signature);
  const sigType = sigReader.text();
  const sigBytes = sigReader.bytes();
  const key = sshPublicKey(keyType, sig.publicKey);

  switch (key.kind) {
    case "ed25519":
      if (sigType !== "ssh-ed25519") throw new Malformed(`a ${truncate(sigType)} signature from an ssh-ed25519 key`);
      if (sigBytes.length !== 64) throw new Malformed("wrong Ed25519 signature length");
      return cryptoVerify(null, signed, key.key, sigBytes);
    case "rsa": {
      const hash = sigType === "rsa-sha2-256" ? "sha256" : sigType === "rsa-sha2-512" ? "sha512" : null;
      if (!hash) {
        throw new Unsupported(`RSA signature type "${truncate(sigType)}" is not accepted (rsa-sha2-256, rsa-sha2-512)`);
      }
      if (sigBytes.length > key.bytes) throw new Malformed("RSA signature longer than the key");
      // OpenSSH pads a short signature with zeros up to the modulus length.
      const padded = Buffer.concat([Buffer.alloc(key.bytes - sigBytes.length), sigBytes]);
      return cryptoVerify(hash, signed, key.key, padded);
    }
    case "ecdsa": {
      if (sigType !== keyType) throw new Malformed(`a ${truncate(sigType)} signature from an ${keyType} key`);
      const inner = new SshReader(sigBytes);
      const r = unsignedMpint(inner.bytes(), key.size);
      const s = unsignedMpint(inner.bytes(), key.size);
      if (!inner.done()) throw new Malformed("trailing data in the ECDSA signature");
      return cryptoVerify(key.hash, signed, { key: key.key, dsaEncoding: "ieee-p1363" }, Buffer.concat([r, s]));
    }
  }
}

/** The committer date of a commit payload, in milliseconds, or null when it has none. */
function committerTime(payload: Buffer): number | null {
  const end = payload.indexOf("\n\n");
  const headers = payload.subarray(0, end === -1 ? payload.length : end).toString("latin1");
  const line = headers.split("\n").find((l) => l.startsWith("committer "));
  const m = line ? / (\d+) [+-]\d{4}$/.exec(line) : null;
  return m?.[1] ? Number(m[1]) * 1000 : null;
}

function isoTime(ms: number): string {
  return new Date(ms).toISOString().replace(".000Z", "Z");
}

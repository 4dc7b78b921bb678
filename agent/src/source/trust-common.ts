/**
 * What the signature checks share: the trust store's types and small helpers for the messages
 * and encodings of the trust files.
 */
import type { PublicKey } from "openpgp";
import { DriftlessError, type Location } from "../errors.js";

/** One key line of an allowed_signers file. */
export interface AllowedSigner {
  /** 1-based line in the file. */
  line: number;
  /** Principal patterns, as listed (comma-separated in the file, quotes removed). */
  principals: string[];
  /** `namespaces="..."`: the namespace pattern list; absent: every namespace. */
  namespaces?: string;
  /** `cert-authority`: the key signs certificates; Driftless does not support those. */
  certAuthority: boolean;
  /** `valid-after` / `valid-before`, in milliseconds since the epoch. */
  validAfter?: number;
  validBefore?: number;
  /** Key type as written (`ssh-ed25519`, `ssh-rsa`, ...). */
  keyType: string;
  /** The public key blob (SSH wire format). */
  key: Uint8Array;
  /** `SHA256:...`, as ssh-keygen -l prints it. */
  fingerprint: string;
}

export interface TrustStore {
  allowedSigners?: { file: string; signers: AllowedSigner[] };
  openpgp?: { file: string; keys: PublicKey[] };
}

export interface SignatureVerdict {
  trusted: boolean;
  format?: "ssh" | "openpgp";
  /** Who signed: the allowed_signers principals, or the OpenPGP key's primary user id. */
  signer?: string;
  /** The signing key's public fingerprint (`SHA256:...` for SSH, hex for OpenPGP). */
  fingerprint?: string;
  /** Why (not), in one sentence a user understands. */
  reason: string;
}

export function trustError(message: string, location?: Location): DriftlessError {
  return new DriftlessError(message, { code: "ETRUST", phase: "load", ...(location ? { location } : {}) });
}

export function decodeBase64(text: string): Buffer | null {
  if (text.length === 0 || text.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(text)) return null;
  return Buffer.from(text, "base64");
}

export function startsWith(buf: Buffer, at: number, prefix: string): boolean {
  return buf.toString("latin1", at, at + prefix.length) === prefix;
}

/** Quoted user input, cut short: never echo a whole line (it might be key material). */
export function truncate(text: string, max = 40): string {
  return text.length > max ? `${text.slice(0, max)}...` : text;
}

/**
 * SSH public keys and the SSH wire format (RFC 4251): reading key blobs, turning them into
 * node:crypto keys, fingerprints as ssh-keygen prints them.
 */
import { createHash, createPublicKey, type KeyObject } from "node:crypto";
import { errorMessage } from "../errors.js";
import { truncate } from "./trust-common.js";

/** OpenSSH refuses smaller RSA keys (SSH_RSA_MINIMUM_MODULUS_SIZE). */
const MIN_RSA_BITS = 1024;

/** Input that is not what the SSH format says it should be. */
export class Malformed extends Error {}

/** Input that is well formed but that Driftless does not check (an algorithm, a key size). */
export class Unsupported extends Error {}

export type SshKey =
  | { kind: "ed25519"; key: KeyObject }
  | { kind: "rsa"; key: KeyObject; bytes: number }
  | { kind: "ecdsa"; key: KeyObject; hash: string; size: number };

const CURVES: Record<string, { name: string; crv: string; hash: string; size: number }> = {
  "ecdsa-sha2-nistp256": { name: "nistp256", crv: "P-256", hash: "sha256", size: 32 },
  "ecdsa-sha2-nistp384": { name: "nistp384", crv: "P-384", hash: "sha384", size: 48 },
  "ecdsa-sha2-nistp521": { name: "nistp521", crv: "P-521", hash: "sha512", size: 66 },
};

export function sshPublicKey(keyType: string, blob: Buffer): SshKey {
  const reader = new SshReader(blob);
  reader.text(); // the type, already read
  if (keyType === "ssh-ed25519") {
    const raw = reader.bytes();
    if (raw.length !== 32 || !reader.done()) throw new Malformed("bad Ed25519 public key");
    return { kind: "ed25519", key: jwkKey({ kty: "OKP", crv: "Ed25519", x: raw.toString("base64url") }) };
  }
  if (keyType === "ssh-rsa") {
    const e = stripZeros(reader.bytes());
    const n = stripZeros(reader.bytes());
    if (!reader.done() || n.length === 0 || e.length === 0) throw new Malformed("bad RSA public key");
    const bits = n.length * 8 - Math.clz32(n[0] ?? 0) + 24;
    if (bits < MIN_RSA_BITS)
      throw new Unsupported(`an RSA key of ${bits} bits is too small (at least ${MIN_RSA_BITS})`);
    return {
      kind: "rsa",
      key: jwkKey({ kty: "RSA", n: n.toString("base64url"), e: e.toString("base64url") }),
      bytes: n.length,
    };
  }
  const curve = CURVES[keyType];
  if (curve) {
    if (reader.text() !== curve.name) throw new Malformed("ECDSA key with a mismatched curve");
    const point = reader.bytes();
    if (!reader.done() || point.length !== 1 + 2 * curve.size || point[0] !== 0x04) {
      throw new Malformed("bad ECDSA public key");
    }
    const x = point.subarray(1, 1 + curve.size).toString("base64url");
    const y = point.subarray(1 + curve.size).toString("base64url");
    return { kind: "ecdsa", key: jwkKey({ kty: "EC", crv: curve.crv, x, y }), hash: curve.hash, size: curve.size };
  }
  throw new Unsupported(
    `key type ${truncate(keyType)} is not supported (ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256/384/521; not security keys)`,
  );
}

function jwkKey(jwk: Record<string, string>): KeyObject {
  try {
    return createPublicKey({ key: jwk, format: "jwk" });
  } catch (error) {
    throw new Malformed(`invalid public key: ${errorMessage(error)}`);
  }
}

function stripZeros(buf: Buffer): Buffer {
  let i = 0;
  while (i < buf.length && buf[i] === 0) i++;
  return buf.subarray(i);
}

/** An SSH mpint as an unsigned big-endian number of exactly `size` bytes. */
export function unsignedMpint(buf: Buffer, size: number): Buffer {
  const value = stripZeros(buf);
  if (value.length > size) throw new Malformed("ECDSA signature value out of range");
  return Buffer.concat([Buffer.alloc(size - value.length), value]);
}

/** `SHA256:` + unpadded base64 of the key blob's SHA-256, as ssh-keygen -l prints it. */
export function sshFingerprint(blob: Uint8Array): string {
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

/** Reads the SSH wire format (RFC 4251): uint32 and length-prefixed strings. */
export class SshReader {
  #buf: Buffer;
  #pos: number;

  constructor(buf: Uint8Array, pos = 0) {
    this.#buf = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
    this.#pos = pos;
  }

  u32(): number {
    if (this.#pos + 4 > this.#buf.length) throw new Malformed("truncated");
    const value = this.#buf.readUInt32BE(this.#pos);
    this.#pos += 4;
    return value;
  }

  bytes(): Buffer {
    const length = this.u32();
    if (this.#pos + length > this.#buf.length) throw new Malformed("truncated");
    const value = this.#buf.subarray(this.#pos, this.#pos + length);
    this.#pos += length;
    return value;
  }

  text(): string {
    return this.bytes().toString("utf8");
  }

  done(): boolean {
    return this.#pos === this.#buf.length;
  }
}

export function sshString(data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  return Buffer.concat([length, data]);
}

/**
 * Host passwords: generated at random, stored as scrypt hashes with their parameters and salt,
 * `scrypt$N=1024,r=8,p=1$<salt base64>$<hash base64>`, compared in constant time.
 *
 * The cost is low on purpose: the passwords are 192 random bits (no dictionary to try, so a slow
 * hash adds nothing against a stolen fleet.db), and a control plane that restarts sees every host
 * reconnect at once: about a millisecond per host, not fifty. The parameters are in each hash, so
 * a later version can raise them for new credentials and still read the old ones.
 */
import { randomBytes, scrypt, timingSafeEqual } from "node:crypto";

const PARAMS = { N: 1024, r: 8, p: 1 };
const KEY_LENGTH = 32;
const SALT_BYTES = 16;

/** 24 random bytes, base64url: 32 characters, safe in a file and on a command line. */
export function generatePassword(): string {
  return randomBytes(24).toString("base64url");
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const key = await derive(password, salt, PARAMS.N, PARAMS.r, PARAMS.p, KEY_LENGTH);
  return `scrypt$N=${PARAMS.N},r=${PARAMS.r},p=${PARAMS.p}$${salt.toString("base64")}$${key.toString("base64")}`;
}

/** false for a wrong password and for a hash this code cannot read. */
export async function verifyPassword(password: string, encoded: string): Promise<boolean> {
  const parts = encoded.split("$");
  if (parts.length !== 4 || parts[0] !== "scrypt") return false;
  const params = Object.fromEntries(
    (parts[1] as string).split(",").map((kv) => {
      const [k, v] = kv.split("=");
      return [k, Number(v)];
    }),
  );
  const { N, r, p } = params as { N?: number; r?: number; p?: number };
  if (!validParam(N, 2 ** 20) || !validParam(r, 64) || !validParam(p, 16)) return false;
  const salt = Buffer.from(parts[2] as string, "base64");
  const expected = Buffer.from(parts[3] as string, "base64");
  if (expected.length < 16) return false;
  const key = await derive(password, salt, N as number, r as number, p as number, expected.length);
  return timingSafeEqual(key, expected);
}

function validParam(value: number | undefined, max: number): boolean {
  return value !== undefined && Number.isInteger(value) && value >= 1 && value <= max;
}

function derive(password: string, salt: Buffer, N: number, r: number, p: number, length: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, length, { N, r, p, maxmem: 256 * N * r + 1024 * 1024 }, (error, key) =>
      error ? reject(error) : resolve(key),
    );
  });
}

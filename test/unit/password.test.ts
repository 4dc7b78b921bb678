import { describe, expect, it } from "vitest";
import { generatePassword, hashPassword, verifyPassword } from "../../controlplane/src/auth/password.js";

describe("host passwords", () => {
  it("hashes with scrypt, its parameters and a random salt, and verifies", async () => {
    const password = generatePassword();
    expect(password).toMatch(/^[A-Za-z0-9_-]{32}$/);
    const hash = await hashPassword(password);
    expect(hash).toMatch(/^scrypt\$N=1024,r=8,p=1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
    expect(hash).not.toContain(password);
    expect(await hashPassword(password)).not.toBe(hash);
    expect(await verifyPassword(password, hash)).toBe(true);
    expect(await verifyPassword(`${password}x`, hash)).toBe(false);
  });

  it("refuses hashes it cannot read", async () => {
    expect(await verifyPassword("x", "plain")).toBe(false);
    expect(await verifyPassword("x", "scrypt$N=99999999,r=8,p=1$AAAA$AAAAAAAAAAAAAAAAAAAAAA==")).toBe(false);
    expect(await verifyPassword("x", "scrypt$N=16384,r=8,p=1$AAAA$AAAA")).toBe(false);
  });
});

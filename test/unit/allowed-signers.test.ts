import { describe, expect, it } from "vitest";
import { ErrorList } from "../../agent/src/errors.js";
import { matchPatternList, parseAllowedSigners, parseSshTime } from "../../agent/src/source/signers.js";
import { loadTrustStore } from "../../agent/src/source/verify.js";

// Public keys made with ssh-keygen; fingerprints as `ssh-keygen -l` prints them.
const ED1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMktUadNIQYBkvf2rxC1I9k8CCk7ke10iYwNSiS5azUb";
const ED1_FPR = "SHA256:9EL1mX/yelzCWqFF29z0sW/Z0+G4GIJrRJKCqAnlvfU";
const ED2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICQcq8QL8BNUVDhvZCl6J9fWrJkhxfsWO+nmhzcY9VPB";
const EC_B64 =
  "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBCKWsEGLVl5W4OnIbyU7AQ/fSgPm4cqW9mdFKdtppmoJz2xckxFBa0rzL3AjP1SWOOKkkMaHVJ9WZwSpYZkcMF8=";
const EC = `ecdsa-sha2-nistp256 ${EC_B64}`;
const EC_FPR = "SHA256:nxWv98khoA4QEt4wOsQMXnYGMAhiBKYY8/0Fqc33ZP8";
const FILE = "/etc/driftless/allowed_signers";

function parse(text: string) {
  return parseAllowedSigners(FILE, text);
}

function errorsOf(text: string): string[] {
  return parse(text).errors.map((e) => e.toString());
}

describe("allowed_signers", () => {
  it("skips comments and blank lines, and reads principals, key and comment", () => {
    const { signers, errors } = parse(
      `# maintainers\n\n   # indented comment\nalice@example.test,bob@example.test ${ED1} alice's laptop\r\n\tb ${EC}\n`,
    );
    expect(errors).toEqual([]);
    expect(signers).toHaveLength(2);
    expect(signers[0]).toMatchObject({
      line: 4,
      principals: ["alice@example.test", "bob@example.test"],
      certAuthority: false,
      keyType: "ssh-ed25519",
      fingerprint: ED1_FPR,
    });
    expect(signers[0]?.namespaces).toBeUndefined();
    expect(signers[1]).toMatchObject({ line: 5, principals: ["b"], keyType: "ecdsa-sha2-nistp256" });
    expect(parse(`b ${EC}`).signers[0]?.fingerprint).toBe(EC_FPR);
  });

  it("reads quoted principals", () => {
    const { signers, errors } = parse(`"Alice Smith <alice@example.test>,*@ops.example.test" ${ED1}\n`);
    expect(errors).toEqual([]);
    expect(signers[0]?.principals).toEqual(["Alice Smith <alice@example.test>", "*@ops.example.test"]);
  });

  it("reads options: namespaces, cert-authority, valid-after, valid-before (names in any case)", () => {
    const { signers, errors } = parse(
      [
        `a namespaces="git,file" ${ED1}`,
        `b cert-authority,NAMESPACES="git" ${ED2}`,
        `c valid-after="20240101",valid-before="20250630120000Z" ${EC}`,
        `d namespaces="a \\"quoted\\" b" ${ED1}`,
      ].join("\n"),
    );
    expect(errors).toEqual([]);
    expect(signers[0]).toMatchObject({ namespaces: "git,file", certAuthority: false });
    expect(signers[1]).toMatchObject({ namespaces: "git", certAuthority: true });
    expect(signers[2]?.validAfter).toBe(new Date(2024, 0, 1).getTime());
    expect(signers[2]?.validBefore).toBe(Date.UTC(2025, 5, 30, 12, 0, 0));
    expect(signers[3]?.namespaces).toBe('a "quoted" b');
  });

  it("locates every problem by file, line and column, all at once", () => {
    const text = [
      `alice@example.test ${ED1}`, // 1: fine
      `bob frobnicate ${ED1}`, // 2: unknown option
      `"carol ${ED1}`, // 3: no closing quote
      "dave@example.test", // 4: principals only
      `erin namespaces=git ${ED1}`, // 5: unquoted value
      `frank ssh-ed25519 not*base64`, // 6: bad base64
      `gina ssh-ed25519 ${EC_B64}`, // 7: type mismatch
      `hank namespaces="git",namespaces="file" ${ED1}`, // 8: twice
      `ivan valid-before="2024-01-01" ${ED1}`, // 9: bad time
      `judy namespaces="git", ${ED1}`, // 10: a comma and a space: the key is then read as an option
      `kate ssh-foo AAAA`, // 11: unknown key type (read as options, then no key)
      `leo cert-authority ssh-foo AAAA`, // 12: unknown key type after options
    ].join("\n");
    expect(errorsOf(text)).toEqual([
      `${FILE}:2:5: unknown option "frobnicate" (allowed: cert-authority, namespaces, valid-after, valid-before)`,
      `${FILE}:3:1: the principals have an opening quote and no closing one`,
      `${FILE}:4:18: expected principals, then options (optional), a key type and a key; found only principals`,
      `${FILE}:5:17: the value of namespaces must be in double quotes`,
      `${FILE}:6:19: the ssh-ed25519 key is not valid base64`,
      `${FILE}:7:18: the key data is a ecdsa-sha2-nistp256 key, not ssh-ed25519`,
      `${FILE}:8:23: namespaces is given twice`,
      `${FILE}:9:6: valid-before="2024-01-01" is not a time (YYYYMMDD[HHMM[SS]][Z])`,
      `${FILE}:10:22: an option list may not end with a comma`,
      `${FILE}:11:6: unknown option "ssh-foo" (allowed: cert-authority, namespaces, valid-after, valid-before)`,
      `${FILE}:12:20: unknown key type "ssh-foo" (expected ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256, ...)`,
    ]);
    expect(parse(text).signers.map((s) => s.line)).toEqual([1]);
  });

  it("refuses private key material without echoing it", () => {
    const secret = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW";
    const { errors } = parse(`a ${ED1}\n-----BEGIN OPENSSH PRIVATE KEY-----\n${secret}\n`);
    expect(errors.map((e) => e.toString())).toEqual([
      `${FILE}:2: holds a private key; an allowed signers file lists public keys only`,
    ]);
    expect(JSON.stringify(errors.map((e) => e.toJSON()))).not.toContain(secret.slice(0, 12));
  });

  it("never quotes a long unknown word in full", () => {
    const [error] = errorsOf(`a ${"x".repeat(100)} ${ED1}`);
    expect(error).toContain(`"${"x".repeat(40)}..."`);
    expect(error).not.toContain("x".repeat(41));
  });

  it("loadTrustStore rejects with an ErrorList of located DriftlessErrors", async () => {
    const bad = await loadTrustStore({
      allowedSigners: { file: FILE, text: `a nope ${ED1}\nb ssh-ed25519 ???\n` },
    }).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(ErrorList);
    expect((bad as ErrorList).errors.map((e) => [e.code, e.phase, e.location?.line])).toEqual([
      ["ETRUST", "load", 1],
      ["ETRUST", "load", 2],
    ]);

    const empty = (await loadTrustStore({ allowedSigners: { file: FILE, text: "# nobody yet\n" } }).catch(
      (e: unknown) => e,
    )) as ErrorList;
    expect(empty.errors.map((e) => e.toString())).toEqual([
      `${FILE}: lists no keys, so no SSH-signed commit could be trusted`,
    ]);

    const none = (await loadTrustStore({}).catch((e: unknown) => e)) as ErrorList;
    expect(none.errors[0]?.message).toBe("no trust file given: name allowedSigners or openpgpKeys");

    const store = await loadTrustStore({ allowedSigners: { file: FILE, text: `a ${ED1}\n` } });
    expect(store.allowedSigners?.signers).toHaveLength(1);
    expect(store.openpgp).toBeUndefined();
  });
});

describe("OpenSSH patterns and times", () => {
  it("matches pattern lists like match_pattern_list", () => {
    expect(matchPatternList("git", "git")).toBe(1);
    expect(matchPatternList("git", "file,git")).toBe(1);
    expect(matchPatternList("git", "g*")).toBe(1);
    expect(matchPatternList("git", "g?t")).toBe(1);
    expect(matchPatternList("git", "file")).toBe(0);
    expect(matchPatternList("git", "*,!git")).toBe(-1);
    expect(matchPatternList("git", "GIT")).toBe(0);
    expect(matchPatternList("a.b", "a?b")).toBe(1);
    expect(matchPatternList("axb", "a.b")).toBe(0);
  });

  it("parses YYYYMMDD[HHMM[SS]][Z]", () => {
    expect(parseSshTime("20240229Z")).toBe(Date.UTC(2024, 1, 29));
    expect(parseSshTime("202402291230Z")).toBe(Date.UTC(2024, 1, 29, 12, 30));
    expect(parseSshTime("20240229123059z")).toBe(Date.UTC(2024, 1, 29, 12, 30, 59));
    expect(parseSshTime("20240229")).toBe(new Date(2024, 1, 29).getTime());
    for (const bad of ["20230229", "20241301", "202401011", "20240101250000", "2024-01-01", "", "20240101123060"]) {
      expect(parseSshTime(bad), bad).toBeNull();
    }
  });
});

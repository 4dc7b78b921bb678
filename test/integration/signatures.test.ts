// Commit signature verification on commits made by the real git, ssh-keygen and gpg, fetched
// over HTTP from a real `git http-backend` and read with isomorphic-git, as the agent reads them.
// `git verify-commit` is the oracle for the SSH cases.
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import git from "isomorphic-git";
import http from "isomorphic-git/http/node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DriftlessError, ErrorList } from "../../agent/src/errors.js";
import {
  loadTrustStore,
  type SignatureVerdict,
  splitSignedCommit,
  type TrustStore,
  verifyCommitSignature,
} from "../../agent/src/source/verify.js";
import {
  cleanup,
  createRepo,
  exec,
  type GitServer,
  type GpgKey,
  makeGpgKey,
  makeSshKey,
  type SshKey,
  startGitServer,
  type WorkRepo,
} from "../support/git-server.js";

const SIGNERS_FILE = "/etc/driftless/allowed_signers";
const PGP_FILE = "/etc/driftless/trusted.asc";

const scratch: string[] = [];
function scratchDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), "driftless-sigtest-"));
  scratch.push(dir);
  return dir;
}

afterAll(async () => {
  await cleanup();
  for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
});

/** Reads a commit the way the agent does: the raw object from isomorphic-git, split like git. */
async function readSigned(dir: string, oid: string) {
  const { object } = await git.readObject({ fs, dir, oid, format: "content" });
  return splitSignedCommit(object as Uint8Array);
}

describe("commit signatures", () => {
  let server: GitServer;
  let repo: WorkRepo;
  let clone: string;
  let alice: SshKey;
  let rsa: SshKey;
  let ecdsa: SshKey;
  let mallory: SshKey;
  let fileOnly: SshKey;
  let tess: GpgKey;
  let eve: GpgKey;
  let store: TrustStore;
  let signersPath: string;
  const commits: Record<string, string> = {};

  beforeAll(async () => {
    server = await startGitServer();
    repo = await createRepo(server, "fleet");
    [alice, rsa, ecdsa, mallory, fileOnly, tess, eve] = await Promise.all([
      makeSshKey("alice"),
      makeSshKey("robert", { type: "rsa" }),
      makeSshKey("erin", { type: "ecdsa" }),
      makeSshKey("mallory"),
      makeSshKey("filer"),
      makeGpgKey("Tess Trusted", "tess@example.test"),
      makeGpgKey("Eve Untrusted", "eve@example.test"),
    ]);
    const steps: [string, Parameters<WorkRepo["commit"]>[1]][] = [
      ["unsigned", {}],
      ["ssh-alice", { sign: alice }],
      ["ssh-rsa", { sign: rsa }],
      ["ssh-ecdsa", { sign: ecdsa }],
      ["ssh-mallory", { sign: mallory }],
      ["ssh-file-only", { sign: fileOnly }],
      ["gpg-tess", { sign: tess }],
      ["gpg-eve", { sign: eve }],
      ["ssh-alice-2019", { sign: alice, date: "2019-06-01T12:00:00Z" }],
    ];
    for (const [name, options] of steps) {
      await repo.writeFiles({ [`${name}.txt`]: `${name}\n` });
      commits[name] = await repo.commit(`${name}\n\nbody line\n`, options);
    }
    await repo.push();

    const allowedSigners = [
      "# Fleet maintainers",
      alice.allowedSigners,
      `${rsa.principal},ops@example.test ${rsa.publicKey.split(" ").slice(0, 2).join(" ")} robert's laptop`,
      ecdsa.allowedSigners,
      `${fileOnly.principal} namespaces="file" ${fileOnly.publicKey}`,
      "",
    ].join("\n");
    signersPath = path.join(scratchDir(), "allowed_signers");
    writeFileSync(signersPath, allowedSigners);
    store = await loadTrustStore({
      allowedSigners: { file: SIGNERS_FILE, text: allowedSigners },
      openpgpKeys: { file: PGP_FILE, text: tess.publicKeyArmored },
    });

    // The agent's view: fetched over HTTP by isomorphic-git.
    clone = path.join(scratchDir(), "clone");
    await git.clone({ fs, http, dir: clone, url: server.url("fleet"), ref: "main", singleBranch: true });
  });

  async function verdictOf(name: string, trust: TrustStore = store): Promise<SignatureVerdict> {
    const oid = commits[name] as string;
    const { payload, signature } = await readSigned(clone, oid);
    return verifyCommitSignature(trust, payload, signature, { commit: oid });
  }

  /** git's own answer, with the same allowed_signers file. */
  async function gitVerifies(oid: string, dir = repo.dir): Promise<boolean> {
    try {
      await exec("git", ["-c", `gpg.ssh.allowedSignersFile=${signersPath}`, "verify-commit", oid], { cwd: dir });
      return true;
    } catch {
      return false;
    }
  }

  it("splits the raw commit object exactly as git does", async () => {
    for (const oid of Object.values(commits)) {
      const { payload, signature } = await readSigned(clone, oid);
      const raw = await exec("git", ["cat-file", "commit", oid], { cwd: repo.dir });
      // git's own payload: what `git verify-commit --raw` hands to the verifier is the object without gpgsig.
      const withoutSig = raw.replace(/^gpgsig .*\n(?: .*\n)*/m, "");
      expect(Buffer.from(payload).toString("utf8")).toBe(withoutSig);
      if (signature) expect(raw).toContain(`gpgsig ${signature.split("\n")[0]}`);
    }
  });

  it("refuses an unsigned commit", async () => {
    const verdict = await verdictOf("unsigned");
    expect(verdict).toEqual({
      trusted: false,
      reason: `commit ${commits.unsigned?.slice(0, 7)} is not signed`,
    });
  });

  it("trusts a commit SSH-signed (ed25519) by an allowed key", async () => {
    const verdict = await verdictOf("ssh-alice");
    expect(verdict).toMatchObject({
      trusted: true,
      format: "ssh",
      signer: "alice@example.test",
      fingerprint: alice.fingerprint,
    });
    expect(verdict.reason).toContain(`${SIGNERS_FILE}:2`);
    expect(await gitVerifies(commits["ssh-alice"] as string)).toBe(true);
  });

  it("trusts RSA (rsa-sha2-512) and ECDSA P-256 SSH signatures", async () => {
    expect(await verdictOf("ssh-rsa")).toMatchObject({
      trusted: true,
      signer: "robert@example.test,ops@example.test",
      fingerprint: rsa.fingerprint,
    });
    expect(await verdictOf("ssh-ecdsa")).toMatchObject({ trusted: true, signer: "erin@example.test" });
    expect(await gitVerifies(commits["ssh-rsa"] as string)).toBe(true);
    expect(await gitVerifies(commits["ssh-ecdsa"] as string)).toBe(true);
  });

  it("refuses an SSH key that is not in allowed_signers, naming its fingerprint", async () => {
    const verdict = await verdictOf("ssh-mallory");
    expect(verdict.trusted).toBe(false);
    expect(verdict.reason).toBe(
      `commit ${commits["ssh-mallory"]?.slice(0, 7)} is signed with SSH key ${mallory.fingerprint}, which is not in ${SIGNERS_FILE}`,
    );
    expect(await gitVerifies(commits["ssh-mallory"] as string)).toBe(false);
  });

  it("refuses a key allowed only for another namespace", async () => {
    const verdict = await verdictOf("ssh-file-only");
    expect(verdict.trusted).toBe(false);
    expect(verdict.reason).toContain(`${SIGNERS_FILE}:5 allows that key only for namespaces "file", not "git"`);
    expect(await gitVerifies(commits["ssh-file-only"] as string)).toBe(false);
  });

  it("refuses an SSH signature made for another namespace", async () => {
    // Sign the unsigned commit's payload with `ssh-keygen -Y sign -n file`, and graft it as gpgsig.
    const oid = commits.unsigned as string;
    const raw = await exec("git", ["cat-file", "commit", oid], { cwd: repo.dir });
    const dir = scratchDir();
    writeFileSync(path.join(dir, "payload"), raw);
    await exec("ssh-keygen", ["-q", "-Y", "sign", "-n", "file", "-f", alice.privateKeyPath, path.join(dir, "payload")]);
    const sig = fs.readFileSync(path.join(dir, "payload.sig"), "utf8");
    const forged = await graft(repo, raw, sig);
    const { payload, signature } = await readSigned(repo.dir, forged);
    const verdict = await verifyCommitSignature(store, payload, signature);
    expect(verdict.trusted).toBe(false);
    expect(verdict.reason).toContain('namespace "file", not "git"');
    expect(await gitVerifies(forged)).toBe(false);
  });

  it("refuses a commit changed after it was signed (SSH and OpenPGP)", async () => {
    for (const name of ["ssh-alice", "gpg-tess"]) {
      const oid = commits[name] as string;
      const raw = await exec("git", ["cat-file", "commit", oid], { cwd: repo.dir });
      const tamperedRaw = raw.replace("body line", "body line, and something the signer never wrote");
      const tampered = await exec("git", ["hash-object", "-t", "commit", "-w", "--stdin"], {
        cwd: repo.dir,
        input: tamperedRaw,
      });
      const { payload, signature } = await readSigned(repo.dir, tampered.trim());
      const verdict = await verifyCommitSignature(store, payload, signature, { commit: tampered.trim() });
      expect(verdict.trusted, name).toBe(false);
      expect(verdict.reason, name).toMatch(/has a bad (SSH|OpenPGP) signature from .*changed after it was signed/);
    }
  });

  it("trusts a commit signed with a trusted OpenPGP key, naming the key and user", async () => {
    const verdict = await verdictOf("gpg-tess");
    expect(verdict).toEqual({
      trusted: true,
      format: "openpgp",
      signer: "Tess Trusted <tess@example.test>",
      fingerprint: tess.fingerprint,
      reason: `commit ${commits["gpg-tess"]?.slice(0, 7)} is signed by Tess Trusted <tess@example.test> with OpenPGP key ${tess.fingerprint}`,
    });
  });

  it("refuses a commit signed with an OpenPGP key that is not trusted", async () => {
    const verdict = await verdictOf("gpg-eve");
    expect(verdict.trusted).toBe(false);
    expect(verdict.format).toBe("openpgp");
    expect(verdict.reason).toBe(
      `commit ${commits["gpg-eve"]?.slice(0, 7)} is signed with OpenPGP key ${eve.fingerprint}, which is not in ${PGP_FILE}`,
    );
  });

  it("says which trust file is missing for the signature's kind", async () => {
    const sshOnly = await loadTrustStore({ allowedSigners: { file: SIGNERS_FILE, text: alice.allowedSigners } });
    expect((await verdictOf("gpg-tess", sshOnly)).reason).toContain("no trusted OpenPGP keys are configured");
    const pgpOnly = await loadTrustStore({ openpgpKeys: { file: PGP_FILE, text: tess.publicKeyArmored } });
    expect((await verdictOf("ssh-alice", pgpOnly)).reason).toContain("no allowed signers file is configured");
  });

  it("checks valid-after and valid-before against the committer date, like git", async () => {
    const [type, key] = alice.publicKey.split(" ");
    const limited = (options: string) =>
      loadTrustStore({
        allowedSigners: { file: SIGNERS_FILE, text: `${alice.principal} ${options} ${type} ${key}\n` },
      });
    const before2020 = await limited('valid-before="20200101Z"');
    expect((await verdictOf("ssh-alice-2019", before2020)).trusted).toBe(true);
    const recent = await verdictOf("ssh-alice", before2020);
    expect(recent.trusted).toBe(false);
    expect(recent.reason).toContain(`${SIGNERS_FILE}:1 allows that key only until 2020-01-01T00:00:00Z`);
    const after2020 = await limited('valid-after="20200101Z"');
    expect((await verdictOf("ssh-alice-2019", after2020)).reason).toContain("only from 2020-01-01T00:00:00Z");
    expect((await verdictOf("ssh-alice", after2020)).trusted).toBe(true);
  });

  it("does not trust a key listed only as a cert-authority", async () => {
    const [type, key] = alice.publicKey.split(" ");
    const ca = await loadTrustStore({
      allowedSigners: { file: SIGNERS_FILE, text: `*@example.test cert-authority ${type} ${key}\n` },
    });
    const verdict = await verdictOf("ssh-alice", ca);
    expect(verdict.trusted).toBe(false);
    expect(verdict.reason).toContain("certificate authority (cert-authority), which Driftless does not support");
  });

  it("reports a malformed signature in a sentence", async () => {
    const verdict = await verifyCommitSignature(
      store,
      "tree x\n\nmsg\n",
      "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----",
    );
    expect(verdict).toMatchObject({ trusted: false, format: "ssh" });
    expect(verdict.reason).toMatch(/^the commit has a malformed SSH signature \(/);
    const pgp = await verifyCommitSignature(
      store,
      "x",
      "-----BEGIN PGP SIGNATURE-----\n\nbm90IGEgc2lnbmF0dXJl\n-----END PGP SIGNATURE-----",
    );
    expect(pgp.reason).toMatch(/^the commit has a malformed OpenPGP signature/);
  });

  it("refuses a private key in the OpenPGP trust file without printing it", async () => {
    const secret = await exec("gpg", ["--batch", "--armor", "--export-secret-keys", tess.fingerprint], {
      env: { GNUPGHOME: tess.home },
    });
    const text = `${tess.publicKeyArmored}\n${secret}`;
    const error = await loadTrustStore({ openpgpKeys: { file: PGP_FILE, text } }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ErrorList);
    const errors = (error as ErrorList).errors;
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(DriftlessError);
    const privateLine = text.split("\n").findIndex((l) => l.includes("BEGIN PGP PRIVATE KEY BLOCK")) + 1;
    expect(errors[0]?.location).toEqual({ file: PGP_FILE, line: privateLine });
    expect(errors[0]?.toString()).toBe(
      `${PGP_FILE}:${privateLine}: holds a private key; put only public keys here (gpg --export --armor KEYID)`,
    );
    const body = secret.split("\n").find((l) => l.length > 60) as string;
    expect(JSON.stringify(errors[0]?.toJSON())).not.toContain(body.slice(0, 20));
  });

  it("reads several OpenPGP keys from one file, and locates a damaged block", async () => {
    const both = await loadTrustStore({
      openpgpKeys: { file: PGP_FILE, text: `# fleet keys\n${tess.publicKeyArmored}\n${eve.publicKeyArmored}` },
    });
    expect(both.openpgp?.keys).toHaveLength(2);
    expect((await verdictOf("gpg-eve", both)).trusted).toBe(true);

    const lines = eve.publicKeyArmored.split("\n");
    lines[3] = `${lines[3]?.slice(0, 10)}!!!${lines[3]?.slice(13)}`;
    const damaged = `${tess.publicKeyArmored}${lines.join("\n")}`;
    const error = (await loadTrustStore({ openpgpKeys: { file: PGP_FILE, text: damaged } }).catch(
      (e: unknown) => e,
    )) as ErrorList;
    expect(error).toBeInstanceOf(ErrorList);
    const secondBlock = tess.publicKeyArmored.split("\n").length;
    expect(error.errors.map((e) => e.location)).toEqual([{ file: PGP_FILE, line: secondBlock }]);
    expect(error.errors[0]?.message).toMatch(/^cannot read this OpenPGP key block: /);
  });

  it("isomorphic-git's readCommit payload is wrong for SSH signatures (use splitSignedCommit)", async () => {
    const ssh = commits["ssh-alice"] as string;
    const viaReadCommit = await git.readCommit({ fs, dir: clone, oid: ssh });
    const exact = await readSigned(clone, ssh);
    expect(viaReadCommit.payload).not.toBe(Buffer.from(exact.payload).toString("utf8"));
    const wrong = await verifyCommitSignature(store, viaReadCommit.payload, viaReadCommit.commit.gpgsig);
    expect(wrong.reason).toContain("bad SSH signature");
    // For OpenPGP its payload happens to be right (one trailing newline, no headers after gpgsig).
    const pgp = commits["gpg-tess"] as string;
    const pgpCommit = await git.readCommit({ fs, dir: clone, oid: pgp });
    expect((await verifyCommitSignature(store, pgpCommit.payload, pgpCommit.commit.gpgsig)).trusted).toBe(true);
  });
});

/** Writes `raw` (a commit object without signature) with `signature` as its gpgsig header. */
async function graft(repo: WorkRepo, raw: string, signature: string): Promise<string> {
  const end = raw.indexOf("\n\n");
  const header = `gpgsig ${signature.trim().split("\n").join("\n ")}\n`;
  const object = `${raw.slice(0, end + 1)}${header}${raw.slice(end + 1)}`;
  return (await repo.git(["hash-object", "-t", "commit", "-w", "--stdin"], { input: object })).trim();
}

describe("test git server", () => {
  let server: GitServer;
  let locked: GitServer;
  let first: string;
  const auth = { username: "fleet", password: "s3cret" };

  beforeAll(async () => {
    server = await startGitServer();
    locked = await startGitServer({ auth });
    for (const s of [server, locked]) {
      const repo = await createRepo(s, "fleet");
      // Enough content that a pack takes several chunks.
      const files: Record<string, string> = {};
      for (let i = 0; i < 50; i++) files[`files/f${i}.txt`] = `${"line\n".repeat(200)}${i}\n`;
      await repo.writeFiles(files);
      first = await repo.commit("first", { date: "2024-01-01T00:00:00Z" }); // same id on both servers
      await repo.push();
    }
  });

  it("serves a clone to git and to isomorphic-git", async () => {
    const viaGit = path.join(scratchDir(), "git");
    await exec("git", ["clone", "--quiet", server.url("fleet"), viaGit]);
    expect((await exec("git", ["rev-parse", "HEAD"], { cwd: viaGit })).trim()).toBe(first);

    const viaIso = path.join(scratchDir(), "iso");
    await git.clone({ fs, http, dir: viaIso, url: server.url("fleet"), ref: "main", singleBranch: true, depth: 1 });
    expect(await git.resolveRef({ fs, dir: viaIso, ref: "HEAD" })).toBe(first);
    expect(fs.readFileSync(path.join(viaIso, "files/f7.txt"), "utf8")).toMatch(/7\n$/);

    const posts = server.requests.filter((r) => r.method === "POST" && r.path === "/fleet.git/git-upload-pack");
    expect(posts.length).toBeGreaterThanOrEqual(2);
    expect(posts.every((r) => r.status === 200 && r.done && r.bytes > 0)).toBe(true);
  });

  it("requires basic auth when configured, and refuses a wrong password", async () => {
    const ok = path.join(scratchDir(), "ok");
    await exec("git", ["clone", "--quiet", locked.url("fleet", auth), ok]);
    await expect(
      exec("git", ["clone", "--quiet", locked.url("fleet", { ...auth, password: "wrong" }), path.join(ok, "x")]),
    ).rejects.toThrow(/Authentication failed|401/);

    const iso = path.join(scratchDir(), "iso");
    await git.clone({ fs, http, dir: iso, url: locked.url("fleet"), singleBranch: true, onAuth: () => auth });
    expect(await git.resolveRef({ fs, dir: iso, ref: "HEAD" })).toBe(first);
    for (const onAuth of [undefined, () => ({ ...auth, password: "wrong" })]) {
      const error = await git
        .clone({
          fs,
          http,
          dir: path.join(scratchDir(), "iso"),
          url: locked.url("fleet"),
          ...(onAuth ? { onAuth, onAuthFailure: () => ({ cancel: true }) } : {}),
        })
        .catch((e: unknown) => e);
      expect((error as { code?: string }).code).toMatch(/HttpError|UserCanceledError/);
    }
    expect(locked.requests.some((r) => r.status === 401)).toBe(true);
  });

  it("slows down fetches with delay(), so a client can be killed mid-fetch", async () => {
    server.delay(1500);
    try {
      const started = Date.now();
      await git.clone({
        fs,
        http,
        dir: path.join(scratchDir(), "slow"),
        url: server.url("fleet"),
        singleBranch: true,
      });
      expect(Date.now() - started).toBeGreaterThanOrEqual(1400);

      const before = server.requests.length;
      const child = spawn("git", ["clone", "--quiet", server.url("fleet"), path.join(scratchDir(), "killed")], {
        stdio: "ignore",
        env: { ...process.env, GIT_TERMINAL_PROMPT: "0" },
      });
      const inFlight = await waitFor(() =>
        server.requests
          .slice(before)
          .find((r) => r.method === "POST" && r.path.endsWith("/git-upload-pack") && r.bytes > 0 && !r.done),
      );
      child.kill("SIGKILL");
      await waitFor(() => inFlight.done || undefined);
      expect(inFlight.aborted).toBe(true);
    } finally {
      server.delay(null);
    }
  });

  it("goes down with stop() and comes back on the same port with start()", async () => {
    const port = server.port;
    await server.stop();
    const error = await git
      .clone({ fs, http, dir: path.join(scratchDir(), "down"), url: server.url("fleet") })
      .catch((e: unknown) => e);
    expect(String((error as Error).message ?? error)).toMatch(/ECONNREFUSED/);
    await server.start();
    expect(server.port).toBe(port);
    const dir = path.join(scratchDir(), "up");
    await git.clone({ fs, http, dir, url: server.url("fleet"), singleBranch: true });
    expect(await git.resolveRef({ fs, dir, ref: "HEAD" })).toBe(first);
  });
});

async function waitFor<T>(probe: () => T | undefined, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error("timed out waiting");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

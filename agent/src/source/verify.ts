/**
 * Commit signature verification: the agent applies a commit only when its signature verifies
 * against the host's trust configuration (`trust:` in agent.yaml).
 *
 * - SSH signatures (`git -c gpg.format=ssh commit -S`) are checked here with node:crypto only,
 *   against keys in git's allowed-signers format (ssh-keygen(1), ALLOWED SIGNERS), the way
 *   `git verify-commit` does through `ssh-keygen -Y verify -n git`.
 * - OpenPGP signatures (`gpg`) are checked with the `openpgp` package, loaded on first use only:
 *   it is large, and most runs verify nothing.
 *
 * What a signature covers is the commit object without its `gpgsig` header, byte for byte:
 * `splitSignedCommit()` cuts a raw commit object the way git does. (isomorphic-git's
 * `readCommit().payload` is not that: see `splitSignedCommit`.)
 *
 * Nothing here prints private material: messages name keys by their public fingerprints.
 */
import { createHash, createPublicKey, verify as cryptoVerify, type KeyObject } from "node:crypto";
import type { Key, PublicKey } from "openpgp";
import { DriftlessError, ErrorList, errorMessage, type Location } from "../errors.js";

type OpenPgp = typeof import("openpgp");

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/** The trust files, read by the caller (the path names the file in messages). */
export interface TrustSources {
  allowedSigners?: { file: string; text: string };
  openpgpKeys?: { file: string; text: string };
}

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

// ---------------------------------------------------------------------------------------------
// allowed_signers
// ---------------------------------------------------------------------------------------------

/**
 * Parses an allowed_signers file: `principals [options] keytype base64-key [comment]` per line,
 * `#` comments and blank lines skipped, as ssh-keygen does. Returns every problem found.
 */
export function parseAllowedSigners(
  file: string,
  text: string,
): { signers: AllowedSigner[]; errors: DriftlessError[] } {
  const signers: AllowedSigner[] = [];
  const errors: DriftlessError[] = [];
  const lines = text.split("\n");
  for (const [index, rawLine] of lines.entries()) {
    const lineNo = index + 1;
    const line = rawLine.replace(/\r$/, "");
    if (/PRIVATE KEY-----/.test(line)) {
      // Not quoted back: whatever follows is secret.
      errors.push(
        trustError("holds a private key; an allowed signers file lists public keys only", { file, line: lineNo }),
      );
      break;
    }
    try {
      const signer = parseAllowedSignerLine(line, lineNo);
      if (signer) signers.push(signer);
    } catch (error) {
      if (!(error instanceof LineError)) throw error;
      errors.push(trustError(error.message, { file, line: lineNo, column: error.column }));
    }
  }
  return { signers, errors };
}

class LineError extends Error {
  constructor(
    message: string,
    readonly column: number,
  ) {
    super(message);
  }
}

const PLAIN_KEY_TYPES = new Set([
  "ssh-ed25519",
  "ssh-rsa",
  "ssh-dss",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "sk-ssh-ed25519@openssh.com",
  "sk-ecdsa-sha2-nistp256@openssh.com",
]);
const CERT_SUFFIX = "-cert-v01@openssh.com";

function isKeyType(word: string): boolean {
  if (PLAIN_KEY_TYPES.has(word)) return true;
  if (!word.endsWith(CERT_SUFFIX)) return false;
  // ssh-ed25519-cert-v01@openssh.com; sk-ssh-ed25519-cert-v01@openssh.com
  return (
    PLAIN_KEY_TYPES.has(word.slice(0, -CERT_SUFFIX.length)) || PLAIN_KEY_TYPES.has(word.replace("-cert-v01@", "@"))
  );
}

function parseAllowedSignerLine(line: string, lineNo: number): AllowedSigner | null {
  let pos = skipSpace(line, 0);
  if (pos >= line.length || line[pos] === "#") return null;

  // Principals: one word; double quotes may enclose spaces (and are removed), as in OpenSSH.
  const principalsAt = pos;
  let principals = "";
  while (pos < line.length && !isSpace(line[pos])) {
    if (line[pos] === '"') {
      const close = line.indexOf('"', pos + 1);
      if (close === -1) throw new LineError("the principals have an opening quote and no closing one", pos + 1);
      principals += line.slice(pos + 1, close);
      pos = close + 1;
      break; // a closing quote ends the word
    }
    principals += line[pos];
    pos++;
  }
  pos = skipSpace(line, pos);
  if (principals === "") throw new LineError("empty principals", principalsAt + 1);
  if (pos >= line.length) {
    throw new LineError(
      "expected principals, then options (optional), a key type and a key; found only principals",
      pos + 1,
    );
  }

  // Options, unless the next word is a key type.
  let options: SignerOptions = { certAuthority: false };
  let word = wordAt(line, pos);
  if (!isKeyType(word)) {
    const optionsAt = pos;
    const end = endOfOptions(line, pos);
    options = parseSignerOptions(line.slice(pos, end), optionsAt);
    pos = skipSpace(line, end);
    if (pos >= line.length) throw new LineError("missing key after the options", pos + 1);
    word = wordAt(line, pos);
    if (!isKeyType(word)) {
      throw new LineError(
        `unknown key type "${truncate(word)}" (expected ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256, ...)`,
        pos + 1,
      );
    }
  }
  const keyType = word;
  pos = skipSpace(line, pos + word.length);
  const keyAt = pos;
  const base64 = wordAt(line, pos);
  if (base64 === "") throw new LineError(`missing key data after "${keyType}"`, keyAt + 1);
  // Anything after the key is a comment.
  const blob = decodeBase64(base64);
  if (!blob) throw new LineError(`the ${keyType} key is not valid base64`, keyAt + 1);
  let blobType: string;
  try {
    blobType = new SshReader(blob).text();
  } catch {
    throw new LineError(`the ${keyType} key data is truncated`, keyAt + 1);
  }
  if (blobType !== keyType) {
    throw new LineError(`the key data is a ${truncate(blobType)} key, not ${keyType}`, keyAt + 1);
  }
  const signer: AllowedSigner = {
    line: lineNo,
    principals: principals.split(","),
    certAuthority: options.certAuthority,
    keyType,
    key: blob,
    fingerprint: sshFingerprint(blob),
  };
  if (options.namespaces !== undefined) signer.namespaces = options.namespaces;
  if (options.validAfter !== undefined) signer.validAfter = options.validAfter;
  if (options.validBefore !== undefined) signer.validBefore = options.validBefore;
  return signer;
}

interface SignerOptions {
  certAuthority: boolean;
  namespaces?: string;
  validAfter?: number;
  validBefore?: number;
}

/** The end of the options word: the first space outside double quotes. */
function endOfOptions(line: string, pos: number): number {
  let quoted = false;
  for (let i = pos; i < line.length; i++) {
    const c = line[i];
    if (c === "\\" && quoted && line[i + 1] === '"') i++;
    else if (c === '"') quoted = !quoted;
    else if (!quoted && isSpace(c)) return i;
  }
  if (quoted) throw new LineError("an option value has an opening quote and no closing one", pos + 1);
  return line.length;
}

/** `cert-authority`, `namespaces="..."`, `valid-after="..."`, `valid-before="..."`, comma-separated. */
function parseSignerOptions(text: string, at: number): SignerOptions {
  const options: SignerOptions = { certAuthority: false };
  let pos = 0;
  while (pos < text.length) {
    const nameMatch = /^[A-Za-z0-9-]+/.exec(text.slice(pos));
    const column = at + pos + 1;
    if (!nameMatch) throw new LineError(`expected an option name, found "${truncate(text.slice(pos))}"`, column);
    const name = nameMatch[0];
    const lower = name.toLowerCase(); // OpenSSH matches option names case-insensitively
    pos += name.length;
    let value: string | undefined;
    if (text[pos] === "=") {
      if (text[pos + 1] !== '"') throw new LineError(`the value of ${name} must be in double quotes`, at + pos + 2);
      let i = pos + 2;
      value = "";
      while (i < text.length && text[i] !== '"') {
        if (text[i] === "\\" && text[i + 1] === '"') i++;
        value += text[i];
        i++;
      }
      if (i >= text.length) throw new LineError(`the value of ${name} has no closing quote`, at + pos + 2);
      pos = i + 1;
    }
    switch (lower) {
      case "cert-authority":
        if (value !== undefined) throw new LineError("cert-authority takes no value", column);
        options.certAuthority = true;
        break;
      case "namespaces":
        if (value === undefined) throw new LineError('namespaces needs a value, e.g. namespaces="git"', column);
        if (options.namespaces !== undefined) throw new LineError("namespaces is given twice", column);
        options.namespaces = value;
        break;
      case "valid-after":
      case "valid-before": {
        if (value === undefined) throw new LineError(`${lower} needs a value, e.g. ${lower}="20250101"`, column);
        const time = parseSshTime(value);
        if (time === null) {
          throw new LineError(`${lower}="${truncate(value)}" is not a time (YYYYMMDD[HHMM[SS]][Z])`, column);
        }
        if ((lower === "valid-after" ? options.validAfter : options.validBefore) !== undefined) {
          throw new LineError(`${lower} is given twice`, column);
        }
        if (lower === "valid-after") options.validAfter = time;
        else options.validBefore = time;
        break;
      }
      default:
        throw new LineError(
          `unknown option "${truncate(name)}" (allowed: cert-authority, namespaces, valid-after, valid-before)`,
          column,
        );
    }
    if (pos >= text.length) break;
    if (text[pos] !== ",") throw new LineError(`expected "," between options`, at + pos + 1);
    pos++;
    if (pos >= text.length) throw new LineError("an option list may not end with a comma", at + pos);
  }
  return options;
}

/**
 * OpenSSH's absolute times: YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS; a trailing Z means UTC,
 * otherwise the local time zone (as ssh-keygen). Returns milliseconds since the epoch.
 */
export function parseSshTime(value: string): number | null {
  const m = /^(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})(\d{2})?)?([Zz])?$/.exec(value);
  if (!m) return null;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map((v) => (v === undefined ? 0 : Number(v))) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const utc = m[7] !== undefined;
  const date = utc
    ? new Date(Date.UTC(year, month - 1, day, hour, minute, second))
    : new Date(year, month - 1, day, hour, minute, second);
  const fields = utc
    ? [date.getUTCFullYear(), date.getUTCMonth() + 1, date.getUTCDate(), date.getUTCHours(), date.getUTCMinutes()]
    : [date.getFullYear(), date.getMonth() + 1, date.getDate(), date.getHours(), date.getMinutes()];
  // Out-of-range fields (month 13, 25:00) roll over in Date: refuse them instead.
  if (fields.join() !== [year, month, day, hour, minute].join() || second > 59) return null;
  return date.getTime();
}

/** OpenSSH's match_pattern_list: comma-separated `*`/`?` globs, `!` negates. 1 match, 0 none, -1 negated match. */
export function matchPatternList(value: string, patterns: string): 1 | 0 | -1 {
  let matched: 1 | 0 = 0;
  for (const raw of patterns.split(",")) {
    const negated = raw.startsWith("!");
    const pattern = negated ? raw.slice(1) : raw;
    if (globMatch(value, pattern)) {
      if (negated) return -1;
      matched = 1;
    }
  }
  return matched;
}

function globMatch(value: string, pattern: string): boolean {
  const source = pattern
    .replace(/[.+^${}()|[\]\\]/g, "\\$&")
    .replace(/\*/g, ".*")
    .replace(/\?/g, ".");
  return new RegExp(`^${source}$`, "s").test(value);
}

// ---------------------------------------------------------------------------------------------
// SSH signatures (SSHSIG, OpenSSH PROTOCOL.sshsig)
// ---------------------------------------------------------------------------------------------

const SSH_BEGIN = "-----BEGIN SSH SIGNATURE-----";
const SSH_END = "-----END SSH SIGNATURE-----";
const SSHSIG_MAGIC = Buffer.from("SSHSIG");
const GIT_NAMESPACE = "git";
/** OpenSSH refuses smaller RSA keys (SSH_RSA_MINIMUM_MODULUS_SIZE). */
const MIN_RSA_BITS = 1024;

interface SshSig {
  publicKey: Buffer;
  namespace: Buffer;
  reserved: Buffer;
  hashAlgorithm: string;
  signature: Buffer;
}

class Malformed extends Error {}

function verifySsh(store: TrustStore, payload: Buffer, armor: string, commit: string): SignatureVerdict {
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

class Unsupported extends Error {}

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

type SshKey =
  | { kind: "ed25519"; key: KeyObject }
  | { kind: "rsa"; key: KeyObject; bytes: number }
  | { kind: "ecdsa"; key: KeyObject; hash: string; size: number };

const CURVES: Record<string, { name: string; crv: string; hash: string; size: number }> = {
  "ecdsa-sha2-nistp256": { name: "nistp256", crv: "P-256", hash: "sha256", size: 32 },
  "ecdsa-sha2-nistp384": { name: "nistp384", crv: "P-384", hash: "sha384", size: 48 },
  "ecdsa-sha2-nistp521": { name: "nistp521", crv: "P-521", hash: "sha512", size: 66 },
};

function sshPublicKey(keyType: string, blob: Buffer): SshKey {
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
function unsignedMpint(buf: Buffer, size: number): Buffer {
  const value = stripZeros(buf);
  if (value.length > size) throw new Malformed("ECDSA signature value out of range");
  return Buffer.concat([Buffer.alloc(size - value.length), value]);
}

/** `SHA256:` + unpadded base64 of the key blob's SHA-256, as ssh-keygen -l prints it. */
export function sshFingerprint(blob: Uint8Array): string {
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

/** Reads the SSH wire format (RFC 4251): uint32 and length-prefixed strings. */
class SshReader {
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

function sshString(data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  return Buffer.concat([length, data]);
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

// ---------------------------------------------------------------------------------------------
// OpenPGP
// ---------------------------------------------------------------------------------------------

const PGP_BEGIN = "-----BEGIN PGP SIGNATURE-----";
const PGP_KEY_BLOCK = /^-----BEGIN PGP (PUBLIC|PRIVATE) KEY BLOCK-----\s*$/;

let openpgpModule: Promise<OpenPgp> | undefined;

/** The openpgp package, loaded on first use (it is large; most runs verify nothing). */
function openpgp(): Promise<OpenPgp> {
  openpgpModule ??= import("openpgp").then((mod) => (mod as OpenPgp & { default?: OpenPgp }).default ?? mod);
  return openpgpModule;
}

/** Reads every armored public key block of a file; each error is located at its block's first line. */
async function parseOpenPgpKeys(file: string, text: string): Promise<{ keys: PublicKey[]; errors: DriftlessError[] }> {
  const keys: PublicKey[] = [];
  const errors: DriftlessError[] = [];
  const lines = text.replace(/\r\n/g, "\n").split("\n");
  const blocks: { line: number; private: boolean; text: string }[] = [];
  for (let i = 0; i < lines.length; i++) {
    const begin = PGP_KEY_BLOCK.exec(lines[i] ?? "");
    if (!begin) continue;
    const kind = begin[1] as string;
    const endLine = `-----END PGP ${kind} KEY BLOCK-----`;
    let j = i + 1;
    while (j < lines.length && lines[j]?.trim() !== endLine) j++;
    if (j >= lines.length) {
      errors.push(trustError(`the key block has no "${endLine}" line`, { file, line: i + 1 }));
      break;
    }
    blocks.push({ line: i + 1, private: kind === "PRIVATE", text: lines.slice(i, j + 1).join("\n") });
    i = j;
  }
  if (blocks.length === 0 && errors.length === 0) {
    errors.push(
      trustError(`holds no "-----BEGIN PGP PUBLIC KEY BLOCK-----"; export keys with gpg --export --armor KEYID`, {
        file,
      }),
    );
  }
  if (blocks.length === 0) return { keys, errors };
  const pgp = await openpgp();
  for (const block of blocks) {
    const where = { file, line: block.line };
    if (block.private) {
      errors.push(trustError("holds a private key; put only public keys here (gpg --export --armor KEYID)", where));
      continue;
    }
    let read: Key[];
    try {
      read = await pgp.readKeys({ armoredKeys: block.text });
    } catch (error) {
      errors.push(trustError(`cannot read this OpenPGP key block: ${errorMessage(error)}`, where));
      continue;
    }
    for (const key of read) {
      if (key.isPrivate()) {
        errors.push(trustError("holds a private key; put only public keys here (gpg --export --armor KEYID)", where));
      } else {
        keys.push(key as PublicKey);
      }
    }
  }
  return { keys, errors };
}

async function verifyOpenPgp(
  store: TrustStore,
  payload: Buffer,
  armor: string,
  commit: string,
): Promise<SignatureVerdict> {
  const pgp = await openpgp();
  let signature: Awaited<ReturnType<OpenPgp["readSignature"]>>;
  try {
    signature = await pgp.readSignature({ armoredSignature: armor });
  } catch (error) {
    return {
      trusted: false,
      format: "openpgp",
      reason: `${commit} has a malformed OpenPGP signature (${errorMessage(error)})`,
    };
  }
  const issuers = signature.packets.map((packet) => {
    const fpr = packet.issuerFingerprint;
    return {
      keyID: packet.issuerKeyID,
      name:
        fpr && fpr.length > 0
          ? Buffer.from(fpr).toString("hex").toUpperCase()
          : packet.issuerKeyID.toHex().toUpperCase(),
    };
  });
  if (issuers.length === 0) {
    return {
      trusted: false,
      format: "openpgp",
      reason: `${commit} has an OpenPGP signature block with no signature in it`,
    };
  }
  const unknownName = `OpenPGP key ${issuers.map((i) => i.name).join(", ")}`;
  const trustedKeys = store.openpgp;
  if (!trustedKeys) {
    return {
      trusted: false,
      format: "openpgp",
      reason: `${commit} is signed with ${unknownName}, but no trusted OpenPGP keys are configured (trust.openpgpKeys)`,
    };
  }
  let failure: SignatureVerdict | undefined;
  for (const issuer of issuers) {
    const key = trustedKeys.keys.find((k) => k.getKeys(issuer.keyID).length > 0);
    if (!key) continue;
    const fingerprint = key.getFingerprint().toUpperCase();
    const signer = await primaryUserId(key);
    const keyName = `OpenPGP key ${fingerprint}${signer ? ` (${signer})` : ""}`;
    try {
      const message = await pgp.createMessage({ binary: new Uint8Array(payload) });
      const result = await pgp.verify({ message, signature, verificationKeys: key, format: "binary" });
      const check = result.signatures.find((s) => s.keyID.equals(issuer.keyID));
      if (!check) throw new Error("no signature by that key");
      await check.verified;
      return {
        trusted: true,
        format: "openpgp",
        ...(signer ? { signer } : {}),
        fingerprint,
        reason: `${commit} is signed by ${signer ?? fingerprint} with OpenPGP key ${fingerprint}`,
      };
    } catch (error) {
      const detail = errorMessage(error);
      const reason = /digest did not match|signature did not match|verification failed/i.test(detail)
        ? `${commit} has a bad OpenPGP signature from ${keyName}: the commit was changed after it was signed, or the signature is damaged`
        : `${commit} is signed with ${keyName}, but the signature cannot be accepted: ${detail}`;
      failure ??= { trusted: false, format: "openpgp", ...(signer ? { signer } : {}), fingerprint, reason };
    }
  }
  return (
    failure ?? {
      trusted: false,
      format: "openpgp",
      fingerprint: issuers[0]?.name ?? "",
      reason: `${commit} is signed with ${unknownName}, which is not in ${trustedKeys.file}`,
    }
  );
}

async function primaryUserId(key: PublicKey): Promise<string | undefined> {
  try {
    const primary = await key.getPrimaryUser();
    return primary.user.userID?.userID || undefined;
  } catch {
    return key.getUserIDs()[0];
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

function trustError(message: string, location?: Location): DriftlessError {
  return new DriftlessError(message, { code: "ETRUST", phase: "load", ...(location ? { location } : {}) });
}

function decodeBase64(text: string): Buffer | null {
  if (text.length === 0 || text.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(text)) return null;
  return Buffer.from(text, "base64");
}

function startsWith(buf: Buffer, at: number, prefix: string): boolean {
  return buf.toString("latin1", at, at + prefix.length) === prefix;
}

function isSpace(c: string | undefined): boolean {
  return c === " " || c === "\t";
}

function skipSpace(line: string, pos: number): number {
  while (pos < line.length && isSpace(line[pos])) pos++;
  return pos;
}

function wordAt(line: string, pos: number): string {
  let end = pos;
  while (end < line.length && !isSpace(line[end])) end++;
  return line.slice(pos, end);
}

/** Quoted user input, cut short: never echo a whole line (it might be key material). */
function truncate(text: string, max = 40): string {
  return text.length > max ? `${text.slice(0, max)}...` : text;
}

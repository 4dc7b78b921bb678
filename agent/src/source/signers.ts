/**
 * git's allowed signers file (ssh-keygen(1), ALLOWED SIGNERS): one key per line with its
 * principals and options, parsed as ssh-keygen does; principal and namespace pattern lists.
 */
import type { DriftlessError } from "../errors.js";
import { SshReader, sshFingerprint } from "./ssh-key.js";
import { type AllowedSigner, decodeBase64, truncate, trustError } from "./trust-common.js";

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

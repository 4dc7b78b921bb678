/** OpenPGP commit signatures (gpg), checked with the `openpgp` package, loaded on first use only. */
import type { Key, PublicKey } from "openpgp";
import { type DriftlessError, errorMessage } from "../errors.js";
import { type SignatureVerdict, type TrustStore, trustError } from "./trust-common.js";

type OpenPgp = typeof import("openpgp");

export const PGP_BEGIN = "-----BEGIN PGP SIGNATURE-----";
const PGP_KEY_BLOCK = /^-----BEGIN PGP (PUBLIC|PRIVATE) KEY BLOCK-----\s*$/;

let openpgpModule: Promise<OpenPgp> | undefined;

/** The openpgp package, loaded on first use (it is large; most runs verify nothing). */
function openpgp(): Promise<OpenPgp> {
  openpgpModule ??= import("openpgp").then((mod) => (mod as OpenPgp & { default?: OpenPgp }).default ?? mod);
  return openpgpModule;
}

/** Reads every armored public key block of a file; each error is located at its block's first line. */
export async function parseOpenPgpKeys(
  file: string,
  text: string,
): Promise<{ keys: PublicKey[]; errors: DriftlessError[] }> {
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

export async function verifyOpenPgp(
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

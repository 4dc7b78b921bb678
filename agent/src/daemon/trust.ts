/** The trust check of the daemon: commit signatures against the keys named in `trust:`. */
import type { AgentConfig } from "../config/schema.js";
import { DriftlessError } from "../errors.js";
import type { HostFs } from "../host/fs.js";
import { loadTrustStore, verifyCommitSignature } from "../source/verify.js";
import type { TrustCheck } from "./cycle.js";

/** Null when the configuration has no `trust:` (signatures are not checked). */
export async function createTrustCheck(fs: HostFs, config: AgentConfig): Promise<TrustCheck | null> {
  const trust = config.trust;
  if (!trust) return null;
  const read = (file: string | undefined) => {
    if (!file) return undefined;
    const text = fs.readTextIfExists(file);
    if (text === null) {
      throw new DriftlessError(`trusted keys not found: ${file}`, {
        code: "ETRUST",
        phase: "load",
        location: { file },
      });
    }
    return { file, text };
  };
  const allowedSigners = read(trust.allowedSigners);
  const openpgpKeys = read(trust.openpgpKeys);
  const store = await loadTrustStore({
    ...(allowedSigners ? { allowedSigners } : {}),
    ...(openpgpKeys ? { openpgpKeys } : {}),
  });
  return {
    async refuse(commit) {
      const verdict = await verifyCommitSignature(store, commit.payload, commit.signature, { commit: commit.oid });
      return verdict.trusted ? null : verdict.reason;
    },
  };
}

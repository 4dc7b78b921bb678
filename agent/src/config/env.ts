/** Where the configuration lives and which environment variables override it (no dependencies: the supervisor loads this). */
export const DEFAULT_CONFIG = "/etc/driftless/agent.yaml";
/** The state directory when the configuration names none. */
export const DEFAULT_STATE_DIR = "/var/lib/driftless";

/** Environment variables and the key each overrides. */
export const ENV_OVERRIDES: Record<string, string[]> = {
  DRIFTLESS_HOST: ["host"],
  DRIFTLESS_MODE: ["mode"],
  DRIFTLESS_STATE_DIR: ["stateDir"],
  DRIFTLESS_SOURCE_URL: ["source", "url"],
  DRIFTLESS_SOURCE_REF: ["source", "ref"],
  DRIFTLESS_SOURCE_TOKEN_FILE: ["source", "tokenFile"],
  DRIFTLESS_SOURCE_INTERVAL: ["source", "interval"],
  DRIFTLESS_SOURCE_SPLAY: ["source", "splay"],
  DRIFTLESS_SOURCE_FETCH_TIMEOUT: ["source", "fetchTimeout"],
  DRIFTLESS_TRUST_ALLOWED_SIGNERS: ["trust", "allowedSigners"],
  DRIFTLESS_TRUST_OPENPGP_KEYS: ["trust", "openpgpKeys"],
  DRIFTLESS_BROKER_URL: ["broker", "url"],
  DRIFTLESS_BROKER_USERNAME: ["broker", "username"],
  DRIFTLESS_BROKER_PASSWORD_FILE: ["broker", "passwordFile"],
  DRIFTLESS_BROKER_CA: ["broker", "ca"],
};

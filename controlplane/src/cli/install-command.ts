/**
 * The line `driftlessctl hosts add NAME --install-command` prints: pasted as root on a new host,
 * it writes the host's MQTT password to a file only root can read, downloads the binary of the
 * host's architecture and runs `driftless install`, which copies it to /usr/local/bin and starts
 * the service. Pure: every value is shell-quoted here, nothing is read or written.
 */
import { FleetError } from "../errors.js";

/** Where the line writes the password on the host: where `driftless install` keeps it, so it is not copied. */
export const HOST_PASSWORD_FILE = "/etc/driftless/mqtt-password";
/** Placeholders left in the line when no flag gives the value; the operator replaces them. */
export const DOWNLOAD_PLACEHOLDER = "https://DOWNLOAD-HOST/";
export const SOURCE_PLACEHOLDER = "https://GIT-HOST/fleet.git";

export interface InstallCommandOptions {
  host: string;
  password: string;
  /** The broker the host reports to, as the host reaches it (mqtt:// or mqtts://). */
  brokerUrl: string;
  /** The profile repository, as the host reaches it. */
  source: string;
  /** Where `driftless-linux-x64` and `driftless-linux-arm64` are, ending in `/`. */
  downloadUrl: string;
  labels: Record<string, string>;
}

/** One shell word: single-quoted unless made of characters no shell reads specially (or `always`). */
export function shellQuote(value: string, always = false): string {
  if (!always && /^[A-Za-z0-9_@%+=:,./-]+$/.test(value)) return value;
  return `'${value.replaceAll("'", `'"'"'`)}'`;
}

export function installCommand(o: InstallCommandOptions): string {
  const q = shellQuote;
  const install = [
    '"$t" install',
    `--source ${q(o.source)}`,
    `--host ${q(o.host)}`,
    ...Object.entries(o.labels).map(([k, v]) => `--label ${q(`${k}=${v}`)}`),
    `--broker ${q(o.brokerUrl)}`,
    `--broker-password-file ${HOST_PASSWORD_FILE}`,
  ].join(" ");
  const binary = `${q(o.downloadUrl)}"driftless-linux-$a"`;
  return [
    // A subshell: set -e, umask and the trap end with it, not with the operator's shell.
    "(set -e; umask 077",
    // printf is a shell builtin: the password shows in no process list.
    `mkdir -p /etc/driftless; printf '%s\\n' ${q(o.password, true)} > ${HOST_PASSWORD_FILE}`,
    `case "$(uname -m)" in x86_64|amd64) a=x64;; aarch64|arm64) a=arm64;; *) echo "driftless: no binary for $(uname -m)" >&2; exit 1;; esac`,
    // Next to its final place (a /tmp mounted noexec cannot run it); install copies it there.
    `t=$(mktemp /usr/local/bin/.driftless-XXXXXX); trap 'rm -f "$t"' EXIT`,
    `{ curl -fsSL -o "$t" ${binary} || wget -qO "$t" ${binary}; }`,
    `chmod 0700 "$t"; ${install})`,
  ].join("; ");
}

/** The placeholders the line still holds, for a note to the operator. */
export function placeholdersIn(line: string): string[] {
  return ["DOWNLOAD-HOST", "GIT-HOST", "CONTROL-PLANE"].filter((p) => line.includes(p));
}

/** Checks a URL flag of `hosts add`; `protocols` such as ["https:", "http:"]. */
export function checkUrl(flag: string, value: string, protocols: string[]): string {
  const url = URL.canParse(value) ? new URL(value) : null;
  if (!url || !protocols.includes(url.protocol) || !url.hostname) {
    throw new FleetError(`${flag} ${value}: expected a ${protocols.map((p) => `${p}//`).join(" or ")} URL`, {
      code: "EUSAGE",
    });
  }
  if (url.username || url.password) {
    throw new FleetError(`${flag}: the URL must not hold credentials`, { code: "EUSAGE" });
  }
  return value;
}

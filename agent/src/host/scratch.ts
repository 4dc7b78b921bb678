/**
 * Private scratch space for a run that must write nothing of its own (`driftless plan` fetching a
 * Git URL): a fresh directory made by mkdtemp (mode 0700, a name no other user can have taken
 * first), removed at the end.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

export interface Scratch {
  dir: string;
  remove(): void;
}

export function privateTempDir(prefix: string): Scratch {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(dir, 0o700);
  return { dir, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Copies the directory `from` to `to` (which must not exist) when it can be trusted: it and its
 * parent are owned by this user or root and writable by no one else (a sticky parent such as
 * /tmp may be). Symbolic links are left
 * out; with `only`, so is every entry of `from` not named there. Returns false, copying
 * nothing, otherwise (or when `from` does not exist or cannot be read).
 */
export function copyTrustedTree(from: string, to: string, only?: string[]): boolean {
  const uid = process.getuid?.() ?? 0;
  const trusted = (dir: string, sticky: boolean) => {
    const st = fs.lstatSync(dir, { throwIfNoEntry: false });
    if (!st?.isDirectory()) return false;
    // A parent such as /tmp (sticky) lets no one else replace `from`.
    const open = (st.mode & 0o022) !== 0 && !(sticky && st.mode & 0o1000);
    return (st.uid === uid || st.uid === 0) && !open;
  };
  if (!trusted(from, false) || !trusted(path.dirname(from), true)) return false;
  try {
    const top = only ? new Set(only.map((name) => path.join(from, name))) : null;
    fs.cpSync(from, to, {
      recursive: true,
      filter: (source) => !fs.lstatSync(source).isSymbolicLink() && (source === from || !top || top.has(source)),
    });
    return true;
  } catch {
    fs.rmSync(to, { recursive: true, force: true });
    return false;
  }
}

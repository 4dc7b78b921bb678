/**
 * The shapes every resource kind shares: what is desired (from the profile), what a reader found
 * on the host (actual), and the change the planner derives from the two.
 */

/**
 * Where a resource was declared, for error messages: the file, the document in it and the
 * entry's field path. Its line and column are found only for an error (profile/load.ts
 * locateDeclared), since finding positions means parsing the file again.
 */
export interface DeclaredAt {
  file: string;
  /** Which document of the file, from 0. */
  document: number;
  /** The entry's field path in that document: `["files", 3]`. */
  path: ReadonlyArray<string | number>;
}

interface DesiredBase {
  /** `package:NAME`, `file:PATH` or `service:NAME`. */
  id: string;
  /** Resource ids this one must follow; failure of one of them skips this one. */
  after: string[];
  declaredAt: DeclaredAt;
  /** Name of the profile that declared it. */
  profile: string;
}

export type FileState = "file" | "directory" | "link" | "absent";

export interface DesiredFile extends DesiredBase {
  kind: "file";
  path: string;
  state: FileState;
  /** The content held in memory (inline, rendered, or a small source), for `state: file`. */
  content?: Buffer;
  /** Instead of `content`: the repository file (a path on this machine) it is copied from, in chunks. */
  contentFrom?: string;
  /** sha256 of the content, hex. */
  contentHash?: string;
  /** Secret: diffs, logs, reports and the state database get its hashes only, never its content. */
  sensitive?: boolean;
  mode?: number;
  owner?: string;
  group?: string;
  /** For `state: link`. */
  target?: string;
  /** Service ids restarted (or reloaded) when this file changes. */
  notify: string[];
}

export type PackageState = "present" | "absent" | "latest";

export interface DesiredPackage extends DesiredBase {
  kind: "package";
  name: string;
  state: PackageState;
  version?: string;
}

export interface DesiredService extends DesiredBase {
  kind: "service";
  name: string;
  enabled?: boolean;
  state?: "running" | "stopped";
  /** What a `notify` from a changed file does: restart (default) or reload. */
  onNotify: "restart" | "reload";
}

export type Desired = DesiredFile | DesiredPackage | DesiredService;
export type ResourceKind = Desired["kind"];

export interface ActualFile {
  type: "file" | "directory" | "link" | "other" | "absent";
  mode?: number;
  uid?: number;
  gid?: number;
  /** sha256 of the content, hex; for regular files. */
  contentHash?: string;
  /** The current content, when it is text small enough to show as a diff. */
  text?: string;
  /** For links. */
  target?: string;
  /** True when the content was not read because the recorded fingerprint proved it unchanged. */
  fromFingerprint?: boolean;
}

export interface ActualPackage {
  installed: boolean;
  version?: string;
  /** The version the package manager would install now; read only for `latest`. */
  candidate?: string;
}

export interface ActualService {
  /** False when systemd knows no such unit. */
  loaded: boolean;
  /** systemd's UnitFileState: enabled, disabled, static, masked, ... */
  unitFileState?: string;
  /** systemd's ActiveState: active, inactive, failed, ...; undefined under `--root`. */
  activeState?: string;
  mainPid?: number;
}

/** The actual state of every desired resource, by resource id. */
export interface ActualState {
  files: Map<string, ActualFile>;
  packages: Map<string, ActualPackage>;
  services: Map<string, ActualService>;
  accounts: Accounts;
}

/** User and group names of the managed host (its /etc/passwd and /etc/group). */
export interface Accounts {
  users: Map<string, number>;
  groups: Map<string, number>;
}

/** One field that differs between desired and actual. */
export interface Drift {
  field: string;
  desired: unknown;
  actual: unknown;
}

/**
 * Small Debian packages built in the test, and a local apt repository that a test host sees
 * through a read-only bind mount, so tests need no network and control every version.
 *
 *   const repo = await createAptRepo();
 *   const host = await bootHost({ binds: [repo.bind] });
 *   await repo.publish({ name: "dl-hello", version: "1.0", service: {} });
 *   await useAptRepo(host, repo);               // source line + apt-get update
 *   await repo.publish({ name: "dl-hello", version: "2.0", service: {} });
 *   await host.exec("apt-get", ["update"]);      // the host now sees 2.0
 *
 * Only `dpkg-deb` (dpkg, on every Debian machine) is needed: the `Packages.gz` index is written
 * here, not with dpkg-scanpackages or apt-ftparchive.
 */
import { createHash } from "node:crypto";
import { chmod, mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { gzipSync } from "node:zlib";
import type { Bind, TestHost } from "./host.js";
import { runChecked } from "./process.js";

export interface DebFile {
  /** Absolute path on the host, e.g. `/etc/dl-hello/hello.conf` (files under /etc are conffiles). */
  path: string;
  content: string | Buffer;
  /** Default 0644. */
  mode?: number;
}

export interface DebService {
  /** Unit name without `.service`; default: the package name. */
  name?: string;
  /** The whole unit file; default: a simple service running a tiny shell daemon. */
  unit?: string;
  /**
   * Enable and (re)start the unit in postinst, as most Debian packages with a daemon do.
   * Default false: the unit is installed, daemon-reload'ed, and left disabled and stopped
   * (on upgrade, a running unit is restarted with try-restart).
   */
  autostart?: boolean;
}

export interface DebSpec {
  name: string;
  version: string;
  /** Default `all`. */
  architecture?: string;
  description?: string;
  depends?: string[];
  conflicts?: string[];
  files?: DebFile[];
  /** Ships `/lib/systemd/system/<unit>.service` and `/usr/bin/<unit>-daemon`. */
  service?: DebService;
  /** Shell commands appended to postinst (`exit 1` makes the package fail to configure). */
  postinst?: string;
}

/** The `.deb` file name dpkg would give the package. */
export function debFileName(spec: Pick<DebSpec, "name" | "version" | "architecture">): string {
  const version = spec.version.replace(/^\d+:/, "");
  return `${spec.name}_${version}_${spec.architecture ?? "all"}.deb`;
}

/** Builds the package with `dpkg-deb --build` into `outDir`; returns the path of the `.deb`. */
export async function buildDeb(spec: DebSpec, outDir: string): Promise<string> {
  if (!/^[a-z0-9][a-z0-9+.-]+$/.test(spec.name)) throw new Error(`invalid package name: ${spec.name}`);
  const staging = await mkdtemp(path.join(tmpdir(), "driftless-deb-"));
  try {
    const files = [...(spec.files ?? [])];
    const maintainer: Record<string, string> = {};
    if (spec.service) {
      const unit = spec.service.name ?? spec.name;
      files.push(
        { path: `/lib/systemd/system/${unit}.service`, content: spec.service.unit ?? defaultUnit(unit, spec) },
        { path: `/usr/bin/${unit}-daemon`, content: daemonScript(unit, spec.version), mode: 0o755 },
      );
      maintainer.postinst = servicePostinst(unit, spec.service.autostart ?? false);
      maintainer.prerm = `if [ "$1" = remove ] && [ -d /run/systemd/system ]; then\n  systemctl stop ${unit}.service || true\nfi\n`;
      maintainer.postrm = `if [ -d /run/systemd/system ]; then\n  systemctl daemon-reload || true\nfi\n`;
    }
    if (spec.postinst) maintainer.postinst = `${maintainer.postinst ?? ""}${spec.postinst}\n`;

    for (const file of files) {
      if (!path.posix.isAbsolute(file.path)) throw new Error(`package file path must be absolute: ${file.path}`);
      const target = path.join(staging, file.path);
      await mkdir(path.dirname(target), { recursive: true });
      await writeFile(target, file.content);
      await chmod(target, file.mode ?? 0o644);
    }
    await mkdir(path.join(staging, "DEBIAN"));
    await writeFile(path.join(staging, "DEBIAN", "control"), controlText(spec));
    // Like debhelper: every file under /etc is a conffile (kept on remove, state config-files).
    const conffiles = files.filter((f) => f.path.startsWith("/etc/")).map((f) => f.path);
    if (conffiles.length) await writeFile(path.join(staging, "DEBIAN", "conffiles"), `${conffiles.join("\n")}\n`);
    for (const [script, body] of Object.entries(maintainer)) {
      const file = path.join(staging, "DEBIAN", script);
      await writeFile(file, `#!/bin/sh\nset -e\n${body}exit 0\n`);
      await chmod(file, 0o755);
    }
    await mkdir(outDir, { recursive: true });
    const deb = path.join(outDir, debFileName(spec));
    await runChecked("dpkg-deb", ["--root-owner-group", "-Zgzip", "--build", staging, deb]);
    return deb;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

export interface AptRepo {
  /** The folder on this machine holding the `.deb` files and the `Packages.gz` index. */
  readonly dir: string;
  /** Where hosts see it (default `/srv/repo`). */
  readonly mountPoint: string;
  /** `deb [trusted=yes] file:/srv/repo ./` */
  readonly sourceLine: string;
  /** The read-only bind mount to pass to `bootHost({ binds })`. */
  readonly bind: Bind;
  /** Builds the packages into the repository and rewrites the index; returns the `.deb` paths. */
  publish(...specs: DebSpec[]): Promise<string[]>;
  /** Removes one version (or every version) of a package from the repository. */
  unpublish(name: string, version?: string): Promise<void>;
  /** Deletes the folder. */
  dispose(): Promise<void>;
}

export async function createAptRepo(options: { mountPoint?: string } = {}): Promise<AptRepo> {
  const dir = await mkdtemp(path.join(tmpdir(), "driftless-repo-"));
  await chmod(dir, 0o755);
  const mountPoint = options.mountPoint ?? "/srv/repo";
  await writeIndex(dir);
  let queue: Promise<unknown> = Promise.resolve();
  const serial = <T>(work: () => Promise<T>): Promise<T> => {
    const next = queue.then(work, work);
    queue = next.catch(() => undefined);
    return next;
  };
  return {
    dir,
    mountPoint,
    sourceLine: `deb [trusted=yes] file:${mountPoint} ./`,
    bind: { source: dir, target: mountPoint },
    publish: (...specs) =>
      serial(async () => {
        const debs: string[] = [];
        for (const spec of specs) debs.push(await buildDeb(spec, dir));
        await writeIndex(dir);
        return debs;
      }),
    unpublish: (name, version) =>
      serial(async () => {
        for (const entry of await readdir(dir)) {
          if (!entry.endsWith(".deb")) continue;
          const [pkg, ver] = entry.split("_");
          if (pkg === name && (version === undefined || ver === version.replace(/^\d+:/, ""))) {
            await rm(path.join(dir, entry));
          }
        }
        await writeIndex(dir);
      }),
    dispose: () => rm(dir, { recursive: true, force: true }),
  };
}

/**
 * Points the host's apt at the repository and runs `apt-get update`. With `only` (the default)
 * the host's other sources are switched off, so updates need no network and take a second.
 */
export async function useAptRepo(host: TestHost, repo: AptRepo, options: { only?: boolean } = {}): Promise<void> {
  const only = options.only ?? true;
  const script = [
    "set -e",
    `echo '${repo.sourceLine}' > /etc/apt/sources.list.d/driftless-test.list`,
    only ? "if [ -f /etc/apt/sources.list ]; then mv /etc/apt/sources.list /etc/apt/sources.list.disabled; fi" : "",
    "apt-get update -q",
  ].join("\n");
  const result = await host.exec("sh", ["-c", script]);
  if (result.exitCode !== 0)
    throw new Error(`configuring the apt repository failed:\n${result.stdout}${result.stderr}`);
}

/** Writes `Packages.gz` (and a `Release` with its hash) for every `.deb` in `dir`, atomically. */
async function writeIndex(dir: string): Promise<void> {
  const stanzas: string[] = [];
  const debs = (await readdir(dir)).filter((entry) => entry.endsWith(".deb")).sort();
  for (const deb of debs) {
    const file = path.join(dir, deb);
    const [control, data] = await Promise.all([runChecked("dpkg-deb", ["--field", file]), readFile(file)]);
    stanzas.push(
      `${control.stdout.trimEnd()}\nFilename: ./${deb}\nSize: ${data.length}\n` +
        `MD5sum: ${hash("md5", data)}\nSHA256: ${hash("sha256", data)}\n`,
    );
  }
  // Compressed only: apt links an uncompressed index of a file: source into its lists, so a
  // host would see a new version before `apt-get update`, unlike with any real mirror.
  const plain = Buffer.from(stanzas.join("\n"));
  const packages = gzipSync(plain);
  const release =
    `Origin: driftless-test\nLabel: driftless-test\nDate: ${new Date().toUTCString()}\n` +
    `SHA256:\n ${hash("sha256", plain)} ${plain.length} Packages\n` +
    ` ${hash("sha256", packages)} ${packages.length} Packages.gz\n`;
  await writeAtomic(path.join(dir, "Packages.gz"), packages);
  await writeAtomic(path.join(dir, "Release"), release);
}

async function writeAtomic(file: string, data: string | Buffer): Promise<void> {
  const temp = `${file}.tmp-${process.pid}`;
  await writeFile(temp, data, { mode: 0o644 });
  await rename(temp, file);
}

function hash(algorithm: string, data: Buffer): string {
  return createHash(algorithm).update(data).digest("hex");
}

function controlText(spec: DebSpec): string {
  const lines = [
    `Package: ${spec.name}`,
    `Version: ${spec.version}`,
    `Architecture: ${spec.architecture ?? "all"}`,
    "Maintainer: Driftless tests <tests@driftless.invalid>",
    "Section: misc",
    "Priority: optional",
  ];
  if (spec.depends?.length) lines.push(`Depends: ${spec.depends.join(", ")}`);
  if (spec.conflicts?.length) lines.push(`Conflicts: ${spec.conflicts.join(", ")}`);
  lines.push(`Description: ${spec.description ?? `Driftless test package ${spec.name}`}`);
  return `${lines.join("\n")}\n`;
}

function defaultUnit(unit: string, spec: DebSpec): string {
  return `[Unit]
Description=Driftless test daemon ${unit} (${spec.name} ${spec.version})

[Service]
ExecStart=/usr/bin/${unit}-daemon
ExecReload=/bin/sh -c 'kill -HUP $$MAINPID'

[Install]
WantedBy=multi-user.target
`;
}

/** Runs until stopped; says its version when it starts and when it is reloaded (SIGHUP). */
function daemonScript(unit: string, version: string): string {
  return `#!/bin/sh
echo "${unit} ${version} started"
trap 'echo "${unit} ${version} reloaded"' HUP
trap 'exit 0' TERM
while :; do sleep 1; done
`;
}

/** What dh_installsystemd's postinst does, in short. */
function servicePostinst(unit: string, autostart: boolean): string {
  const onConfigure = autostart
    ? `  systemctl enable ${unit}.service\n  systemctl restart ${unit}.service\n`
    : `  if [ -n "$2" ]; then systemctl try-restart ${unit}.service; fi\n`;
  return `if [ "$1" = configure ] && [ -d /run/systemd/system ]; then\n  systemctl daemon-reload\n${onConfigure}fi\n`;
}

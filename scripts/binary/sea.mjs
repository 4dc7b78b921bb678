// What making either single binary (the agent's, driftlessctl's) shares: running Node of the
// target architecture here, writing a SEA blob, injecting it into a stripped copy of Node, and
// the glibc the result needs.
import { execFileSync } from "node:child_process";
import { chmodSync, copyFileSync } from "node:fs";
import * as path from "node:path";
import { arm64Sysroot, stripInTree } from "./toolchain.mjs";

/** The sentinel postject looks for in Node's binary. */
const SEA_FUSE = "NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2";

/** The command that runs Node `arch` here: directly, or under qemu for arm64. */
export function nodeCommand(arch, node, tree) {
  const bin = path.join(node, "bin", "node");
  if (arch === "x64") return [bin];
  return ["qemu-aarch64-static", "-L", arm64Sysroot(tree), bin];
}

/** Writes the SEA blob `config.output` from `config` (written to `configFile`) with Node `arch`. */
export function seaBlob(arch, node, tree, execArgv, configFile) {
  const [command, ...args] = nodeCommand(arch, node, tree);
  execFileSync(command, [...args, ...execArgv, "--experimental-sea-config", configFile], { stdio: "pipe" });
}

/** `binary`: Node `arch` (from `node`), stripped, with `blob` injected. */
export function injectBlob(arch, node, tree, blob, binary) {
  copyFileSync(path.join(node, "bin", "node"), binary);
  chmodSync(binary, 0o755);
  stripInTree(tree, arch, binary); // Node's own build keeps its symbols: 18 MB of 131
  const postject = path.resolve("node_modules/postject/dist/cli.js");
  execFileSync(process.execPath, [postject, binary, "NODE_SEA_BLOB", blob, "--sentinel-fuse", SEA_FUSE], {
    stdio: "pipe",
  });
}

/** The newest GLIBC_ and GLIBCXX_ symbol versions `files` require (readelf: any architecture). */
export function glibcFloor(files) {
  const newest = (prefix) => {
    let best = null;
    for (const file of files) {
      const text = execFileSync("readelf", ["-V", "--wide", file], { encoding: "utf8", maxBuffer: 64 << 20 });
      for (const [, version] of text.matchAll(new RegExp(`Name: ${prefix}_([0-9.]+)`, "g"))) {
        const parts = version.split(".").map(Number);
        if (!best || compare(parts, best) > 0) best = parts;
      }
    }
    return best ? best.join(".") : null;
  };
  return { glibc: newest("GLIBC"), glibcxx: newest("GLIBCXX") };
}

function compare(a, b) {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

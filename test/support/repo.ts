/** Temporary profile repositories and roots for tests. */
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";

const made: string[] = [];

/** A temp directory removed by `cleanupTemp()`. */
export function tempDir(prefix = "driftless-test-"): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  chmodSync(dir, 0o755); // readable by the unprivileged user the CLI tests run as
  made.push(dir);
  return dir;
}

/** Writes `files` (relative path -> content) into a new temp directory and returns it. */
export function makeRepo(files: Record<string, string>): string {
  const dir = tempDir("driftless-repo-");
  writeTree(dir, files);
  return dir;
}

export function writeTree(dir: string, files: Record<string, string>): void {
  for (const [rel, content] of Object.entries(files)) {
    const file = path.join(dir, rel);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, content);
  }
}

export function cleanupTemp(): void {
  for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
}

/** A Profile document with the given body (YAML lines after the header). */
export function profile(name: string, body: string): string {
  return `apiVersion: driftless/v1\nkind: Profile\nname: ${name}\n${body}`;
}

export function fleet(body: string): string {
  return `apiVersion: driftless/v1\nkind: Fleet\nassignments:\n${body}`;
}

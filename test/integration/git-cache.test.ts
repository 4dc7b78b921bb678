import { readFileSync, readlinkSync, statSync, symlinkSync } from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { HostFs } from "../../agent/src/host/fs.js";
import { createHttpClient } from "../../agent/src/host/http.js";
import { GitCache } from "../../agent/src/source/git.js";
import { cleanup, createRepo, startGitServer } from "../support/git-server.js";
import { cleanupTemp, tempDir } from "../support/repo.js";

afterAll(async () => {
  await cleanup();
  cleanupTemp();
});

describe("the Git cache", () => {
  it("checks out a new commit from the previous checkout, linking what did not change", async () => {
    const server = await startGitServer();
    const repo = await createRepo(server, "fleet");
    await repo.writeFiles({
      "fleet.yaml": "a: 1\n",
      "files/keep.conf": "same\n",
      "files/edit.conf": "v1\n",
      "old.txt": "x\n",
    });
    symlinkSync("files/keep.conf", path.join(repo.dir, "link"));
    const first = await repo.commit("first");
    await repo.push();
    const fs = new HostFs("/");
    const state = tempDir();
    const cache = new GitCache(
      { fs, gitFs: HostFs.nodeFs(), http: (signal) => createHttpClient(signal ? { signal } : {}) },
      state,
    );
    expect(await cache.fetch({ url: server.url("fleet"), ref: "main" })).toBe(first);
    const a = await cache.checkout(first);

    await repo.writeFiles({ "files/edit.conf": "v2\n", "old.txt": null, "new.txt": "n\n" });
    const second = await repo.commit("second");
    await repo.push();
    expect(await cache.fetch({ url: server.url("fleet"), ref: "main" })).toBe(second);
    const b = await cache.checkout(second, first);

    const read = (dir: string, file: string) => readFileSync(path.join(dir, file), "utf8");
    expect(read(b, "files/edit.conf")).toBe("v2\n");
    expect(read(b, "new.txt")).toBe("n\n");
    expect(read(b, "files/keep.conf")).toBe("same\n");
    expect(() => statSync(path.join(b, "old.txt"))).toThrow();
    expect(readlinkSync(path.join(b, "link"))).toBe("files/keep.conf");
    // Unchanged files are the same inode as in the previous checkout; changed ones are new.
    expect(statSync(path.join(b, "fleet.yaml")).ino).toBe(statSync(path.join(a, "fleet.yaml")).ino);
    expect(statSync(path.join(b, "files/keep.conf")).ino).toBe(statSync(path.join(a, "files/keep.conf")).ino);
    expect(statSync(path.join(b, "files/edit.conf")).ino).not.toBe(statSync(path.join(a, "files/edit.conf")).ino);
    // The previous checkout is untouched.
    expect(read(a, "files/edit.conf")).toBe("v1\n");
    expect(read(a, "old.txt")).toBe("x\n");
    expect(await cache.isDescendant(second, first)).toBe(true);
    expect(await cache.isDescendant(first, second)).toBe(false);
  });
});

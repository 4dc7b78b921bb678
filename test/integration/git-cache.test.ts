import { readFileSync, readlinkSync, statSync, symlinkSync } from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { HostFs } from "../../agent/src/host/fs.js";
import { gitHttp } from "../../agent/src/host/http.js";
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
    const cache = new GitCache({ fs, gitFs: HostFs.nodeFs(), http: gitHttp }, state);
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

describe("the rollback check after the cache is cloned again", () => {
  it("fetches older history until the current commit is found, and refuses a commit that does not descend", async () => {
    const server = await startGitServer();
    const repo = await createRepo(server, "history");
    const remote = { url: server.url("history"), ref: "main" };
    const commits: string[] = [];
    for (let i = 0; i < 40; i++) {
      await repo.writeFiles({ "fleet.yaml": `n: ${i}\n` });
      commits.push(await repo.commit(`c${i}`));
    }
    await repo.push();
    const fs = new HostFs("/");
    const ports = {
      fs,
      gitFs: HostFs.nodeFs(),
      http: gitHttp,
    };
    // A fresh (shallow) clone of the tip: the host's current commit, 35 commits back, is not in it.
    const cache = new GitCache(ports, tempDir());
    const tip = await cache.fetch(remote);
    const current = commits[4] as string;
    expect(await cache.isDescendant(tip, current)).toBe(false);
    expect(await cache.deepenUntil(remote, current)).toBe(true);
    expect(await cache.isDescendant(tip, current)).toBe(true);

    // A branch rewritten to an unrelated history: the current commit is never found.
    await repo.git(["checkout", "-q", "--orphan", "other"]);
    await repo.writeFiles({ "fleet.yaml": "rewritten\n" });
    await repo.commit("unrelated");
    await repo.push("main", { force: true });
    const fresh = new GitCache(ports, tempDir());
    const rewritten = await fresh.fetch(remote);
    expect(await fresh.deepenUntil(remote, current)).toBe(false);
    expect(await fresh.isDescendant(rewritten, current)).toBe(false);
  });
});

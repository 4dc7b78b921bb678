import { describe, expect, it } from "vitest";
import { orderResources, transitiveDependents } from "../../agent/src/engine/graph.js";
import { DriftlessError } from "../../agent/src/errors.js";
import { file, pkg, svc } from "../support/desired.js";

const ids = (list: { id: string }[]) => list.map((r) => r.id);

describe("orderResources", () => {
  it("orders packages, then files, then services, each in declaration order", () => {
    const { order } = orderResources([svc("a"), file("/b"), pkg("c"), file("/a"), pkg("d")]);
    expect(ids(order)).toEqual(["package:c", "package:d", "file:/b", "file:/a", "service:a"]);
  });

  it("lets an after: edge put a file before a package", () => {
    const { order } = orderResources([
      pkg("nginx", { after: ["file:/etc/apt/sources.list.d/x.list"] }),
      pkg("curl"),
      file("/etc/apt/sources.list.d/x.list"),
    ]);
    expect(ids(order)).toEqual(["package:curl", "file:/etc/apt/sources.list.d/x.list", "package:nginx"]);
  });

  it("puts a file after the directory the profile manages around it", () => {
    const { order, dependents } = orderResources([file("/srv/app/conf"), file("/srv/app", { state: "directory" })]);
    expect(ids(order)).toEqual(["file:/srv/app", "file:/srv/app/conf"]);
    expect(dependents.get("file:/srv/app")).toEqual(["file:/srv/app/conf"]);
  });

  it("puts a file after the nearest managed directory above it, however deep", () => {
    const { order, dependents } = orderResources([
      file("/srv/app/a/b/conf"),
      file("/srv", { state: "directory" }),
      file("/srv/app/a", { state: "directory" }),
      file("/srv/app/a/other"),
    ]);
    expect(ids(order)).toEqual(["file:/srv", "file:/srv/app/a", "file:/srv/app/a/b/conf", "file:/srv/app/a/other"]);
    expect(dependents.get("file:/srv/app/a")).toEqual(["file:/srv/app/a/b/conf", "file:/srv/app/a/other"]);
    expect(dependents.get("file:/srv")).toEqual(["file:/srv/app/a"]);
  });

  it("keeps phase and declaration order when every edge already points forward", () => {
    const { order, dependents } = orderResources([
      svc("nginx"),
      file("/etc/nginx", { state: "directory" }),
      file("/etc/nginx/nginx.conf", { notify: ["service:nginx"] }),
      pkg("nginx"),
      file("/etc/motd", { after: ["package:nginx"] }),
    ]);
    expect(ids(order)).toEqual([
      "package:nginx",
      "file:/etc/nginx",
      "file:/etc/nginx/nginx.conf",
      "file:/etc/motd",
      "service:nginx",
    ]);
    expect(dependents.get("file:/etc/nginx/nginx.conf")).toEqual(["service:nginx"]);
    expect(dependents.get("package:nginx")).toEqual(["file:/etc/motd"]);
  });

  it("reports a resource after itself as a cycle", () => {
    expect(() => orderResources([file("/a", { after: ["file:/a"] })])).toThrow(
      /dependency cycle: file:\/a -> file:\/a/,
    );
  });

  it("reports a cycle with its path", () => {
    const resources = [
      file("/a", { after: ["file:/b"] }),
      file("/b", { after: ["file:/c"] }),
      file("/c", { after: ["file:/a"] }),
    ];
    expect(() => orderResources(resources)).toThrow(DriftlessError);
    expect(() => orderResources(resources)).toThrow(
      /dependency cycle: file:\/\w -> file:\/\w -> file:\/\w -> file:\/\w/,
    );
  });

  it("makes notified services depend on their files, transitively", () => {
    const { dependents } = orderResources([
      pkg("nginx"),
      file("/etc/nginx.conf", { after: ["package:nginx"], notify: ["service:nginx"] }),
      svc("nginx"),
    ]);
    expect([...transitiveDependents("package:nginx", dependents)].sort()).toEqual([
      "file:/etc/nginx.conf",
      "service:nginx",
    ]);
  });
});

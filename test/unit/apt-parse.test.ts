/**
 * Parsing of dpkg-query, apt-cache and apt-get output. The fixtures were captured on a Debian 12
 * test host (systemd-nspawn, dpkg 1.21.23, apt 2.6) with packages from a local repository.
 */
import { describe, expect, it } from "vitest";
import {
  aptArgs,
  candidateFor,
  failureReason,
  isInstalled,
  isSatisfied,
  packagesFromDpkg,
  parseAptErrors,
  parseAptPolicy,
  parseDpkgQuery,
} from "../../agent/src/resources/package/apt.js";

// dpkg-query -W -f='${Package}\t${Architecture}\t${Status}\t${Version}\n' -- \
//   dl-conf dl-two dl-broken nosuch dpkg libc6:amd64        (exit 1)
// dl-broken's postinst fails; dl-conf was removed (its conffile stays); dl-two is on hold.
const DPKG_QUERY = `dl-broken\tall\tinstall ok half-configured\t1.0
dl-conf\tall\tdeinstall ok config-files\t1.0
dl-two\tall\thold ok installed\t1:2.0-1
dpkg\tamd64\tinstall ok installed\t1.21.23
libc6\tamd64\tinstall ok installed\t2.36-9+deb12u14
`;

// LC_ALL=C apt-cache policy dl-one dl-two dl-broken nosuch dl-svc libc6:amd64 dl-gone   (exit 0)
const POLICY = `dl-one:
  Installed: (none)
  Candidate: 1.0
  Version table:
     1.0 500
        500 file:/srv/repo ./ Packages
dl-two:
  Installed: 1.0
  Candidate: 2.0
  Version table:
     2.0 500
        500 file:/srv/repo ./ Packages
 *** 1.0 500
        500 file:/srv/repo ./ Packages
        100 /var/lib/dpkg/status
dl-broken:
  Installed: 1.0
  Candidate: 1.0
  Version table:
 *** 1.0 500
        500 file:/srv/repo ./ Packages
        100 /var/lib/dpkg/status
dl-svc:
  Installed: 1.0
  Candidate: 1.0
  Version table:
 *** 1.0 500
        500 file:/srv/repo ./ Packages
        100 /var/lib/dpkg/status
libc6:
  Installed: 2.36-9+deb12u14
  Candidate: 2.36-9+deb12u14
  Version table:
 *** 2.36-9+deb12u14 100
        100 /var/lib/dpkg/status
`;

// A package known only from dpkg's status and nowhere else, and one with no candidate.
const POLICY_NONE = `hello:
  Installed: (none)
  Candidate: (none)
  Version table:
`;

// apt-get install -y -q ... dl-conf nosuch-pkg dl-two=9.9   (exit 100; stdout, then stderr)
const UNRESOLVED = `Reading package lists...
Building dependency tree...
Reading state information...
Package dl-two is not available, but is referred to by another package.
This may mean that the package is missing, has been obsoleted, or
is only available from another source

E: Unable to locate package nosuch-pkg
E: Version '9.9' for 'dl-two' was not found
`;

// apt-get install -y dl-two=2.0 dl-one, while dl-broken's postinst keeps failing (exit 100)
const DPKG_FAILED = `Reading package lists...
Building dependency tree...
Reading state information...
The following NEW packages will be installed:
  dl-one
The following packages will be upgraded:
  dl-two
1 upgraded, 1 newly installed, 0 to remove and 0 not upgraded.
1 not fully installed or removed.
Need to get 0 B/1160 B of archives.
After this operation, 0 B of additional disk space will be used.
Get:1 file:/srv/repo ./ dl-one 1.0 [608 B]
Get:2 file:/srv/repo ./ dl-two 2.0 [552 B]
Selecting previously unselected package dl-one.
Preparing to unpack /srv/repo/./dl-one_1.0_all.deb ...
Unpacking dl-one (1.0) ...
Preparing to unpack /srv/repo/./dl-two_2.0_all.deb ...
Unpacking dl-two (2.0) over (1.0) ...
Setting up dl-one (1.0) ...
Setting up dl-two (2.0) ...
Setting up dl-broken (1.0) ...
dl-broken: configure fails on purpose
dpkg: error processing package dl-broken (--configure):
 installed dl-broken package post-installation script subprocess returned error exit status 1
Errors were encountered while processing:
 dl-broken

debconf: delaying package configuration, since apt-utils is not installed
E: Sub-process /usr/bin/dpkg returned an error code (1)
`;

describe("dpkg-query output", () => {
  const entries = parseDpkgQuery(DPKG_QUERY);

  it("reads every line", () => {
    expect(entries).toHaveLength(5);
    expect(entries[2]).toEqual({
      package: "dl-two",
      architecture: "all",
      want: "hold",
      eflag: "ok",
      status: "installed",
      version: "1:2.0-1",
    });
  });

  it("counts only configured packages as installed", () => {
    expect(entries.map((e) => [e.package, isInstalled(e)])).toEqual([
      ["dl-broken", false], // half-configured
      ["dl-conf", false], // config-files
      ["dl-two", true], // held, but installed
      ["dpkg", true],
      ["libc6", true],
    ]);
    const [halfInstalled] = parseDpkgQuery("dl-x\tall\tinstall reinstreq half-installed\t1.0\n");
    expect(halfInstalled && isInstalled(halfInstalled)).toBe(false);
    const [pending] = parseDpkgQuery("man-db\tamd64\tinstall ok triggers-pending\t2.11.2-2\n");
    expect(pending && isInstalled(pending)).toBe(true);
  });

  it("answers for every name asked, known to dpkg or not", () => {
    const names = ["dl-conf", "dl-two", "dl-broken", "nosuch", "dpkg", "libc6:amd64", "libc6:i386"];
    expect(Object.fromEntries(packagesFromDpkg(names, entries))).toEqual({
      "dl-conf": { installed: false },
      "dl-two": { installed: true, version: "1:2.0-1" },
      "dl-broken": { installed: false },
      nosuch: { installed: false },
      dpkg: { installed: true, version: "1.21.23" },
      "libc6:amd64": { installed: true, version: "2.36-9+deb12u14" },
      "libc6:i386": { installed: false },
    });
  });

  it("reads nothing from empty output", () => {
    expect(parseDpkgQuery("")).toEqual([]);
  });
});

describe("apt-cache policy output", () => {
  const policy = parseAptPolicy(POLICY);

  it("reads installed and candidate versions; unknown names are absent", () => {
    expect(policy.get("dl-one")).toEqual({ candidate: "1.0" });
    expect(policy.get("dl-two")).toEqual({ installed: "1.0", candidate: "2.0" });
    expect(policy.has("nosuch")).toBe(false);
    expect(policy.has("dl-gone")).toBe(false);
  });

  it("finds native-architecture packages asked with :arch", () => {
    expect(candidateFor("libc6:amd64", policy)).toBe("2.36-9+deb12u14");
    expect(candidateFor("dl-two", policy)).toBe("2.0");
    expect(candidateFor("nosuch", policy)).toBeUndefined();
  });

  it("reads (none) as no candidate", () => {
    expect(parseAptPolicy(POLICY_NONE).get("hello")).toEqual({});
  });
});

describe("apt-get errors", () => {
  it("attributes packages apt cannot resolve", () => {
    const errors = parseAptErrors(UNRESOLVED);
    expect(Object.fromEntries(errors.unresolved)).toEqual({
      "nosuch-pkg": "Unable to locate package nosuch-pkg",
      "dl-two": "Version '9.9' for 'dl-two' was not found",
    });
    expect(failureReason("nosuch-pkg", errors, UNRESOLVED)).toBe("Unable to locate package nosuch-pkg");
  });

  it("attributes dpkg's maintainer script failures", () => {
    const errors = parseAptErrors(DPKG_FAILED);
    expect(errors.unresolved.size).toBe(0);
    expect(errors.byPackage.get("dl-broken")).toBe(
      "error processing package dl-broken (--configure): installed dl-broken package post-installation script subprocess returned error exit status 1",
    );
    expect(errors.general).toEqual(["Sub-process /usr/bin/dpkg returned an error code (1)"]);
    expect(failureReason("dl-broken", errors, DPKG_FAILED)).toMatch(/^error processing package dl-broken/);
  });

  it("falls back to apt's general errors, then to the last lines", () => {
    const output = "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 42 (apt-get)\n";
    expect(failureReason("x", parseAptErrors(output), output)).toBe(
      "Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 42 (apt-get)",
    );
    expect(failureReason("x", parseAptErrors("Killed\n"), "Killed\n")).toBe("Killed");
    const long = `E: ${"x".repeat(2000)}\n`;
    expect(failureReason("x", parseAptErrors(long), long).length).toBeLessThanOrEqual(600);
  });

  it("keeps the message of an interrupted dpkg", () => {
    // apt-get install -y -q dl-b, after a dpkg run was cut short (exit 100)
    const output = "E: dpkg was interrupted, you must manually run 'dpkg --configure -a' to correct the problem. \n";
    const errors = parseAptErrors(output);
    expect(errors.unresolved.size).toBe(0);
    expect(failureReason("dl-b", errors, output)).toBe(
      "dpkg was interrupted, you must manually run 'dpkg --configure -a' to correct the problem.",
    );
  });

  it("reads an archive that fails to unpack as its package", () => {
    const output =
      "dpkg: error processing archive /srv/repo/./dl-clash_1.0_all.deb (--unpack):\n trying to overwrite '/usr/bin/x', which is also in package dl-other 1.0\n";
    expect(parseAptErrors(output).byPackage.get("dl-clash")).toMatch(/trying to overwrite/);
  });
});

describe("apt-get arguments", () => {
  it("installs with --no-remove and removes in a call of its own", () => {
    const install = aptArgs({ install: [{ name: "curl" }, { name: "dl-two", version: "1:2.0-1" }], remove: [] });
    expect(install.slice(0, 1)).toEqual(["install"]);
    expect(install).toContain("--no-remove");
    expect(install.slice(-2)).toEqual(["curl", "dl-two=1:2.0-1"]);
    const remove = aptArgs({ install: [], remove: ["telnet", "g++"] });
    expect(remove[0]).toBe("remove");
    expect(remove).not.toContain("--no-remove");
    expect(remove.slice(-2)).toEqual(["telnet-", "g++-"]);
    expect(() => aptArgs({ install: [{ name: "curl" }], remove: ["telnet"] })).toThrow(/separate calls/);
  });

  it("keeps a trailing + or - from being read as apt's install/remove marker", () => {
    expect(aptArgs({ install: [{ name: "libstdc++" }, { name: "x", version: "1.0+" }], remove: [] }).slice(-2)).toEqual(
      ["libstdc+++", "x=1.0++"],
    );
  });
});

describe("whether dpkg shows an operation done", () => {
  it("checks removals, pinned versions and upgrades", () => {
    expect(isSatisfied({ remove: "a" }, { installed: false }, undefined)).toBe(true);
    expect(isSatisfied({ remove: "a" }, { installed: true, version: "1" }, undefined)).toBe(false);
    expect(isSatisfied({ install: { name: "a", version: "2" } }, { installed: true, version: "2" }, undefined)).toBe(
      true,
    );
    expect(isSatisfied({ install: { name: "a", version: "2" } }, { installed: true, version: "1" }, undefined)).toBe(
      false,
    );
    // Unversioned: new, or another version than before (an upgrade to the candidate).
    expect(isSatisfied({ install: { name: "a" } }, { installed: true, version: "1" }, { installed: false })).toBe(true);
    expect(
      isSatisfied({ install: { name: "a" } }, { installed: true, version: "2" }, { installed: true, version: "1" }),
    ).toBe(true);
    expect(
      isSatisfied({ install: { name: "a" } }, { installed: true, version: "1" }, { installed: true, version: "1" }),
    ).toBe(false);
    expect(isSatisfied({ install: { name: "a" } }, { installed: false }, { installed: false })).toBe(false);
  });
});

import { describe, expect, it } from "vitest";
import { redact, redactUrl } from "../../agent/src/log.js";
import { splitCredentials } from "../../agent/src/source/git.js";

describe("credentials in URLs", () => {
  it("redacts the whole user information, @ in the password included", () => {
    expect(redactUrl("cannot fetch main from http://user:p@ss@word@git.example:8080/fleet.git: 401")).toBe(
      "cannot fetch main from http://***@git.example:8080/fleet.git: 401",
    );
    expect(redactUrl("https://tok@host/a https://host/b?x=a@b")).toBe("https://***@host/a https://host/b?x=a@b");
    expect(redact({ url: "https://u:p@h/x", n: 1 })).toEqual({ url: "https://***@h/x", n: 1 });
  });

  it("takes the credentials out of a URL, decoded, and leaves a URL without them", () => {
    expect(splitCredentials("http://user:p@ss@word@127.0.0.1:9/fleet.git")).toEqual({
      url: "http://127.0.0.1:9/fleet.git",
      auth: { username: "user", password: "p@ss@word" },
    });
    expect(splitCredentials("https://a%40b:c%3Ad@host/x.git")).toEqual({
      url: "https://host/x.git",
      auth: { username: "a@b", password: "c:d" },
    });
    expect(splitCredentials("https://host/x.git")).toEqual({ url: "https://host/x.git" });
  });
});

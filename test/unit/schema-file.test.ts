import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { agentConfigJsonSchema } from "../../agent/src/config/schema.js";
import { documentJsonSchema } from "../../agent/src/profile/schema.js";

describe("profiles/schema.json", () => {
  it("is generated from the schema in code (run `npm run schema` after changing a schema)", () => {
    const onDisk = JSON.parse(readFileSync("profiles/schema.json", "utf8"));
    expect(onDisk).toEqual(documentJsonSchema());
  });

  it("docs/agent.schema.json is generated from the agent configuration's schema", () => {
    const onDisk = JSON.parse(readFileSync("docs/agent.schema.json", "utf8"));
    expect(onDisk).toEqual(agentConfigJsonSchema());
    expect(onDisk.additionalProperties).toBe(false);
    expect(onDisk.required).toEqual(expect.arrayContaining(["apiVersion", "kind", "source"]));
  });

  it("describes both document kinds and refuses unknown keys", () => {
    const schema = documentJsonSchema() as {
      oneOf: Array<{ properties: { kind: { const: string } }; additionalProperties: boolean }>;
    };
    expect(schema.oneOf.map((s) => s.properties.kind.const).sort()).toEqual(["Fleet", "Profile"]);
    expect(schema.oneOf.every((s) => s.additionalProperties === false)).toBe(true);
  });
});

describe("docs/protocol.schema.json", () => {
  it("is generated from the protocol's schemas (`driftlessctl schema`, part of `npm run schema`)", async () => {
    const { protocolJsonSchema } = await import("../../protocol/schema.js");
    const onDisk = JSON.parse(readFileSync("docs/protocol.schema.json", "utf8"));
    expect(onDisk).toEqual(protocolJsonSchema());
    expect(Object.keys(onDisk.$defs).sort()).toEqual([
      "ack",
      "cmd",
      "facts",
      "fleet/cmd",
      "heartbeat",
      "report",
      "status",
    ]);
  });
});

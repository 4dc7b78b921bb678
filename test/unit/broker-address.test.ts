import { describe, expect, it } from "vitest";
import { brokerAddress } from "../../agent/src/daemon/reporter.js";
import { externalBrokerAddress } from "../../controlplane/src/broker/external.js";

describe("brokerAddress", () => {
  it("turns the broker URL into MQTT.js options, as MQTT.js's own parsing did", () => {
    expect(brokerAddress("mqtt://127.0.0.1:1883")).toEqual({
      protocol: "mqtt",
      host: "127.0.0.1",
      hostname: "127.0.0.1",
      port: 1883,
    });
    expect(brokerAddress("mqtts://broker.example.net")).toEqual({
      protocol: "mqtts",
      host: "broker.example.net",
      hostname: "broker.example.net",
    });
    expect(brokerAddress("mqtt://[::1]:1884")).toMatchObject({ host: "::1", hostname: "::1", port: 1884 });
    expect(brokerAddress("mqtt://agent%40x:p%3Aw@host")).toMatchObject({ username: "agent@x", password: "p:w" });
  });
});

describe("externalBrokerAddress", () => {
  it("turns serve's --broker URL into MQTT.js options, the path only for WebSocket", () => {
    expect(externalBrokerAddress("mqtt://127.0.0.1:1883")).toEqual({
      protocol: "mqtt",
      host: "127.0.0.1",
      hostname: "127.0.0.1",
      port: 1883,
    });
    expect(externalBrokerAddress("mqtts://user:pw@broker.example.net")).toEqual({
      protocol: "mqtts",
      host: "broker.example.net",
      hostname: "broker.example.net",
    });
    expect(externalBrokerAddress("wss://broker.example.net:8884/mqtt?x=1")).toEqual({
      protocol: "wss",
      host: "broker.example.net",
      hostname: "broker.example.net",
      port: 8884,
      path: "/mqtt?x=1",
    });
    expect(externalBrokerAddress("ws://[::1]:9001")).toEqual({
      protocol: "ws",
      host: "::1",
      hostname: "::1",
      port: 9001,
      path: "/",
    });
  });
});

// Stands in for the `ws` package in the single binary: MQTT.js loads `ws` (and with it Node's
// http, https and zlib) on its first connection, whatever the protocol, but the agent's broker is
// mqtt:// or mqtts:// only (its configuration's schema), so the daemon never needs it.
"use strict";
class WebSocket {
  constructor() {
    throw new Error("MQTT over WebSocket is not supported by the agent: use mqtt:// or mqtts://");
  }
  static createWebSocketStream() {
    throw new Error("MQTT over WebSocket is not supported by the agent: use mqtt:// or mqtts://");
  }
}
module.exports = WebSocket;
module.exports.WebSocket = WebSocket;

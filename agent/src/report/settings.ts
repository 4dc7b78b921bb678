/**
 * What the supervisor needs to report: the run has parsed the configuration (the supervisor
 * loads no YAML), so each run hands these over in its fd-3 report, and the supervisor connects,
 * reconnects or disconnects when they change.
 */
import { HOST_ID_PATTERN } from "../../../protocol/topics.js";
import type { AgentConfig } from "../config/schema.js";

export interface BrokerSettings {
  url: string;
  /** The host id: MQTT client id, default user name, topic level. */
  host: string;
  username: string;
  passwordFile?: string;
  ca?: string;
  stateDir: string;
  /** `source.splay` in ms: a `refresh` command waits a random part of it. */
  splayMs: number;
}

/** The broker settings of a configuration; null without `broker:` (or with a host id MQTT cannot carry). */
export function brokerSettings(config: AgentConfig, hostname: string): BrokerSettings | null {
  const broker = config.broker;
  if (!broker) return null;
  const host = config.host ?? hostname;
  if (!HOST_ID_PATTERN.test(host)) return null;
  return {
    url: broker.url,
    host,
    username: broker.username ?? host,
    ...(broker.passwordFile ? { passwordFile: broker.passwordFile } : {}),
    ...(broker.ca ? { ca: broker.ca } : {}),
    stateDir: config.stateDir,
    splayMs: config.source.splay,
  };
}

/** Same settings: no reconnect needed. */
export function sameSettings(a: BrokerSettings | null, b: BrokerSettings | null): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

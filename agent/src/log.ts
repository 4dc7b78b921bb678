/**
 * Structured logs: one JSON object per line when not on a terminal (journald, files), a readable
 * line on a terminal. Levels debug < info < warn < error. Callers pass facts, never secrets;
 * URLs are logged without their credentials.
 */
export type Level = "debug" | "info" | "warn" | "error";

const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export interface LoggerOptions {
  write: (line: string) => void;
  json: boolean;
  level?: Level;
  now: () => Date;
}

export function createLogger(options: LoggerOptions): Logger {
  const min = ORDER[options.level ?? "info"];
  const log = (level: Level, msg: string, fields: Record<string, unknown> = {}) => {
    if (ORDER[level] < min) return;
    const time = options.now().toISOString();
    if (options.json) {
      options.write(JSON.stringify({ time, level, msg, ...redact(fields) }));
    } else {
      const extra = Object.entries(redact(fields))
        .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
        .join(" ");
      options.write(`${time.slice(11, 19)} ${level.toUpperCase().padEnd(5)} ${msg}${extra ? `  ${extra}` : ""}`);
    }
  };
  return {
    debug: (m, f) => log("debug", m, f),
    info: (m, f) => log("info", m, f),
    warn: (m, f) => log("warn", m, f),
    error: (m, f) => log("error", m, f),
  };
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/** Drops user:password from URLs anywhere in the fields. */
export function redact(fields: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(fields)) {
    out[key] = typeof value === "string" ? redactUrl(value) : value;
  }
  return out;
}

/** Drops the user information of every URL in `text`, up to the authority's last `@` (a password may hold `@`). */
export function redactUrl(text: string): string {
  return text.replace(/(\b[a-z][a-z0-9+.-]*:\/\/)[^/?#\s]*@/gi, "$1***@");
}

export function isLevel(value: string | undefined): value is Level {
  return value !== undefined && value in ORDER;
}

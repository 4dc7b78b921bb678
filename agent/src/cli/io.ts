/** What a command talks to: its output streams, the ports it runs with, and progress display. */
import type { Clock } from "../host/clock.js";
import type { Runner } from "../host/runner.js";
import type { Style } from "./style.js";

export interface Progress {
  /** A long step begins (shown with elapsed time on a terminal). */
  start(label: string): void;
  /** A line of a command's output (the last one is shown on a terminal). */
  line(text: string): void;
  stop(): void;
}

export interface Io {
  out(line: string): void;
  /**
   * Lines written as `out` writes them, for a long output made piece by piece: waits while the
   * output is not taken (a pipe whose reader is behind). Without it, `out` is called for each.
   */
  outPieces?(pieces: Iterable<string>): Promise<void>;
  err(line: string): void;
  style: Style;
  runner: Runner;
  clock: Clock;
  progress(): Progress;
}

const silent: Progress = { start() {}, line() {}, stop() {} };

/** A one-line progress display on a terminal's stderr; silent elsewhere. */
export function terminalProgress(stream: NodeJS.WriteStream, clock: Clock): Progress {
  if (!stream.isTTY) return silent;
  let label = "";
  let last = "";
  let since = 0;
  let timer: NodeJS.Timeout | undefined;
  const frames = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏";
  let frame = 0;
  const draw = () => {
    const seconds = Math.round((clock.monotonic() - since) / 1000);
    const width = (stream.columns ?? 80) - 1;
    const text = `${frames[frame++ % frames.length]} ${label} ${seconds}s ${last}`.slice(0, width);
    stream.write(`\r\x1b[2K${text}`);
  };
  return {
    start(next) {
      label = next;
      last = "";
      since = clock.monotonic();
      // Only steps that last show anything: quick ones would only flicker.
      timer ??= setInterval(draw, 250);
    },
    line(text) {
      last = text.trim();
    },
    stop() {
      if (timer) {
        clearInterval(timer);
        timer = undefined;
        stream.write("\r\x1b[2K");
      }
    },
  };
}

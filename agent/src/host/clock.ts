/** The clock port: wall time, a monotonic timer and a cancellable sleep. */
export interface Clock {
  now(): Date;
  /** Milliseconds from an arbitrary origin; only differences mean anything. */
  monotonic(): number;
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const systemClock: Clock = {
  now: () => new Date(),
  // Not performance.now(): the global `performance` loads Node's perf_hooks, about 1.5 MB of a
  // Node 24 process that only needs a difference of two times.
  monotonic: () => Number(process.hrtime.bigint()) / 1e6,
  sleep: (ms, signal) =>
    new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const timer = setTimeout(() => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      }, ms);
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal?.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
    }),
};

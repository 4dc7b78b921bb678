/** A server-sent event stream read with fetch: its messages, awaited one by one. */
export interface SseMessage {
  event: string;
  data: string;
}

export interface SseStream {
  status: number;
  headers: Headers;
  /** The next message (comments skipped). */
  next(): Promise<SseMessage>;
  close(): void;
}

export async function openSse(url: string, headers: Record<string, string>): Promise<SseStream> {
  const abort = new AbortController();
  const response = await fetch(url, { headers, signal: abort.signal });
  const reader = response.body?.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const queue: SseMessage[] = [];
  const readMore = async () => {
    if (!reader) throw new Error(`no body (HTTP ${response.status})`);
    const { value, done } = await reader.read();
    if (done) throw new Error("the stream ended");
    buffer += decoder.decode(value, { stream: true });
    let end = buffer.indexOf("\n\n");
    while (end >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      end = buffer.indexOf("\n\n");
      let event = "message";
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      if (data.length > 0) queue.push({ event, data: data.join("\n") });
    }
  };
  return {
    status: response.status,
    headers: response.headers,
    async next() {
      while (queue.length === 0) await readMore();
      return queue.shift() as SseMessage;
    },
    close: () => abort.abort(),
  };
}

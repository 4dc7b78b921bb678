/**
 * The fleet CLI's HTTP client: the control plane's URL and API token, and errors that name the
 * URL (never the token) with the exit code they map to.
 */

/** 1: usage, unreachable, refused token, server error; 3: the host (or path) does not exist. */
export class CliError extends Error {
  readonly exitCode: 1 | 3;

  constructor(message: string, exitCode: 1 | 3 = 1) {
    super(message);
    this.name = "CliError";
    this.exitCode = exitCode;
  }
}

export type FetchFn = (url: string, init: RequestInit) => Promise<Response>;

export interface ApiClientOptions {
  url: string;
  token: string;
  /** Where the token came from, for messages. */
  tokenSource: string;
  fetch: FetchFn;
}

/** `http(s)://host:port[/prefix]` without a trailing slash; a CliError otherwise. */
export function normaliseUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new CliError(`--url ${value}: not a URL (expected http://HOST:PORT)`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new CliError(`--url ${value}: expected an http:// or https:// URL`);
  }
  if (url.username || url.password) throw new CliError("--url: put the token in --token-file, not in the URL");
  return `${url.origin}${url.pathname.replace(/\/+$/, "")}`;
}

export class ApiClient {
  constructor(private readonly options: ApiClientOptions) {}

  get url(): string {
    return this.options.url;
  }

  async get<T>(path: string): Promise<T> {
    return this.#request<T>("GET", path);
  }

  async post<T>(path: string, body: unknown = {}): Promise<T> {
    return this.#request<T>("POST", path, body);
  }

  async #request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const target = `${this.options.url}/api/v1/${path}`;
    let response: Response;
    try {
      response = await this.options.fetch(target, {
        method,
        headers: {
          authorization: `Bearer ${this.options.token}`,
          accept: "application/json",
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        redirect: "error",
      });
    } catch (error) {
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      const why = cause?.code ?? cause?.message ?? (error as Error).message;
      throw new CliError(`cannot reach the control plane at ${this.options.url}: ${why}`);
    }
    const text = await response.text();
    let parsed: unknown = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      // Not JSON: not our control plane, or a proxy's error page.
    }
    if (response.ok) {
      if (parsed === null) throw new CliError(`${this.options.url} answered ${method} ${path} without JSON`);
      return parsed as T;
    }
    const message =
      parsed && typeof parsed === "object" && typeof (parsed as { error?: unknown }).error === "string"
        ? (parsed as { error: string }).error
        : `HTTP ${response.status}`;
    if (response.status === 401) {
      throw new CliError(
        `the control plane at ${this.options.url} refused the API token from ${this.options.tokenSource} (${message})`,
      );
    }
    if (response.status === 404) throw new CliError(message, 3);
    throw new CliError(`${this.options.url}: ${method} ${path}: ${message} (HTTP ${response.status})`);
  }
}

/**
 * Typed errors: every error Driftless reports says what went wrong, where (file, line, column,
 * field or resource), in which phase, and whether trying again may help.
 */
export type Phase = "args" | "load" | "validate" | "select" | "render" | "read" | "plan" | "apply" | "state";

export interface Location {
  file: string;
  line?: number;
  column?: number;
  field?: string;
}

export interface DriftlessErrorOptions {
  code: string;
  phase: Phase;
  location?: Location | undefined;
  resource?: string | undefined;
  retryable?: boolean;
  cause?: unknown;
}

export class DriftlessError extends Error {
  readonly code: string;
  readonly phase: Phase;
  readonly location: Location | undefined;
  readonly resource: string | undefined;
  readonly retryable: boolean;

  constructor(message: string, options: DriftlessErrorOptions) {
    super(message, { cause: options.cause });
    this.name = "DriftlessError";
    this.code = options.code;
    this.phase = options.phase;
    this.location = options.location;
    this.resource = options.resource;
    this.retryable = options.retryable ?? false;
  }

  /** `file:line:column: field: message`, the form editors and terminals link to. */
  override toString(): string {
    return formatLocated(this.message, this.location);
  }

  toJSON(): Record<string, unknown> {
    return {
      code: this.code,
      phase: this.phase,
      message: this.message,
      ...(this.location ? { location: this.location } : {}),
      ...(this.resource ? { resource: this.resource } : {}),
      retryable: this.retryable,
    };
  }
}

/** Several errors found at once (validation reports all of them, not the first). */
export class ErrorList extends Error {
  readonly errors: DriftlessError[];

  constructor(errors: DriftlessError[]) {
    super(errors.map((e) => e.toString()).join("\n"));
    this.name = "ErrorList";
    this.errors = errors;
  }
}

export function formatLocated(message: string, location: Location | undefined): string {
  if (!location) return message;
  let where = location.file;
  if (location.line !== undefined) where += `:${location.line}`;
  if (location.column !== undefined) where += `:${location.column}`;
  const field = location.field ? `${location.field}: ` : "";
  return `${where}: ${field}${message}`;
}

export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}

/** Errors in reading order: by file, line, column. */
export function sortByLocation(errors: DriftlessError[]): DriftlessError[] {
  const key = (e: DriftlessError) => [e.location?.file ?? "", e.location?.line ?? 0, e.location?.column ?? 0] as const;
  return [...errors].sort((a, b) => {
    const [fa, la, ca] = key(a);
    const [fb, lb, cb] = key(b);
    return fa.localeCompare(fb) || la - lb || ca - cb;
  });
}

/** Control plane errors: a code the caller can branch on, and whether trying again may help. */
export type FleetErrorCode = "EEXISTS" | "ENOTFOUND" | "EUSAGE" | "ESTORE" | "EBROKER" | "ECONFIG" | "EHOSTID";

export class FleetError extends Error {
  readonly code: FleetErrorCode;
  readonly retryable: boolean;

  constructor(message: string, options: { code: FleetErrorCode; retryable?: boolean; cause?: unknown }) {
    super(message, { cause: options.cause });
    this.name = "FleetError";
    this.code = options.code;
    this.retryable = options.retryable ?? false;
  }
}

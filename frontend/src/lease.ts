// The lease clock: what the countdown shows and when to renew. Pure (time is passed in), so it is unit-tested.

export interface LeasePolicy {
  /** Renew when less than this fraction of the lease is left... */
  renewFraction: number;
  /** ...and the user did something within this many ms (an idle tab lets its lease run out). */
  activeWithinMs: number;
}

export const DEFAULT_POLICY: LeasePolicy = { renewFraction: 0.5, activeWithinMs: 10 * 60 * 1000 };

export class LeaseClock {
  readonly token: string;
  private expiresAt: number;
  private durationMs: number;
  private lastActivity: number;

  constructor(token: string, expiresAt: string | Date, now: number, private readonly policy: LeasePolicy = DEFAULT_POLICY) {
    this.token = token;
    this.expiresAt = new Date(expiresAt).getTime();
    this.durationMs = Math.max(this.expiresAt - now, 1);
    this.lastActivity = now;
  }

  /** A renewal's new expiry; the lease length is learnt from it. */
  renewed(expiresAt: string | Date, now: number): void {
    this.expiresAt = new Date(expiresAt).getTime();
    this.durationMs = Math.max(this.expiresAt - now, 1);
  }

  touch(now: number): void {
    this.lastActivity = now;
  }

  remainingMs(now: number): number {
    return Math.max(0, this.expiresAt - now);
  }

  expired(now: number): boolean {
    return now >= this.expiresAt;
  }

  shouldRenew(now: number): boolean {
    if (this.expired(now)) return false;
    const active = now - this.lastActivity <= this.policy.activeWithinMs;
    return active && this.remainingMs(now) < this.durationMs * this.policy.renewFraction;
  }

  expiresAtDate(): Date {
    return new Date(this.expiresAt);
  }
}

/** "59:58", or "1:02:03" past an hour. */
export function formatCountdown(ms: number): string {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = total % 60;
  const mm = hours > 0 ? String(minutes).padStart(2, "0") : String(minutes);
  return `${hours > 0 ? `${hours}:` : ""}${mm}:${String(seconds).padStart(2, "0")}`;
}

/**
 * What losing the lease means, in words, for the status codes the lease endpoints answer; `problem` is the
 * server's own "title: detail" (null when the countdown ran out in the page).
 */
export function leaseLostMessage(status: number, problem: string | null): string {
  const why = status === 410 ? "Your lease on this case expired"
    : status === 409 ? "This case is no longer leased to you"
      : status === 404 ? "This lease no longer exists"
        : "Your lease could not be renewed";
  return `${why}${problem ? ` (${problem})` : ""}. Your edits are still here: download them as NIfTI, or submit — ` +
    "the server accepts it unless another annotator has claimed the case since.";
}

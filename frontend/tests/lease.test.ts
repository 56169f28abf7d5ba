import { describe, expect, it } from "vitest";
import { formatCountdown, LeaseClock, leaseLostMessage } from "../src/lease";

const MIN = 60_000;

describe("lease clock", () => {
  it("counts down and expires", () => {
    const clock = new LeaseClock("t", new Date(60 * MIN), 0);
    expect(clock.remainingMs(10 * MIN)).toBe(50 * MIN);
    expect(clock.expired(60 * MIN - 1)).toBe(false);
    expect(clock.expired(60 * MIN)).toBe(true);
    expect(clock.remainingMs(70 * MIN)).toBe(0);
  });

  it("renews past half the lease while the user is active, never when idle or expired", () => {
    const clock = new LeaseClock("t", new Date(60 * MIN), 0);
    expect(clock.shouldRenew(20 * MIN)).toBe(false); // most of the lease left
    clock.touch(29 * MIN);
    expect(clock.shouldRenew(31 * MIN)).toBe(true);
    expect(clock.shouldRenew(45 * MIN)).toBe(false); // idle for 16 minutes: let it run out
    clock.touch(59 * MIN);
    expect(clock.shouldRenew(60 * MIN)).toBe(false); // already expired
  });

  it("learns the lease length from a renewal", () => {
    const clock = new LeaseClock("t", new Date(10 * MIN), 0);
    clock.touch(6 * MIN);
    clock.renewed(new Date(36 * MIN), 6 * MIN); // 30-minute leases
    expect(clock.shouldRenew(10 * MIN)).toBe(false);
    clock.touch(22 * MIN);
    expect(clock.shouldRenew(22 * MIN)).toBe(true);
  });

  it("formats the countdown", () => {
    expect(formatCountdown(59_001)).toBe("1:00");
    expect(formatCountdown(61_000)).toBe("1:01");
    expect(formatCountdown(3_723_000)).toBe("1:02:03");
    expect(formatCountdown(-5)).toBe("0:00");
  });

  it("explains a lost lease with the server's words and keeps the edits in view", () => {
    const text = leaseLostMessage(410, "Lease expired or ended: lease expired at 10:00");
    expect(text).toContain("expired");
    expect(text).toContain("lease expired at 10:00");
    expect(text).toContain("download them as NIfTI");
    expect(leaseLostMessage(409, null)).toContain("no longer leased to you");
  });
});

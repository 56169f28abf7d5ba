// Words and numbers for the admin tables.
import type { Estimate } from "./types";

/** "0.812 [0.700, 0.920], n = 12"; an interval only with two or more cases. */
export function formatEstimate(estimate: Estimate | null | undefined, digits = 3): string {
  if (!estimate || estimate.mean === null || estimate.n === 0) return `– (n = ${estimate?.n ?? 0})`;
  const ci = estimate.ci_low !== null && estimate.ci_high !== null
    ? ` [${estimate.ci_low.toFixed(digits)}, ${estimate.ci_high.toFixed(digits)}]` : "";
  return `${estimate.mean.toFixed(digits)}${ci}, n = ${estimate.n}`;
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  if (bytes < 1024 * 1024 * 1024) return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  return `${(bytes / 1024 / 1024 / 1024).toFixed(2)} GB`;
}

/** "1.2 MB of 3.4 MB (35 %)"; once every byte is sent the server still decodes and stores the case. */
export function uploadProgressText(loaded: number, total: number | null): string {
  if (total === null || total <= 0) return `${formatBytes(loaded)} sent`;
  if (loaded >= total) return `${formatBytes(total)} sent; the server is reading the image…`;
  return `${formatBytes(loaded)} of ${formatBytes(total)} (${Math.floor((loaded / total) * 100)} %)`;
}

export function formatSeconds(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
}

// The server's public schemas that the admin views read (app/*/schemas.py; see /openapi.json).
import type { Project, User } from "../types";

export interface ProjectSettings extends Project {
  control_seed: number;
}

export interface RankingInfo {
  id: number;
  kind: string;
  strategy: string;
  seed: number | null;
  model_version: number | null;
  created_at: string;
}

export interface QueueStats {
  open: number;
  leased: number;
  in_review: number;
  labelled: number;
  excluded: number;
  pool: number;
  validation: number;
  labelled_fraction: number;
  ranking: RankingInfo | null;
  model_version: number | null;
}

export interface QueueItem {
  case_id: number;
  patient: string;
  rank: number | null;
  score: number | null;
  status: string;
  pinned: boolean;
  leased_by: string | null;
  lease_expires_at: string | null;
}

export interface QueuePage {
  ranking_id: number | null;
  items: QueueItem[];
  limit: number;
  offset: number;
}

export interface Case {
  id: number;
  project_id: number;
  patient: string;
  shape: number[];
  spacing: number[];
  origin: number[];
  direction: number[];
  dtype: string;
  sha256: string;
  source_format: string;
  status: string;
  split: string;
  pinned: boolean;
  excluded: boolean;
  latest_label_version: number | null;
  created_at: string;
}

export interface CasePage {
  items: Case[];
  total: number;
  limit: number;
  offset: number;
}

/** Dice on one split: per_class is keyed by label name, background included. */
export interface SplitMetrics {
  cases?: number;
  per_class?: Record<string, number | null>;
  mean_dice?: number | null;
  note?: string;
}

export interface CycleMetrics extends SplitMetrics {
  validation_cases?: number;
  test?: SplitMetrics;
  train_loss?: number | null;
  train_steps?: number;
  kept_step?: number | null;
  [key: string]: unknown;
}

export interface CycleProgressValues {
  step?: number;
  steps?: number;
  loss?: number | null;
  train_cases?: number;
  scored?: number;
  total?: number;
  [key: string]: unknown;
}

export interface Cycle {
  id: number;
  project_id: number;
  status: "queued" | "running" | "done" | "failed" | "cancelled" | string;
  phase: string | null;
  strategy: string;
  warm_start: boolean;
  params: Record<string, unknown>;
  progress: CycleProgressValues;
  timings: Record<string, number>;
  metrics: CycleMetrics;
  error: string | null;
  cancel_requested: boolean;
  model_version_id: number | null;
  ranking_id: number | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  heartbeat_at: string | null;
}

export interface ModelVersion {
  id: number;
  project_id: number;
  version: number;
  cycle_id: number;
  params: Record<string, unknown>;
  metrics: CycleMetrics;
  trained_case_ids: number[];
  created_at: string;
}

export interface Estimate {
  n: number;
  mean: number | null;
  ci_low: number | null;
  ci_high: number | null;
}

export interface ArmSummary {
  model_version: number | null;
  model_version_id: number | null;
  arm: string;
  labels: number;
  compared: number;
  pending: number;
  mean_foreground_dice: Estimate;
  dice: Record<string, Estimate>;
  median_minutes: number | null;
  median_voxels_changed: number | null;
}

export interface RankedVsControl {
  model_version: number | null;
  model_version_id: number | null;
  ranked_minus_control: Estimate;
}

export interface AnnotatorSummary {
  user: string;
  labels: number;
  active_days: number;
  labels_per_day: number;
  median_minutes: number | null;
}

export interface CampaignReport {
  project_id: number;
  generated_at: string;
  control_fraction: number;
  classes: string[];
  pending: number;
  failed: number;
  arms: ArmSummary[];
  ranked_vs_control: RankedVsControl[];
  annotators: AnnotatorSummary[];
  explanation: string[];
}

export interface TokenInfo {
  id: number;
  user_id: number;
  prefix: string;
  created_at: string;
  revoked_at: string | null;
}

export interface NewToken {
  token: string;
  token_info: TokenInfo;
}

export interface UserWithToken extends NewToken {
  user: User;
}

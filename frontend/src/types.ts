// The server's public schemas that several views read (a subset of /openapi.json).

export interface User {
  id: number;
  name: string;
  role: string;
  created_at: string;
  disabled: boolean;
}

export interface Project {
  id: number;
  name: string;
  modality: "CT" | "MR";
  /** Index = voxel value; index 0 is "background". */
  labels: string[];
  created_at: string;
  current_ranking_id: number | null;
  control_fraction: number;
  annotators_can_upload_cases: boolean;
  train_on: string;
  readers_per_case: number;
  consensus_method: string;
}

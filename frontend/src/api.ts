// The one place that talks HTTP to /api/v1: bearer token, problem bodies turned into ApiError.

export interface Problem {
  type?: string;
  title: string;
  status: number;
  detail?: string;
  field?: string | null;
}

export class ApiError extends Error {
  readonly status: number;
  readonly title: string;
  readonly detail: string;
  readonly field: string | null;
  readonly type: string;

  constructor(problem: Problem) {
    super(problemMessage(problem));
    this.status = problem.status;
    this.title = problem.title;
    this.detail = problem.detail ?? "";
    this.field = problem.field ?? null;
    this.type = problem.type ?? "about:blank";
  }
}

/** "Title: detail (field)" in words; what every error banner shows. */
export function problemMessage(problem: Problem): string {
  const detail = problem.detail ? `: ${problem.detail}` : "";
  const field = problem.field ? ` (field: ${problem.field})` : "";
  return `${problem.title}${detail}${field}`;
}

/** Reads a problem body from any error response; falls back to the status text for non-JSON answers (a proxy's 502). */
export async function toProblem(response: Response): Promise<Problem> {
  const text = await response.text();
  try {
    const body = JSON.parse(text) as Partial<Problem> & { detail?: unknown };
    if (body && typeof body === "object" && typeof body.title === "string") {
      return { ...body, title: body.title, status: response.status, detail: detailText(body.detail) };
    }
    if (body && typeof body === "object" && "detail" in body) {
      return { title: response.statusText || `HTTP ${response.status}`, status: response.status, detail: detailText(body.detail) };
    }
  } catch {
    // not JSON: below
  }
  return { title: response.statusText || `HTTP ${response.status}`, status: response.status, detail: text.slice(0, 200) };
}

function detailText(detail: unknown): string | undefined {
  if (detail === undefined || detail === null) return undefined;
  if (typeof detail === "string") return detail;
  return JSON.stringify(detail);
}

export interface RequestOptions {
  json?: unknown;
  body?: BodyInit;
  headers?: Record<string, string>;
  query?: Record<string, string | number | boolean | undefined | null>;
}

export type UnauthorizedHandler = (error: ApiError) => void;

export class Api {
  private token: string | null;
  private readonly onUnauthorized: UnauthorizedHandler;
  private readonly fetcher: typeof fetch;

  constructor(token: string | null, onUnauthorized: UnauthorizedHandler, fetcher: typeof fetch = fetch.bind(globalThis)) {
    this.token = token;
    this.onUnauthorized = onUnauthorized;
    this.fetcher = fetcher;
  }

  setToken(token: string | null): void {
    this.token = token;
  }

  authHeaders(): Record<string, string> {
    return this.token ? { Authorization: `Bearer ${this.token}` } : {};
  }

  async raw(method: string, path: string, options: RequestOptions = {}): Promise<Response> {
    const headers: Record<string, string> = { ...this.authHeaders(), ...(options.headers ?? {}) };
    let body = options.body;
    if (options.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(options.json);
    }
    const response = await this.fetcher(withQuery(path, options.query), { method, headers, body });
    if (!response.ok) {
      const error = new ApiError(await toProblem(response));
      // 401 means the token is unknown, revoked or the user disabled: back to sign-in. 403 is a role problem, shown in place.
      if (response.status === 401) this.onUnauthorized(error);
      throw error;
    }
    return response;
  }

  async json<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const response = await this.raw(method, path, options);
    if (response.status === 204) return null as T;
    return (await response.json()) as T;
  }

  get<T>(path: string, query?: RequestOptions["query"]): Promise<T> {
    return this.json<T>("GET", path, { query });
  }

  post<T>(path: string, json?: unknown): Promise<T> {
    return this.json<T>("POST", path, json === undefined ? {} : { json });
  }

  patch<T>(path: string, json: unknown): Promise<T> {
    return this.json<T>("PATCH", path, { json });
  }

  delete<T>(path: string): Promise<T> {
    return this.json<T>("DELETE", path);
  }

  async bytes(path: string): Promise<ArrayBuffer> {
    return (await this.raw("GET", path)).arrayBuffer();
  }
}

export function withQuery(path: string, query?: RequestOptions["query"]): string {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `${path}${path.includes("?") ? "&" : "?"}${text}` : path;
}

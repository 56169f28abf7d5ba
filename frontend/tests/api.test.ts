import { describe, expect, it, vi } from "vitest";
import { Api, ApiError, problemMessage, toProblem, withQuery } from "../src/api";

function response(status: number, body: string, statusText = ""): Response {
  return new Response(body, { status, statusText, headers: { "Content-Type": "application/json" } });
}

describe("problem bodies", () => {
  it("reads title, detail and field of an RFC 9457 body", async () => {
    const problem = await toProblem(response(422, JSON.stringify({ title: "Invalid request", status: 422, detail: "mc_passes must be >= 2", field: "mc_passes" })));
    expect(problemMessage(problem)).toBe("Invalid request: mc_passes must be >= 2 (field: mc_passes)");
  });

  it("falls back to the status text for a non-JSON answer (a proxy's error page)", async () => {
    const problem = await toProblem(new Response("<html>bad gateway</html>", { status: 502, statusText: "Bad Gateway" }));
    expect(problem.title).toBe("Bad Gateway");
    expect(problem.status).toBe(502);
  });

  it("keeps a structured detail readable", async () => {
    const problem = await toProblem(response(400, JSON.stringify({ detail: [{ loc: ["body", "x"] }] }), "Bad Request"));
    expect(problem.detail).toContain("body");
  });
});

describe("Api", () => {
  it("sends the bearer token and JSON, and raises ApiError with the problem", async () => {
    const fetcher = vi.fn(async () => response(409, JSON.stringify({ title: "Conflict", status: 409, detail: "case 3 is leased by ann" })));
    const api = new Api("tok", () => undefined, fetcher as unknown as typeof fetch);
    const error = await api.post("/api/v1/x", { a: 1 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect((error as ApiError).status).toBe(409);
    expect((error as ApiError).message).toBe("Conflict: case 3 is leased by ann");
    const [, init] = fetcher.mock.calls[0] as unknown as [string, RequestInit];
    expect((init.headers as Record<string, string>).Authorization).toBe("Bearer tok");
    expect(init.body).toBe('{"a":1}');
  });

  it("calls the unauthorized handler on 401 only", async () => {
    const handler = vi.fn();
    const api401 = new Api("revoked", handler, (async () => response(401, JSON.stringify({ title: "Unauthorized", status: 401 }))) as unknown as typeof fetch);
    await expect(api401.get("/api/v1/users/me")).rejects.toBeInstanceOf(ApiError);
    expect(handler).toHaveBeenCalledTimes(1);
    const api403 = new Api("t", handler, (async () => response(403, JSON.stringify({ title: "Forbidden", status: 403 }))) as unknown as typeof fetch);
    await expect(api403.get("/api/v1/users")).rejects.toBeInstanceOf(ApiError);
    expect(handler).toHaveBeenCalledTimes(1);
  });

  it("builds query strings without empty values", () => {
    expect(withQuery("/a", { limit: 10, status: undefined, q: "" })).toBe("/a?limit=10");
    expect(withQuery("/a?x=1", { y: true })).toBe("/a?x=1&y=true");
  });
});

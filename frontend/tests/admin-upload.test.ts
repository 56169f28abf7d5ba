import { describe, expect, it, vi } from "vitest";
import { Api, ApiError } from "../src/api";
import { uploadForm } from "../src/admin/upload";

/** Just enough of XMLHttpRequest: records headers, then answers with the given status and body. */
class FakeXhr {
  headers: Record<string, string> = {};
  upload: { onprogress: ((event: { loaded: number; total: number; lengthComputable: boolean }) => void) | null } = { onprogress: null };
  onload: (() => void) | null = null;
  onerror: (() => void) | null = null;
  onabort: (() => void) | null = null;
  status = 0;
  statusText = "";
  responseText = "";
  method = "";
  url = "";
  constructor(private readonly answer: { status: number; body: string }) {}
  open(method: string, url: string) { this.method = method; this.url = url; }
  setRequestHeader(name: string, value: string) { this.headers[name] = value; }
  send() {
    this.upload.onprogress?.({ loaded: 5, total: 10, lengthComputable: true });
    this.status = this.answer.status;
    this.responseText = this.answer.body;
    this.onload?.();
  }
}

function api(onUnauthorized = vi.fn(), fetcher = vi.fn(async () => new Response("{}", { status: 401 }))) {
  return new Api("tok", onUnauthorized, fetcher as unknown as typeof fetch);
}

describe("upload with progress", () => {
  it("sends the bearer header, reports progress and returns the created case", async () => {
    let xhr: FakeXhr | null = null;
    const progress = vi.fn();
    const created = await uploadForm<{ id: number }>(api(), "/api/v1/projects/1/cases", new FormData(), progress,
      () => (xhr = new FakeXhr({ status: 201, body: '{"id": 7}' })) as unknown as XMLHttpRequest);
    expect(created).toEqual({ id: 7 });
    expect(xhr!.headers.Authorization).toBe("Bearer tok");
    expect(xhr!.method).toBe("POST");
    expect(progress).toHaveBeenCalledWith({ loaded: 5, total: 10 });
  });

  it("turns a problem answer into an ApiError with its title and detail", async () => {
    const body = JSON.stringify({ title: "Invalid request", status: 422, detail: "patient: String should have at least 1 character", field: "patient" });
    const error = await uploadForm(api(), "/x", new FormData(), () => undefined,
      () => new FakeXhr({ status: 422, body }) as unknown as XMLHttpRequest).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect((error as ApiError).message).toBe("Invalid request: patient: String should have at least 1 character (field: patient)");
  });

  it("on 401 lets the client's sign-out path run", async () => {
    const onUnauthorized = vi.fn();
    const fetcher = vi.fn(async () => new Response(JSON.stringify({ title: "Unauthorized", status: 401 }), { status: 401 }));
    await expect(uploadForm(api(onUnauthorized, fetcher), "/x", new FormData(), () => undefined,
      () => new FakeXhr({ status: 401, body: '{"title": "Unauthorized", "status": 401}' }) as unknown as XMLHttpRequest)).rejects.toBeInstanceOf(ApiError);
    await vi.waitFor(() => expect(onUnauthorized).toHaveBeenCalledTimes(1));
  });
});

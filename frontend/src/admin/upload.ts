// Multipart upload with progress: fetch() cannot report upload progress, XMLHttpRequest can. Same bearer
// header as every other call; an error answer becomes the same ApiError (problem title and detail).
import { ApiError, toProblem, type Api } from "../api";

export interface UploadProgress {
  loaded: number;
  total: number | null;
}

export function uploadForm<T>(api: Api, url: string, form: FormData, onProgress: (progress: UploadProgress) => void,
  xhrFactory: () => XMLHttpRequest = () => new XMLHttpRequest()): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const xhr = xhrFactory();
    xhr.open("POST", url);
    for (const [name, value] of Object.entries(api.authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (event) => onProgress({ loaded: event.loaded, total: event.lengthComputable ? event.total : null });
    xhr.onerror = () => reject(new Error("The upload did not reach the server (network error or connection closed)."));
    xhr.onabort = () => reject(new Error("The upload was cancelled."));
    xhr.onload = async () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve((xhr.responseText ? JSON.parse(xhr.responseText) : null) as T);
        return;
      }
      const response = new Response(xhr.responseText, { status: xhr.status, statusText: xhr.statusText });
      const error = new ApiError(await toProblem(response));
      // A revoked token: one ordinary request through the client takes the user back to sign-in with its message.
      if (xhr.status === 401) api.get("/api/v1/users/me").catch(() => undefined);
      reject(error);
    };
    xhr.send(form);
  });
}

// The signed-in user lives in sessionStorage: it ends with the tab, and is never put in a URL.

export interface SessionUser {
  id: number;
  name: string;
  role: string;
  token: string;
}

const KEY = "nextcase.session";
const NOTICE = "nextcase.notice";

export function loadSession(storage: Storage = sessionStorage): SessionUser | null {
  const text = storage.getItem(KEY);
  if (!text) return null;
  try {
    const value = JSON.parse(text) as SessionUser;
    return typeof value.token === "string" && typeof value.name === "string" ? value : null;
  } catch {
    return null;
  }
}

export function saveSession(user: SessionUser, storage: Storage = sessionStorage): void {
  storage.setItem(KEY, JSON.stringify(user));
}

export function clearSession(storage: Storage = sessionStorage): void {
  storage.removeItem(KEY);
}

/** A message for the sign-in page (why the user was signed out); read once. */
export function setNotice(message: string, storage: Storage = sessionStorage): void {
  storage.setItem(NOTICE, message);
}

export function takeNotice(storage: Storage = sessionStorage): string | null {
  const message = storage.getItem(NOTICE);
  storage.removeItem(NOTICE);
  return message;
}

export function isAdmin(user: SessionUser | null): boolean {
  return user?.role === "admin";
}

// What every view gets: the API client, the signed-in user, navigation and the error banner.
import type { Api } from "./api";
import type { Route } from "./router";
import type { SessionUser } from "./session";

export interface AppContext {
  api: Api;
  user: SessionUser;
  navigate(route: Route): void;
  /** Shows an error (an ApiError's title and detail, or any Error's message) in the banner. */
  showError(error: unknown): void;
  /** Shows a neutral or success message in the banner. */
  showMessage(message: string): void;
  clearBanner(): void;
  /** Called by a view when it is left; views register their timers and listeners here. */
  onLeave(cleanup: () => void): void;
}

/** A view renders into its container; everything it started is stopped through ctx.onLeave. */
export type View = (container: HTMLElement, ctx: AppContext) => void | Promise<void>;

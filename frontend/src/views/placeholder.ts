import { h } from "../dom";

export function renderPlaceholder(container: HTMLElement, title: string): void {
  container.append(h("section", {}, h("h1", {}, title), h("p", {}, "This view is not built yet.")));
}

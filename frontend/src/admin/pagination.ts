// Offset pagination for tables: what the "previous / next" buttons and the "1–50 of 120" text say.

export interface PageInfo {
  from: number;
  to: number;
  /** null when the server does not say (the queue page); then "next" is offered while a page comes back full. */
  total: number | null;
  hasPrev: boolean;
  hasNext: boolean;
  prevOffset: number;
  nextOffset: number;
  text: string;
}

export function pageInfo(offset: number, limit: number, shown: number, total: number | null): PageInfo {
  const from = shown === 0 ? 0 : offset + 1;
  const to = offset + shown;
  const hasNext = total === null ? shown === limit : to < total;
  const of = total === null ? "" : ` of ${total}`;
  const text = shown === 0 ? (offset > 0 ? `nothing after ${offset}${of}` : "none") : `${from}–${to}${of}`;
  return { from, to, total, hasPrev: offset > 0, hasNext, prevOffset: Math.max(0, offset - limit), nextOffset: offset + limit, text };
}

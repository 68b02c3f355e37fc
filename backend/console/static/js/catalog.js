// The API's own list of failure codes (GET /api/v1/error-codes): categories for the filters, and
// each code's description and remedy for error cards. Asked once per page load.
import { get } from "./api.js";

let codes = null;

async function load() {
  if (!codes) {
    codes = get("/api/v1/error-codes").then((list) => new Map(list.map((entry) => [entry.code, entry])));
    codes.catch(() => (codes = null)); // a failed load (say, before signing in) is asked again next time
  }
  return codes;
}

export async function errorCode(code) {
  return (await load()).get(code) || null;
}

export async function categories() {
  const found = new Set();
  for (const entry of (await load()).values()) if (entry.category) found.add(entry.category);
  return [...found].sort();
}

export const STATUSES = ["pending", "running", "retrying", "paused", "awaiting_feedback", "completed", "degraded", "failed", "cancelled"];

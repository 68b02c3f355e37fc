// The console's only way to the data: the documented JSON routes, with the operator's bearer key.

const KEY_STORAGE = "crewrun.apiKey";
// The API root is the console's parent path, so a proxy that serves crewrun under a prefix works.
const ROOT = new URL("../", document.baseURI);

export class ApiError extends Error {
  // A problem+json answer (code, detail, field errors), or a network failure (status 0).
  constructor(status, problem) {
    super(`${problem.code}: ${problem.detail}`);
    this.status = status;
    this.code = problem.code;
    this.detail = problem.detail;
    this.errors = problem.errors || [];
  }
}

// Counts the keys tried in this tab: a 401 to a request sent with an earlier key is old news (the
// requests of one view fail together; the first one asks for a key, the others are dropped).
let generation = 0;

export function storedKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function storeKey(key) {
  sessionStorage.setItem(KEY_STORAGE, key);
  generation += 1;
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_STORAGE);
  generation += 1;
}

function url(path, query) {
  const target = new URL(path.replace(/^\//, ""), ROOT);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") target.searchParams.set(name, value);
  }
  return target;
}

async function problemOf(response) {
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) {
    const body = await response.json();
    if (body && body.code) return body;
  }
  return { code: `HTTP_${response.status}`, detail: response.statusText || "unexpected answer" };
}

/** GET or POST a route; resolves to the JSON body, rejects with an ApiError. The first 401 with a
 * key also forgets that key, and tells the page (event "console:unauthorized", detail: the error
 * and whether a key was refused) so that it asks for one. */
export async function request(path, { method = "GET", query, body, signal } = {}) {
  const headers = { Accept: "application/json" };
  const key = storedKey();
  const sentWith = generation;
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url(path, query), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, { code: "NETWORK_ERROR", detail: "the API did not answer; is crewrun running?" });
  }
  if (!response.ok) {
    const error = new ApiError(response.status, await problemOf(response));
    if (response.status === 401 && sentWith === generation) {
      if (key) forgetKey();
      else generation += 1;
      window.dispatchEvent(new CustomEvent("console:unauthorized", { detail: { error, refused: Boolean(key) } }));
    }
    throw error;
  }
  return response.status === 204 ? null : response.json();
}

export const get = (path, query, signal) => request(path, { query, signal });
export const post = (path, body) => request(path, { method: "POST", body: body === undefined ? {} : body });

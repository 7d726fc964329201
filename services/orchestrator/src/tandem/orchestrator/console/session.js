// Logging in and out, and the snapshot of every cluster and group the pages start from.
import { call, get, getAll, saveToken } from "./api.js";
import { store, changed, resetStore } from "./store.js";
import { startStream, stopStream } from "./stream.js";

// The whole state again: at login and at every (re)connection of the stream (every page of
// the clusters, 1,000 to a page).
export async function refreshSnapshot() {
  const [clusters, groups] = await Promise.all([
    getAll("/clusters", { limit: 1000 }),
    get("/groups"),
  ]);
  store.clusters = new Map(clusters.map((c) => [c.name, c]));
  store.groups = groups;
  changed();
}

export function logOut(message = "") {
  stopStream();
  saveToken(null);
  resetStore();
  store.loginMessage = message;
  changed();
}

export async function logIn(token) {
  // whoami first: a refused token fails here, before anything else is asked.
  store.me = await call("GET", "/whoami", { token });
  saveToken(token);
  store.loginMessage = "";
  await refreshSnapshot();
  startStream(token, {
    onHello: () => refreshSnapshot().catch((err) => console.warn("snapshot failed", err)),
    onUnauthorized: () => logOut("the API refused this token (401): log in again"),
  });
  changed();
}


// The console's state, one object for the whole tab: what the API and the stream said.
// Components read it through useStore(); a change re-renders them once per animation frame
// (a burst of stream frames is one render, which keeps 2,000 clusters usable).
import { useEffect, useState } from "./vendor/htm/preact/standalone.module.js";

export const store = {
  me: null, // {role, actor} from GET /whoami
  clusters: new Map(), // name -> ClusterView
  groups: [],
  live: "off", // off | connecting | live | reconnecting
  liveDetail: "",
  position: null, // the last event seq seen (the stream's resume point)
  recentEvents: [], // the stream's events since the tab logged in, newest last (bounded)
  dialog: null, // the open action dialog's spec, see actions.js
  followSaga: {}, // cluster -> saga id this tab started (followed live on the cluster page)
};

const MAX_RECENT_EVENTS = 2000;
const listeners = new Set();
const eventListeners = new Set();
let scheduled = false;
let version = 0;

export function changed() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => {
    scheduled = false;
    version += 1;
    for (const listener of listeners) listener(version);
  });
}

export function useStore() {
  const [, setVersion] = useState(version);
  useEffect(() => {
    listeners.add(setVersion);
    return () => listeners.delete(setVersion);
  }, []);
  return store;
}

export function canAct() {
  return store.me !== null && (store.me.role === "operator" || store.me.role === "admin");
}

export function putCluster(view) {
  store.clusters.set(view.name, view);
  changed();
}

export function addEvent(event) {
  store.recentEvents.push(event);
  // Trimmed by halves, not by one at every event (a busy stream brings thousands a second).
  if (store.recentEvents.length > 2 * MAX_RECENT_EVENTS) {
    store.recentEvents = store.recentEvents.slice(-MAX_RECENT_EVENTS);
  }
  for (const listener of eventListeners) listener(event);
  changed();
}

// Called with each event of the stream (a page follows its saga or its alerts with it).
export function useStreamEvents(listener, deps) {
  useEffect(() => {
    eventListeners.add(listener);
    return () => eventListeners.delete(listener);
  }, deps);
}

export function resetStore() {
  store.me = null;
  store.clusters = new Map();
  store.groups = [];
  store.live = "off";
  store.position = null;
  store.recentEvents = [];
  store.dialog = null;
  store.followSaga = {};
  changed();
}

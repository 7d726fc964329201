// GET /api/v1/stream read with fetch() (EventSource cannot send an Authorization header):
// the Server-Sent Events parsed here, resumed after the last event id on every reconnect.
import { store, changed, putCluster, addEvent } from "./store.js";

const MIN_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 15000;

let running = null; // the AbortController of the current stream, null when stopped

export function stopStream() {
  if (running) running.abort();
  running = null;
  store.live = "off";
  changed();
}

// Runs until stopStream(); `onHello` is called on every (re)connection, e.g. to refresh the
// snapshot; `onUnauthorized` when the token is refused (the stream then stops).
export function startStream(token, { onHello, onUnauthorized }) {
  stopStream();
  const controller = new AbortController();
  running = controller;
  loop(token, controller, onHello, onUnauthorized);
}

function setLive(state, detail = "") {
  store.live = state;
  store.liveDetail = detail;
  changed();
}

async function loop(token, controller, onHello, onUnauthorized) {
  let backoff = MIN_BACKOFF_MS;
  while (!controller.signal.aborted) {
    setLive(store.live === "off" ? "connecting" : store.live);
    let why = "the stream ended";
    try {
      const query = store.position === null ? "" : `?after=${store.position}`;
      const answer = await fetch(`/api/v1/stream${query}`, {
        headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" },
        signal: controller.signal,
        cache: "no-store",
      });
      if (answer.status === 401) {
        setLive("off", "the API refused the token");
        onUnauthorized();
        return;
      }
      if (!answer.ok) {
        why = `the stream answered ${answer.status}`;
      } else {
        await readFrames(answer.body, (frame) => {
          if (frame.event === "hello") {
            backoff = MIN_BACKOFF_MS;
            const hello = JSON.parse(frame.data);
            if (store.position === null) store.position = hello.position;
            setLive("live");
            onHello(hello);
          } else if (frame.event === "event") {
            const event = JSON.parse(frame.data);
            store.position = Math.max(store.position ?? 0, event.seq);
            addEvent(event);
          } else if (frame.event === "cluster") {
            putCluster(JSON.parse(frame.data));
          }
        });
      }
    } catch (err) {
      if (controller.signal.aborted) return;
      why = `the stream failed: ${err.message || err}`;
    }
    if (controller.signal.aborted) return;
    setLive("reconnecting", `${why}; again in ${Math.round(backoff / 1000)} s`);
    await new Promise((resolve) => setTimeout(resolve, backoff));
    backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
  }
}

// Calls onFrame({event, data, id}) for each frame; comments (keepalives) are skipped.
async function readFrames(body, onFrame) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let rest = ""; // an incomplete last line, completed by the next chunk
  let frame = { event: "message", data: [], id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    // One split per chunk (a busy stream brings hundreds of frames in one chunk).
    const lines = (rest + value).split(/\r\n|\r|\n/);
    rest = lines.pop();
    for (const line of lines) {
      if (line === "") {
        if (frame.data.length) onFrame({ ...frame, data: frame.data.join("\n") });
        frame = { event: "message", data: [], id: null };
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") frame.event = value;
      else if (field === "data") frame.data.push(value);
      else if (field === "id") frame.id = value;
    }
  }
}

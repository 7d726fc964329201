// The console's shell: login, the header (pages, live indicator, who is logged in), the
// routing by the URL's hash (#/, #/cluster/NAME, #/group/NAME, #/alerts,
// #/events), and the stream's lifecycle.
import { html, render, useEffect, useState } from "./vendor/htm/preact/standalone.module.js";
import { ApiError, savedToken } from "./api.js";
import { useStore } from "./store.js";
import { logIn, logOut } from "./session.js";
import { LoginPage } from "./login.js";
import { OverviewPage } from "./overview.js";
import { ClusterPage } from "./cluster.js";
import { AlertsPage } from "./alerts.js";
import { GroupPage } from "./group.js";
import { EventsPage } from "./timeline.js";
import { ActionDialog } from "./actions.js";

function useRoute() {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const onChange = () => setHash(location.hash);
    addEventListener("hashchange", onChange);
    return () => removeEventListener("hashchange", onChange);
  }, []);
  const parts = hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  return { page: parts[0] || "overview", arg: parts[1] };
}

function LiveIndicator({ live, detail }) {
  const label = { live: "live", connecting: "connecting", reconnecting: "reconnecting", off: "offline" };
  return html`<span class=${`live live-${live}`} data-testid="live" title=${detail} role="status">
    ${label[live] || live}
  </span>`;
}

function Shell() {
  const s = useStore();
  const route = useRoute();
  let page;
  if (route.page === "cluster" && route.arg) page = html`<${ClusterPage} name=${route.arg} />`;
  else if (route.page === "group" && route.arg) page = html`<${GroupPage} name=${route.arg} />`;
  else if (route.page === "alerts") page = html`<${AlertsPage} />`;
  else if (route.page === "events") page = html`<${EventsPage} />`;
  else page = html`<${OverviewPage} />`;
  return html`
    <header class="top">
      <a class="brand" href="#/">Tandem</a>
      <nav aria-label="pages">
        <a href="#/" class=${route.page === "overview" ? "current" : ""}>Overview</a>
        <a href="#/alerts" class=${route.page === "alerts" ? "current" : ""}>Alerts</a>
        <a href="#/events" class=${route.page === "events" ? "current" : ""}>Events</a>
      </nav>
      <${LiveIndicator} live=${s.live} detail=${s.liveDetail} />
      <span class="who" data-testid="role">${s.me.role} (${s.me.actor})</span>
      <button type="button" class="link" onClick=${() => logOut()}>Log out</button>
    </header>
    <main>${page}</main>
    ${s.dialog && html`<${ActionDialog} spec=${s.dialog} />`}
  `;
}

function App() {
  const s = useStore();
  if (s.me === null) return html`<${LoginPage} message=${s.loginMessage || ""} />`;
  return html`<${Shell} />`;
}

async function boot() {
  const token = savedToken();
  if (token) {
    try {
      await logIn(token);
    } catch (err) {
      const refused = err instanceof ApiError && err.status === 401;
      logOut(refused ? `the API refused this token (401): ${err.detail}` : err.message);
    }
  }
  const root = document.getElementById("app");
  root.textContent = ""; // the "Loading" line
  render(html`<${App} />`, root);
}

boot();

// The login form: a token checked with GET /whoami, kept for this tab only.
import { html, useState } from "./vendor/htm/preact/standalone.module.js";
import { ApiError } from "./api.js";
import { logIn } from "./session.js";

export function loginError(err) {
  if (err instanceof ApiError && err.status === 401) {
    return `the API refused this token (401): ${err.detail}`;
  }
  if (err instanceof ApiError) return `the API answered ${err.status}: ${err.detail}`;
  return `${err.message}. Is the orchestrator running, and is this its address?`;
}

export function LoginPage({ message }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState(message);
  const [busy, setBusy] = useState(false);

  async function submit(event) {
    event.preventDefault();
    setBusy(true);
    setError("");
    try {
      await logIn(token.trim());
    } catch (err) {
      setError(loginError(err));
    } finally {
      setBusy(false);
    }
  }

  return html`
    <main class="login">
      <h1>Tandem console</h1>
      <form onSubmit=${submit} aria-describedby="login-help">
        <label for="token">API token</label>
        <input id="token" name="token" type="password" autocomplete="off" required autofocus
          value=${token} onInput=${(e) => setToken(e.target.value)} />
        <button type="submit" id="login" disabled=${busy}>${busy ? "Checking…" : "Log in"}</button>
      </form>
      ${error && html`<p class="error" role="alert" data-testid="login-error">${error}</p>`}
      <p id="login-help" class="help">
        A token of the orchestrator's tokens file (viewer: read only; operator: actions too).
        ${" "}<code>tandem up</code> shows its tokens on its terminal and keeps them in its stack file.
        The token is kept in this tab only and sent to this orchestrator's API.
      </p>
    </main>
  `;
}

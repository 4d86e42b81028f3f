/**
 * The status page: asks for the API token once (kept in this tab's sessionStorage), then shows
 * the daemon, its cameras and its incidents, a page of them at a time, and refreshes every 2 s
 * while the tab is visible. Pause, resume and retry are PUT/POST calls with the token.
 */
import { Api, Refused, TokenRefused, Unreachable } from './api.js';
import { camerasView, daemonView, incidentsView } from './view.js';
import type { Camera, DaemonStatus, Incident } from './wire.js';

const TOKEN_KEY = 'vms-uplink.api-token';
const REFRESH_MS = 2_000;
const PAGE_SIZE = 20;

interface Shown {
  status: DaemonStatus;
  cameras: Camera[];
  incidents: Incident[];
}

function byId<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el as T;
}

/** What the page is showing: one instance per tab. */
class StatusPage {
  private api: Api | null = null;
  private timer: number | null = null;
  private refreshing: Promise<void> | null = null;
  /** The `before` cursors of the pages gone through: empty on the first (newest) page. */
  private readonly cursors: string[] = [];
  private lastPage: Incident[] = [];
  /** What each part was last drawn from: a part whose data did not change is not drawn again. */
  private readonly drawn = new Map<string, string>();
  /** Actions under way, by their button's key: a second press does not send them twice. */
  private readonly busy = new Set<string>();

  private readonly el = {
    connection: byId('connection'),
    signOut: byId<HTMLButtonElement>('sign-out'),
    signIn: byId<HTMLFormElement>('sign-in'),
    token: byId<HTMLInputElement>('token'),
    signInError: byId('sign-in-error'),
    dashboard: byId('dashboard'),
    notice: byId('notice'),
    daemon: byId('daemon'),
    cameras: byId('cameras'),
    incidents: byId('incidents'),
    range: byId('incident-range'),
    newer: byId<HTMLButtonElement>('newer'),
    older: byId<HTMLButtonElement>('older'),
  };

  start(): void {
    this.el.signIn.addEventListener('submit', (e) => {
      e.preventDefault();
      void this.signIn(this.el.token.value.trim());
    });
    this.el.signOut.addEventListener('click', () => this.signOut(''));
    this.el.dashboard.addEventListener('click', (e) => {
      const button = (e.target as Element).closest('button[data-action]');
      if (button instanceof HTMLButtonElement) void this.act(button);
    });
    this.el.newer.addEventListener('click', () => {
      this.cursors.pop();
      void this.refreshNow();
    });
    this.el.older.addEventListener('click', () => {
      const last = this.lastPage.at(-1);
      if (!last) return;
      this.cursors.push(last.id);
      void this.refreshNow();
    });
    document.addEventListener('visibilitychange', () => {
      if (!this.api) return;
      if (document.hidden) {
        this.stopTimer();
        this.el.connection.textContent = 'Updates paused while this tab is hidden.';
      } else {
        void this.refreshNow();
      }
    });
    const stored = sessionStorage.getItem(TOKEN_KEY);
    if (stored) void this.signIn(stored);
    else this.showSignIn('');
  }

  private showSignIn(problem: string): void {
    this.el.dashboard.hidden = true;
    this.el.signOut.hidden = true;
    this.el.signIn.hidden = false;
    this.el.signInError.textContent = problem;
    this.el.connection.textContent = 'Not signed in.';
    this.el.token.focus();
  }

  /** Tries the token on the first load of the data; keeps it only when the daemon takes it. */
  private async signIn(token: string): Promise<void> {
    if (!token) {
      this.showSignIn('Enter the API token.');
      return;
    }
    const api = new Api(token);
    try {
      const data = await this.load(api);
      sessionStorage.setItem(TOKEN_KEY, token);
      this.api = api;
      this.el.token.value = '';
      this.el.signIn.hidden = true;
      this.el.signInError.textContent = '';
      this.el.dashboard.hidden = false;
      this.el.signOut.hidden = false;
      this.show(data);
      this.schedule();
    } catch (err) {
      sessionStorage.removeItem(TOKEN_KEY);
      if (err instanceof TokenRefused) {
        this.showSignIn('Wrong token: the daemon refused it (401). Check api.token or api.token_file in its configuration, and try again.');
      } else if (err instanceof Unreachable) {
        this.showSignIn(`Cannot reach the daemon: ${err.message}. Is it running?`);
      } else {
        this.showSignIn(`The daemon answered: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  }

  private signOut(problem: string): void {
    sessionStorage.removeItem(TOKEN_KEY);
    this.api = null;
    this.stopTimer();
    this.cursors.length = 0;
    this.drawn.clear();
    this.showSignIn(problem);
  }

  private stopTimer(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Refreshes at once (after an action, a page change, the tab shown again); one refresh at a time. */
  private async refreshNow(): Promise<void> {
    this.stopTimer();
    if (this.refreshing) await this.refreshing;
    this.refreshing = this.refresh().finally(() => (this.refreshing = null));
    await this.refreshing;
  }

  /** Everything the page shows, in one round of requests made together. */
  private async load(api: Api): Promise<Shown> {
    const before = this.cursors.at(-1);
    const page = `/incidents?order=newest&limit=${PAGE_SIZE}${before === undefined ? '' : `&before=${encodeURIComponent(before)}`}`;
    const [status, cameras, incidents] = await Promise.all([
      api.get<DaemonStatus>('/status'),
      api.get<Camera[]>('/cameras'),
      api.get<Incident[]>(page),
    ]);
    return { status, cameras, incidents };
  }

  private show({ status, cameras, incidents }: Shown): void {
    this.lastPage = incidents;
    this.draw('daemon', status, () => daemonView(status));
    this.draw('cameras', cameras, () => camerasView(cameras));
    this.draw('incidents', incidents, () => incidentsView(incidents));
    this.drawPager(incidents.length, status.incidentCount);
    this.el.connection.textContent = `Updated ${new Date().toLocaleTimeString()}; every ${REFRESH_MS / 1000} s while this tab is shown.`;
  }

  private async refresh(): Promise<void> {
    const api = this.api;
    if (!api) return;
    try {
      const data = await this.load(api);
      if (api !== this.api) return;
      this.show(data);
    } catch (err) {
      if (err instanceof TokenRefused) {
        this.signOut('The daemon no longer takes this token (401): its api.token changed? Enter the new one.');
        return;
      }
      this.el.connection.textContent =
        err instanceof Unreachable
          ? `Cannot reach the daemon (${err.message}); trying again every ${REFRESH_MS / 1000} s.`
          : `The daemon answered: ${err instanceof Error ? err.message : String(err)}`;
    }
    if (this.api === api) this.schedule();
  }

  /** The next refresh in REFRESH_MS, unless the tab is hidden (it refreshes when shown again). */
  private schedule(): void {
    this.stopTimer();
    if (!document.hidden) this.timer = window.setTimeout(() => void this.refreshNow(), REFRESH_MS);
  }

  /**
   * Redraws a part when its data changed. The button that had the keyboard focus is focused
   * again in the new drawing, so a refresh never throws a keyboard user out of the page.
   */
  private draw(part: 'daemon' | 'cameras' | 'incidents', data: unknown, view: () => HTMLElement): void {
    const json = JSON.stringify(data);
    if (this.drawn.get(part) === json) return;
    this.drawn.set(part, json);
    const host = this.el[part];
    const focused =
      document.activeElement instanceof HTMLElement && host.contains(document.activeElement)
        ? document.activeElement.dataset.key
        : undefined;
    host.replaceChildren(view());
    if (focused === undefined) return;
    for (const el of host.querySelectorAll<HTMLElement>('[data-key]')) {
      if (el.dataset.key === focused) {
        el.focus();
        return;
      }
    }
  }

  private drawPager(shown: number, total: number): void {
    const first = this.cursors.length * PAGE_SIZE + 1;
    this.el.range.textContent =
      shown === 0 ? `${total} incidents in the ledger.` : `Incidents ${first}–${first + shown - 1} of ${total}, newest first.`;
    this.el.newer.disabled = this.cursors.length === 0;
    this.el.older.disabled = shown < PAGE_SIZE || first + shown - 1 >= total;
  }

  /** Pause, resume or retry, as the button says; the answer (or refusal) is shown in words. */
  private async act(button: HTMLButtonElement): Promise<void> {
    const api = this.api;
    if (!api) return;
    const { action, cameraId, uploadId, key = '' } = button.dataset;
    const request: ['PUT' | 'POST', string] | null =
      action === 'retry' && uploadId !== undefined
        ? ['POST', `/uploads/${encodeURIComponent(uploadId)}/retry`]
        : (action === 'pause' || action === 'resume') && cameraId !== undefined
          ? ['PUT', `/cameras/${encodeURIComponent(cameraId)}/state/${action === 'pause' ? 'paused' : 'running'}`]
          : null;
    if (!request || this.busy.has(key)) return;
    // Not `disabled`: a disabled button loses the keyboard focus.
    this.busy.add(key);
    button.setAttribute('aria-busy', 'true');
    try {
      const answer = await api.act(...request);
      this.el.notice.textContent = answer.message;
    } catch (err) {
      if (err instanceof TokenRefused) {
        this.signOut('The daemon no longer takes this token (401). Enter the new one.');
        return;
      }
      this.el.notice.textContent =
        err instanceof Refused || err instanceof Unreachable ? `Not done: ${err.message}` : `Not done: ${String(err)}`;
    } finally {
      this.busy.delete(key);
      button.removeAttribute('aria-busy');
    }
    await this.refreshNow();
  }
}

new StatusPage().start();

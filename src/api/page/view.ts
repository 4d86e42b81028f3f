/**
 * The page's parts built from the API's JSON. Every string that came from a manifest, a file name
 * or a platform is put in as a text node or an attribute value, never parsed as HTML: an incident
 * titled `<img src=x onerror=alert(1)>` shows exactly that. Every state is written in words.
 */
import { formatBytes, formatDuration, formatRate, percentDone } from './units.js';
import type { Camera, DaemonStatus, Incident, Upload, Video } from './wire.js';

type Child = Node | string | null | undefined | false;

interface Props {
  class?: string;
  /** Attribute values, set with setAttribute (never parsed as markup). */
  attrs?: Record<string, string>;
  /** data-* attributes. */
  data?: Record<string, string>;
}

/** An element with its children; strings become text nodes. */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, props: Props = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (props.class) el.className = props.class;
  for (const [name, value] of Object.entries(props.attrs ?? {})) el.setAttribute(name, value);
  for (const [name, value] of Object.entries(props.data ?? {})) el.dataset[name] = value;
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    el.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return el;
}

/** A button the page's click handler acts on; `key` finds it again after a refresh (to keep the keyboard focus). */
function actionButton(label: string, accessibleName: string, data: Record<string, string>): HTMLButtonElement {
  return h('button', { attrs: { type: 'button', 'aria-label': accessibleName }, data }, label);
}

const when = (iso: string | null): string => (iso === null ? 'never' : new Date(iso).toLocaleString());

/** `3 d 4 h`, `2 h 05 min`, `4 min 10 s`, `12 s`. */
export function formatUptime(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const [d, hr, m] = [Math.floor(s / 86_400), Math.floor((s % 86_400) / 3600), Math.floor((s % 3600) / 60)];
  if (d > 0) return `${d} d ${hr} h`;
  if (hr > 0) return `${hr} h ${String(m).padStart(2, '0')} min`;
  return m > 0 ? `${m} min ${s % 60} s` : `${s} s`;
}

const rateWords = (bytesPerSecond: number | null): string => (bytesPerSecond === null ? 'unlimited' : formatRate(bytesPerSecond));

function fact(term: string, ...value: Child[]): DocumentFragment {
  const f = document.createDocumentFragment();
  f.append(h('dt', {}, term), h('dd', {}, ...value));
  return f;
}

function stateWord(state: string, text: string = state): HTMLSpanElement {
  return h('span', { class: `state state-${state}` }, text);
}

/** The header: version, uptime, health and its reasons, disk against the floor, bandwidth in force and its schedule, totals. */
export function daemonView(s: DaemonStatus): HTMLElement {
  const { disk, bandwidth: bw, totals: t } = s;
  const diskText =
    disk.freeBytes === null
      ? 'free space unknown'
      : `${formatBytes(disk.freeBytes)} free on the ledger's disk, ${disk.minFreeBytes > 0 ? `floor ${formatBytes(disk.minFreeBytes)}` : 'no floor (ledger.min_free is 0)'}`;
  const belowFloor = disk.freeBytes !== null && disk.minFreeBytes > 0 && disk.freeBytes < disk.minFreeBytes;
  const schedule = bw.schedule
    ? h(
        'ul',
        { class: 'reasons' },
        ...bw.schedule.map((e, i) =>
          h('li', {}, h('code', {}, e.cron), ` → ${rateWords(e.bytesPerSecond)}`, i === bw.entry ? ' (in force now)' : ''),
        ),
      )
    : null;
  const source = bw.schedule
    ? bw.entry === null
      ? ' (the lowest of the schedule: no entry fired within a year)'
      : ` (schedule entry ${bw.entry + 1} since ${when(bw.since)})`
    : '';
  const reasons = s.health.reasons ?? [];
  return h(
    'dl',
    { class: 'facts' },
    fact('Version', s.version),
    fact('Up', `${formatUptime(s.uptimeSeconds)} (since ${when(s.startedAt)})`),
    fact(
      'Health',
      stateWord(s.health.status),
      reasons.length > 0 ? h('ul', { class: 'reasons', attrs: { 'aria-label': 'Reasons' } }, ...reasons.map((r) => h('li', {}, r))) : null,
    ),
    fact('Disk', belowFloor ? stateWord('failed', 'below the floor: no new work is taken') : null, belowFloor ? ' ' : null, diskText),
    fact('Bandwidth', `${rateWords(bw.bytesPerSecond)}${source}`, schedule),
    fact(
      'Uploads',
      `${t.uploading} uploading, ${t.queued} queued, ${t.done} done, ${t.failed} failed; ` +
        `videos: ${t.waiting} waiting for their files, ${t.failedVideos} failed exports` +
        (t.refusedReports > 0 ? `; ${t.refusedReports} reports refused` : ''),
    ),
    fact('Incidents', String(s.incidentCount)),
  );
}

export function camerasView(cameras: Camera[]): HTMLElement {
  if (cameras.length === 0) return h('p', { class: 'empty' }, 'No camera yet: a camera shows here once a manifest names it.');
  return h(
    'ul',
    { class: 'cards' },
    ...cameras.map((c) => {
      const label = c.name ?? c.id;
      const paused = c.state === 'paused';
      return h(
        'li',
        { class: 'card', data: { cameraId: c.id } },
        h('h3', {}, label),
        c.name !== null ? h('p', { class: 'meta' }, `id ${c.id}`) : null,
        h(
          'p',
          {},
          paused ? stateWord('paused', 'Paused') : stateWord('running', 'Running'),
          paused ? ': no upload of its videos starts' : '',
        ),
        h('p', {}, `Backlog: ${c.videoBacklog} ${c.videoBacklog === 1 ? 'video' : 'videos'} not uploaded yet`),
        h('p', {}, `Last video: ${when(c.lastVideoAt)}`),
        h('p', {}, `Upload rate: ${formatRate(c.networkTransmitRate)} (last minute)`),
        actionButton(paused ? 'Resume uploads' : 'Pause uploads', `${paused ? 'Resume' : 'Pause'} uploads of camera ${label}`, {
          action: paused ? 'resume' : 'pause',
          cameraId: c.id,
          key: `camera:${c.id}`,
        }),
      );
    }),
  );
}

/** What one upload shows: its state in words, a bar with bytes and rate, and the platform's reason when it failed. */
function uploadView(u: Upload, video: Video): HTMLElement {
  const pausedNow = u.state !== 'done' && u.state !== 'failed' && video.cameraPaused;
  const state = pausedNow ? 'paused' : u.state;
  const percent = percentDone(u);
  const target = u.role === 'video' ? u.target : `${u.target} (${u.role})`;
  const figures = [`${formatBytes(u.bytesDone)} of ${formatBytes(u.bytesTotal)}`, `${percent} %`];
  if (u.state === 'uploading') figures.push(formatRate(u.rateBytesPerSecond), `${formatDuration(u.etaSeconds)} left`);
  const words: Record<string, string> = {
    done: 'Done',
    uploading: 'Uploading',
    queued: 'Queued',
    paused: 'Paused',
    failed: 'Failed',
  };
  let detail: string | null = null;
  if (pausedNow) detail = 'Waiting: its camera is paused.';
  else if (u.state === 'failed') detail = `The platform refused it: ${u.lastError ?? 'no reason given'}`;
  else if (u.lastError !== null) detail = `Retrying after: ${u.lastError}`;
  return h(
    'li',
    { class: 'upload', data: { uploadId: String(u.id), state } },
    h('span', { class: 'target' }, `→ ${target}`),
    h('span', {}, stateWord(state, words[state] ?? state), ` · ${figures.join(' · ')}`),
    h(
      'span',
      { class: 'detail' },
      h('progress', {
        attrs: {
          max: String(Math.max(1, u.bytesTotal)),
          value: String(u.bytesTotal > 0 ? u.bytesDone : percent === 100 ? 1 : 0),
          'aria-label': `${target}: ${percent} % uploaded`,
        },
      }),
    ),
    detail !== null ? h('span', { class: `detail${u.state === 'failed' ? ' problem' : ''}` }, detail) : null,
    u.state === 'failed'
      ? h(
          'span',
          { class: 'actions' },
          actionButton('Retry', `Retry upload #${u.id} to ${target}`, { action: 'retry', uploadId: String(u.id), key: `retry:${u.id}` }),
        )
      : null,
  );
}

function videoLabel(v: Video): string {
  return [v.cameraName ?? v.cameraId, v.file ?? v.id].filter((x): x is string => x !== null).join(' · ');
}

function videoView(v: Video): HTMLElement {
  const waiting = v.state === 'waiting' ? h('p', {}, stateWord('waiting', 'Waiting'), ' for its file to be written') : null;
  return h(
    'li',
    { class: 'video', data: { videoId: v.id } },
    h('p', {}, h('strong', {}, videoLabel(v)), v.file !== null ? h('span', { class: 'meta' }, ` (video ${v.id})`) : null),
    waiting,
    v.uploads.length > 0 ? h('ul', { class: 'uploads' }, ...v.uploads.map((u) => uploadView(u, v))) : null,
    ...v.notes.map((n) => h('p', { class: 'meta' }, `Note: ${n}`)),
  );
}

function incidentView(i: Incident): HTMLElement {
  const failed = i.videos.filter((v) => v.state === 'failed');
  const others = i.videos.filter((v) => v.state !== 'failed');
  const reports = i.reports.map((r) =>
    h(
      'p',
      { class: 'meta' },
      `Report to ${r.target}: `,
      stateWord(r.state, r.state === 'acknowledged' ? 'acknowledged' : r.state === 'pending' ? 'pending' : 'refused'),
      r.state !== 'acknowledged' && r.lastError !== null ? ` (${r.lastError})` : '',
    ),
  );
  return h(
    'li',
    {},
    h(
      'article',
      { class: 'incident', data: { incidentId: i.id }, attrs: { 'aria-label': `Incident ${i.title ?? i.id}` } },
      h('h3', { class: 'title' }, i.title ?? `Incident ${i.id}`),
      h('p', { class: 'meta' }, `id ${i.id} · folder ${i.folder}`),
      ...reports,
      others.length > 0 ? h('ul', { class: 'videos' }, ...others.map(videoView)) : null,
      failed.length > 0
        ? h(
            'div',
            { class: 'failed-exports' },
            h('h4', {}, 'Failed exports'),
            h(
              'ul',
              {},
              ...failed.map((v) =>
                h(
                  'li',
                  { data: { videoId: v.id } },
                  stateWord('failed', 'Failed'),
                  ` ${videoLabel(v)}: ${v.errors.join('; ') || 'no reason given'}`,
                ),
              ),
            ),
          )
        : null,
      i.videos.length === 0 ? h('p', { class: 'empty' }, 'No video in its manifest.') : null,
    ),
  );
}

export function incidentsView(incidents: Incident[]): HTMLElement {
  if (incidents.length === 0) return h('p', { class: 'empty' }, 'No incident on this page.');
  return h('ol', { class: 'incidents' }, ...incidents.map(incidentView));
}

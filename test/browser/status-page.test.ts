/**
 * The status page in headless Chromium, against the real daemon (the built CLI) and the ALO and S3
 * emulators: signing in, a 30 MiB upload's bar, pause and resume, retry, hostile text, the
 * security headers, phone width and the keyboard. What is asserted is what the person at the
 * browser sees and what the platform and the ledger then hold.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ARTIFACTS, LAPTOP, launchChromium, openPage, PHONE, screenshot, type WatchedPage } from './browser.js';
import { CLI, waitFor } from '../support/daemon-process.js';
import { MiB } from '../support/files.js';
import { harness } from '../support/harness.js';
import { partsDone, uploadOf, uploadReaches } from '../support/ledger.js';
import { API_TOKEN, ApiClient, apiSection } from '../support/local-api.js';
import { writeIncident } from '../support/manifest.js';

const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
  "frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
const VERSION = (JSON.parse(readFileSync(join(CLI, '..', '..', '..', 'package.json'), 'utf8')) as { version: string }).version;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** An upload as the page shows it: its state word, its bar and its line of figures. */
interface ShownUpload {
  id: string;
  state: string;
  percent: number;
  text: string;
}

function shownUploads(page: Page): Promise<ShownUpload[]> {
  return page.$$eval('#incidents li.upload', (items) =>
    items.map((li) => {
      const bar = li.querySelector('progress')!;
      return {
        id: (li as HTMLElement).dataset.uploadId!,
        state: (li as HTMLElement).dataset.state!,
        percent: (100 * bar.value) / bar.max,
        text: (li as HTMLElement).innerText,
      };
    }),
  );
}

async function shownUpload(page: Page, uploadId: number): Promise<ShownUpload | undefined> {
  return (await shownUploads(page)).find((u) => u.id === String(uploadId));
}

/** Opens the page and signs in by typing the token and pressing Enter, as a person does. */
async function signIn(w: WatchedPage, origin: string, token = API_TOKEN): Promise<void> {
  await w.page.goto(`${origin}/`);
  await w.page.locator('#token').fill(token);
  await w.page.locator('#token').press('Enter');
}

async function dashboardShown(page: Page): Promise<void> {
  await page.locator('#dashboard').waitFor({ state: 'visible', timeout: 10_000 });
  await page.locator('#daemon dl').waitFor({ timeout: 10_000 });
}

const storedToken = (page: Page): Promise<string | null> => page.evaluate(() => sessionStorage.getItem('vms-uplink.api-token'));

/** Nothing went wrong in the page itself: no script error, no CSP violation (401s of a wrong token excepted). */
async function expectCleanPage(w: WatchedPage, allow: RegExp | null = null): Promise<void> {
  expect(w.errors.filter((e) => !allow?.test(e))).toEqual([]);
  expect(await w.cspViolations()).toEqual([]);
  expect(w.dialogs).toEqual([]);
}

describe('status page', () => {
  let browser: Browser;
  beforeAll(async () => {
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
  });

  it('is served with a strict CSP, signs in with the token kept in the tab, refuses a wrong one clearly, refreshes only while shown, and never puts the token in a URL', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site({ sections: apiSection() });
    const api = await ApiClient.of(h.daemon(s));

    // The page's own files need no token (they hold no data); each answer carries the security headers.
    const files: Array<[string, RegExp]> = [
      ['/', /^text\/html; charset=utf-8$/],
      ['/page/app.js', /^text\/javascript; charset=utf-8$/],
      ['/page/view.js', /^text\/javascript; charset=utf-8$/],
      ['/page/style.css', /^text\/css; charset=utf-8$/],
      ['/page/icon.svg', /^image\/svg\+xml$/],
    ];
    for (const [path, type] of files) {
      const r = await api.call('GET', path, null);
      expect([path, r.status, r.headers['content-type']]).toEqual([path, 200, expect.stringMatching(type)]);
      expect(r.headers['content-security-policy'], path).toBe(CSP);
      expect(r.headers['x-content-type-options'], path).toBe('nosniff');
      expect(r.headers['referrer-policy'], path).toBe('no-referrer');
    }
    const html = (await api.call('GET', '/', null)).text;
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>|\sstyle=|\son[a-z]+=/i);
    // Data needs the token, and its answers carry the headers too; only the page's own files are served.
    const refused = await api.call('GET', '/status', null);
    expect([refused.status, refused.headers['content-security-policy']]).toEqual([401, CSP]);
    for (const path of ['/page/..%2Flocal-api.js', '/page/units.js.map', '/page/wire.d.ts', '/page/nope.js']) {
      expect((await api.call('GET', path, null)).status, path).toBe(404);
    }

    const w = await openPage(browser);
    const response = await w.page.goto(`${api.origin}/`);
    expect(response!.headers()['content-security-policy']).toBe(CSP);
    await expect.poll(() => w.page.locator('#sign-in').isVisible()).toBe(true);
    expect(await w.page.locator('#dashboard').isVisible()).toBe(false);

    // A wrong token: said in words, not kept, nothing shown.
    await w.page.locator('#token').fill('not-the-token');
    await w.page.getByRole('button', { name: 'Sign in' }).click();
    await expect.poll(() => w.page.locator('#sign-in-error').textContent()).toMatch(/^Wrong token: the daemon refused it \(401\)/);
    expect(await w.page.locator('#dashboard').isVisible()).toBe(false);
    expect(await storedToken(w.page)).toBeNull();

    // The right one: the dashboard, the token kept for this tab only.
    await w.page.locator('#token').fill(API_TOKEN);
    await w.page.locator('#token').press('Enter');
    await dashboardShown(w.page);
    const header = await w.page.locator('#daemon').innerText();
    expect(header).toContain(VERSION);
    expect(header).toMatch(/Health\s+ok/);
    expect(header).toMatch(/Bandwidth\s+unlimited/);
    expect(header).toMatch(/free on the ledger's disk, floor 256\.0 MiB/);
    expect(await storedToken(w.page)).toBe(API_TOKEN);
    expect(await w.page.locator('#token').inputValue()).toBe('');

    // Reloaded: asked once, so not asked again.
    await w.page.reload();
    await dashboardShown(w.page);
    expect(await w.page.locator('#sign-in').isVisible()).toBe(false);
    // Every data request carried the token as a bearer header; no URL ever held it.
    const data = w.requests.filter((r) => /^\/(status|cameras|incidents)/.test(new URL(r.url).pathname));
    expect(data.length).toBeGreaterThanOrEqual(4);
    expect(new Set(data.filter((r) => r.url.startsWith(api.origin)).map((r) => r.authorization))).toEqual(
      new Set(['Bearer not-the-token', `Bearer ${API_TOKEN}`]),
    );
    expect(w.requests.filter((r) => r.url.includes(API_TOKEN) || r.url.includes('not-the-token'))).toEqual([]);

    // It refreshes every 2 s while shown, and not at all while the tab is hidden.
    const dataCalls = (): number => w.requests.filter((r) => new URL(r.url).pathname === '/status').length;
    const setHidden = (hidden: boolean): Promise<void> =>
      w.page.evaluate((h) => {
        Object.defineProperty(document, 'hidden', { value: h, configurable: true });
        Object.defineProperty(document, 'visibilityState', { value: h ? 'hidden' : 'visible', configurable: true });
        document.dispatchEvent(new Event('visibilitychange'));
      }, hidden);
    let calls = dataCalls();
    await sleep(4_500);
    expect(dataCalls() - calls).toBeGreaterThanOrEqual(2);
    await setHidden(true);
    expect(await w.page.locator('#connection').textContent()).toBe('Updates paused while this tab is hidden.');
    calls = dataCalls();
    await sleep(4_500);
    expect(dataCalls()).toBe(calls);
    await setHidden(false);
    await expect.poll(dataCalls).toBeGreaterThan(calls);
    await expect.poll(() => w.page.locator('#connection').textContent()).toMatch(/^Updated .*; every 2 s while this tab is shown\.$/);

    // A token the daemon no longer takes (here: one edited in storage) sends the page back to sign-in, saying why.
    await w.page.evaluate(() => sessionStorage.setItem('vms-uplink.api-token', 'changed-since'));
    await w.page.reload();
    await expect.poll(() => w.page.locator('#sign-in-error').textContent()).toMatch(/^Wrong token/);
    expect(await storedToken(w.page)).toBeNull();

    await signIn(w, api.origin);
    await dashboardShown(w.page);
    await w.page.getByRole('button', { name: 'Sign out' }).click();
    expect(await w.page.locator('#sign-in').isVisible()).toBe(true);
    expect(await storedToken(w.page)).toBeNull();
    await expectCleanPage(w, /status of 401/);
  });

  it("shows a 30 MiB upload's bar rising with its bytes and rate, then done", async (ctx) => {
    const h = harness(ctx);
    // 3 MiB/s for the whole daemon: 10 s for the video, its 5 MiB parts finishing two at a time.
    const s = await h.site({ sections: apiSection(), upload: { bandwidth: '3MiB/s', concurrency: 2 } });
    const api = await ApiClient.of(h.daemon(s));
    const w = await openPage(browser);
    await signIn(w, api.origin);
    await dashboardShown(w.page);
    expect(await w.page.locator('#daemon').innerText()).toMatch(/Bandwidth\s+3\.0 MiB\/s/);

    const shas = await writeIncident(
      s.exportsRoot,
      'inc-big',
      [{ id: 'big', file: 'big.mp4', size: 30 * MiB, camera_name: 'Loading bay' }],
      {
        title: 'Forklift collision',
      },
    );
    const upload = await waitFor(() => uploadOf(s.ledgerPath, 'big'), 30_000, 'the upload planned');
    const seen: ShownUpload[] = [];
    let screenshotTaken = false;
    const done = await waitFor(
      async () => {
        const shown = await shownUpload(w.page, upload.id);
        if (!shown) return undefined;
        seen.push(shown);
        if (!screenshotTaken && shown.state === 'uploading' && shown.percent > 0) {
          screenshotTaken = true;
          await screenshot(w.page, 'status-page-upload.png');
        }
        return shown.state === 'done' ? shown : undefined;
      },
      60_000,
      'the page showing the upload done',
    );
    const midway = seen.filter((u) => u.percent > 0 && u.percent < 100);
    expect(midway.length, JSON.stringify(seen.map((u) => [u.state, u.percent]))).toBeGreaterThan(0);
    // It only rose, in the parts' steps, saying so in words with the bytes and a rate.
    const percents = seen.map((u) => u.percent);
    expect(percents).toEqual([...percents].sort((a, b) => a - b));
    expect(midway.every((u) => u.state === 'uploading')).toBe(true);
    expect(midway[0]!.text).toMatch(/Uploading · \d+\.\d MiB of 30\.0 MiB · \d+ % · \d+\.\d (KiB|MiB)\/s · \d+:\d\d left/);
    expect(done).toMatchObject({ state: 'done', percent: 100 });
    expect(done.text).toMatch(/Done · 30\.0 MiB of 30\.0 MiB · 100 %/);
    expect(screenshotTaken).toBe(true);

    const incident = await waitFor(() => s.alo.incident('inc-big')?.uploaded_videos[0], 30_000, 'ALO holding the video');
    expect(await s.store.objectSha256(incident.s3_key)).toBe(shas.get('big'));
    await expectCleanPage(w);
  });

  it('pauses a camera from the page: the API and the ledger agree, no part is sent while paused, and it completes once resumed', async (ctx) => {
    const h = harness(ctx);
    // 4 MiB/s all day, as a schedule of two entries: the header names the one in force.
    const bandwidth = [
      { cron: '0 0 * * *', limit: '4MiB/s' },
      { cron: '0 12 * * *', limit: '4MiB/s' },
    ];
    const s = await h.site({ sections: apiSection(), upload: { bandwidth, concurrency: 2 } });
    const api = await ApiClient.of(h.daemon(s));
    const w = await openPage(browser);
    await signIn(w, api.origin);
    await dashboardShown(w.page);
    const header = await w.page.locator('#daemon').innerText();
    const entry = new Date().getHours() < 12 ? 1 : 2;
    expect(header).toMatch(new RegExp(`Bandwidth\\s+4\\.0 MiB/s \\(schedule entry ${entry} since [^)]+\\)`));
    expect(header).toContain(
      `0 0 * * * → 4.0 MiB/s${entry === 1 ? ' (in force now)' : ''}\n0 12 * * * → 4.0 MiB/s${entry === 2 ? ' (in force now)' : ''}`,
    );
    const shas = await writeIncident(s.exportsRoot, 'inc-door', [
      { id: 'door1', file: 'door1.mp4', size: 30 * MiB, camera_id: 'cam-door', camera_name: 'Front door' },
    ]);
    const upload = await waitFor(
      () => {
        const u = uploadOf(s.ledgerPath, 'door1');
        return u && partsDone(s.ledgerPath, u.id).length >= 1 ? u : undefined;
      },
      30_000,
      'a part of door1 done',
    );

    await w.page.getByRole('button', { name: 'Pause uploads of camera Front door' }).click();
    expect(await api.get('/cameras/cam-door')).toMatchObject({ state: 'paused' });
    const pausedAt = Date.now();
    const card = w.page.locator('#cameras li', { has: w.page.getByRole('heading', { name: 'Front door' }) });
    await expect.poll(() => card.innerText()).toMatch(/Paused: no upload of its videos starts/);
    await expect.poll(async () => (await shownUpload(w.page, upload.id))?.state).toBe('paused');
    expect(await w.page.locator(`#incidents li.upload[data-upload-id="${upload.id}"]`).innerText()).toContain(
      'Waiting: its camera is paused.',
    );

    // Parts in flight at the pause are cut off; from then on nothing is sent for it.
    await sleep(1_000);
    const quietFrom = Date.now();
    const doneAtPause = partsDone(s.ledgerPath, upload.id);
    await sleep(2_500);
    expect(partsDone(s.ledgerPath, upload.id)).toEqual(doneAtPause);
    expect(uploadOf(s.ledgerPath, 'door1')!.state).toBe('queued');
    expect(doneAtPause.length).toBeLessThan(6);
    expect(await api.get('/incidents/inc-door')).toMatchObject({
      videos: [{ id: 'door1', cameraPaused: true, uploads: [{ state: 'uploading', bytesDone: doneAtPause.length * 5 * MiB }] }],
    });
    const resumedAt = Date.now();
    await w.page.getByRole('button', { name: 'Resume uploads of camera Front door' }).click();
    expect(await api.get('/cameras/cam-door')).toMatchObject({ state: 'running' });
    await expect.poll(async () => (await shownUpload(w.page, upload.id))?.state, { timeout: 60_000 }).toBe('done');

    const video = await waitFor(() => s.alo.incident('inc-door')?.uploaded_videos[0], 30_000, 'ALO holding door1');
    expect(await s.store.objectSha256(video.s3_key)).toBe(shas.get('door1'));
    // The store's own record: no PUT arrived between the pause taking hold and the resume.
    const sentWhilePaused = s.store.requests.filter((r) => r.method === 'PUT' && r.at >= quietFrom && r.at < resumedAt);
    expect(sentWhilePaused).toEqual([]);
    expect(s.store.requests.some((r) => r.method === 'PUT' && r.at < pausedAt)).toBe(true);
    expect(s.store.requests.some((r) => r.method === 'PUT' && r.at >= resumedAt)).toBe(true);
    // Parts acknowledged before the pause were not sent again.
    for (const n of doneAtPause) {
      expect(
        s.store.requests.filter((r) => r.method === 'PUT' && r.key === video.s3_key && r.partNumber === n && r.status === 200),
      ).toHaveLength(1);
    }
    expect(await card.innerText()).toMatch(/Running/);
    await expectCleanPage(w);
  });

  it("retries a failed upload from the page once the platform's refusal is lifted", async (ctx) => {
    const h = harness(ctx);
    const s = await h.site({ sections: apiSection() });
    s.alo.refuseFile('r1', 'r1 is larger than this site may upload');
    const shas = await writeIncident(s.exportsRoot, 'inc-r', [{ id: 'r1', file: 'r1.mp4', size: 6 * MiB }], { title: 'Refused at first' });
    const api = await ApiClient.of(h.daemon(s));
    const failed = await uploadReaches(s.ledgerPath, 'r1', 'failed');
    const w = await openPage(browser);
    await signIn(w, api.origin);
    await dashboardShown(w.page);
    const row = w.page.locator(`#incidents li.upload[data-upload-id="${failed.id}"]`);
    await expect.poll(() => row.getAttribute('data-state')).toBe('failed');
    expect(await row.innerText()).toMatch(/Failed[\s\S]*The platform refused it: .*422.*r1 is larger than this site may upload/);

    s.alo.allowFile('r1');
    await row.getByRole('button', { name: /^Retry upload #\d+ to alo$/ }).click();
    await expect.poll(() => w.page.locator('#notice').textContent()).toBe(`upload ${failed.id} requeued`);
    await expect.poll(() => row.getAttribute('data-state'), { timeout: 30_000 }).toBe('done');
    expect(await row.getByRole('button').count()).toBe(0);
    const video = await waitFor(() => s.alo.incident('inc-r')?.uploaded_videos[0], 30_000, 'ALO holding r1');
    expect(await s.store.objectSha256(video.s3_key)).toBe(shas.get('r1'));
    expect(uploadOf(s.ledgerPath, 'r1')!.state).toBe('done');
    await expectCleanPage(w);
  });

  it('shows hostile titles, names, file names and platform errors as text, and runs none of them, even without its CSP', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site({ sections: apiSection() });
    const title = '<img src=x onerror=alert(1)>';
    const camera = '<script>window.pwned = "camera"</script>';
    const exportError = '<img src=y onerror="window.pwned = \'export\'">';
    const refusal = '<svg onload="alert(\'platform\')"></svg>';
    s.alo.refuseFile('h2', refusal);
    await writeIncident(
      s.exportsRoot,
      'inc-hostile',
      [
        { id: 'h1', file: '<b onmouseover=alert(4)>x.mp4', size: 1 * MiB, camera_id: 'cam-x', camera_name: camera },
        { id: 'h2', file: 'h2.mp4', size: 1 * MiB, camera_id: 'cam-x', camera_name: camera },
        { id: 'h3', camera_id: 'cam-x', camera_name: camera, errors: [exportError] },
      ],
      { title },
    );
    const api = await ApiClient.of(h.daemon(s));
    await waitFor(
      () => uploadOf(s.ledgerPath, 'h2')?.state === 'failed' && uploadOf(s.ledgerPath, 'h1')?.state === 'done',
      30_000,
      'h1 done, h2 refused',
    );

    // bypassCSP: the page must be safe by itself; the CSP is a second wall, not the first.
    const w = await openPage(browser, { bypassCSP: true });
    await signIn(w, api.origin);
    await dashboardShown(w.page);
    const incident = w.page.locator('#incidents article');
    await expect.poll(() => incident.locator('h3').textContent()).toBe(title);
    await sleep(4_500); // two refreshes drawn over the first
    const text = await incident.innerText();
    expect(text).toContain('<b onmouseover=alert(4)>x.mp4');
    expect(text).toContain(`${camera} · h2.mp4`);
    expect(text).toContain(`${camera} · h3: ${exportError}`);
    expect(text).toContain(refusal);
    expect(await w.page.locator('#cameras h3').textContent()).toBe(camera);
    expect(await w.page.evaluate(() => document.querySelectorAll('main img, main svg, main script, main b').length)).toBe(0);
    expect(await w.page.evaluate(() => (window as unknown as { pwned?: string }).pwned)).toBeUndefined();
    await incident.hover();
    expect(w.dialogs).toEqual([]);
    expect(w.errors).toEqual([]);
  });

  it('works at phone width and on a laptop, with the keyboard alone, states in words', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site({ sections: apiSection({}), upload: { bandwidth: '1MiB/s', concurrency: 2 } });
    s.alo.refuseFile('yard-2', 'file type not accepted by this site');
    await writeIncident(
      s.exportsRoot,
      'inc-1',
      [{ id: 'gate-1', file: 'gate-1.mp4', size: 1 * MiB, camera_id: 'cam-gate', camera_name: 'Gate' }],
      {
        title: 'Vehicle at the gate after hours',
      },
    );
    const api = await ApiClient.of(h.daemon(s));
    await waitFor(() => uploadOf(s.ledgerPath, 'gate-1')?.state === 'done', 30_000, 'gate-1 uploaded');
    await writeIncident(
      s.exportsRoot,
      'inc-2',
      [
        {
          id: 'yard-1',
          file: 'yard-1.mp4',
          size: 40 * MiB,
          camera_id: 'cam-yard',
          camera_name: '192.168.0.241 - Camera - Yard north-east corner',
        },
        {
          id: 'yard-2',
          file: 'yard-2.mp4',
          size: 1 * MiB,
          camera_id: 'cam-yard',
          camera_name: '192.168.0.241 - Camera - Yard north-east corner',
        },
        {
          id: 'yard-3',
          camera_id: 'cam-gate',
          camera_name: 'Gate',
          errors: ['G64 export failed with: No video available for the camera during the selected time period.'],
        },
      ],
      { title: 'Person climbing the fence' },
    );
    const refused = await waitFor(
      () => {
        const [big, small] = [uploadOf(s.ledgerPath, 'yard-1'), uploadOf(s.ledgerPath, 'yard-2')];
        return small?.state === 'failed' && big !== undefined && partsDone(s.ledgerPath, big.id).length > 0 ? small : undefined;
      },
      60_000,
      'yard-2 refused, yard-1 under way',
    );

    const w = await openPage(browser, { viewport: PHONE });
    await w.page.goto(`${api.origin}/`);
    // Keyboard only: the token field has the focus; type, Enter.
    await w.page.keyboard.type(API_TOKEN);
    await w.page.keyboard.press('Enter');
    await dashboardShown(w.page);
    await expect.poll(() => w.page.locator('#incidents article').count()).toBe(2);
    await expect.poll(async () => (await shownUploads(w.page)).map((u) => u.state).sort()).toEqual(['done', 'failed', 'uploading']);

    const phone = await w.page.evaluate(() => ({
      scrollWidth: document.documentElement.scrollWidth,
      bodyScrollWidth: document.body.scrollWidth,
      innerWidth: window.innerWidth,
    }));
    expect(phone).toEqual({ scrollWidth: 390, bodyScrollWidth: 390, innerWidth: 390 });
    // Every control is on screen horizontally, big enough to tap, and named in words.
    const buttons = await w.page.$$eval('#dashboard button, header button', (els) =>
      els
        .filter((b) => (b as HTMLElement).offsetParent !== null)
        .map((b) => {
          const r = b.getBoundingClientRect();
          return { name: b.getAttribute('aria-label') ?? b.textContent ?? '', left: r.left, right: r.right, height: r.height };
        }),
    );
    expect(buttons.map((b) => b.name).sort()).toEqual([
      'Newer incidents',
      'Older incidents',
      'Pause uploads of camera 192.168.0.241 - Camera - Yard north-east corner',
      'Pause uploads of camera Gate',
      `Retry upload #${refused.id} to alo`,
      'Sign out',
    ]);
    for (const b of buttons) {
      expect(b.left, b.name).toBeGreaterThanOrEqual(0);
      expect(b.right, b.name).toBeLessThanOrEqual(390);
      expect(b.height, b.name).toBeGreaterThanOrEqual(36);
    }
    // States in words, not colour alone.
    const words = await w.page.locator('#incidents').innerText();
    expect(words).toMatch(/Done · 1\.0 MiB of 1\.0 MiB · 100 %/);
    expect(words).toMatch(/Uploading · \d+\.\d MiB of 40\.0 MiB/);
    expect(words).toMatch(/Failed · 0 B of 1\.0 MiB · 0 %/);
    expect(words).toMatch(/Failed exports\s+Failed Gate · yard-3: G64 export failed with: No video available/);
    await screenshot(w.page, 'status-page-phone.png');

    // Tab to the gate camera's button; the focus is visible; Enter pauses it; the focus stays on it across refreshes.
    const pauseGate = 'Pause uploads of camera Gate';
    for (let i = 0; i < 40 && (await w.page.evaluate(() => document.activeElement?.getAttribute('aria-label'))) !== pauseGate; i++) {
      await w.page.keyboard.press('Tab');
    }
    const focused = await w.page.evaluate(() => {
      const el = document.activeElement as HTMLElement;
      const style = getComputedStyle(el);
      return {
        name: el.getAttribute('aria-label'),
        outline: `${style.outlineStyle} ${style.outlineWidth}`,
        visible: el.matches(':focus-visible'),
      };
    });
    expect(focused).toEqual({ name: pauseGate, outline: 'solid 3px', visible: true });
    await w.page.keyboard.press('Enter');
    await expect.poll(async () => (await api.get<{ state: string }>('/cameras/cam-gate')).state).toBe('paused');
    await expect
      .poll(() => w.page.evaluate(() => document.activeElement?.getAttribute('aria-label')))
      .toBe('Resume uploads of camera Gate');
    await sleep(2_500);
    expect(await w.page.evaluate(() => document.activeElement?.getAttribute('aria-label'))).toBe('Resume uploads of camera Gate');
    await w.page.keyboard.press('Enter');
    await expect.poll(async () => (await api.get<{ state: string }>('/cameras/cam-gate')).state).toBe('running');

    // On a laptop, as it opens (the token kept in the tab).
    await w.page.setViewportSize(LAPTOP);
    await w.page.reload();
    await dashboardShown(w.page);
    await expect.poll(() => w.page.locator('#incidents li.upload').count()).toBe(3);
    expect(await w.page.evaluate(() => document.documentElement.scrollWidth)).toBe(LAPTOP.width);
    await screenshot(w.page, 'status-page-laptop.png');
    // The README's picture (docs/status-page.png is a copy): down to the first incident's failures.
    await w.page.setViewportSize({ width: 980, height: 1250 });
    await screenshot(w.page, 'status-page-readme.png', { fullPage: false });
    expect(ARTIFACTS).toMatch(/test-artifacts$/);
    await expectCleanPage(w);
  });
});

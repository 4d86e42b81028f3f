/**
 * The status page over a ledger of 10,000 incidents (20,000 videos, every tenth incident with a
 * failed export, one upload in fifty refused) loads in under a second: it asks for the newest 20
 * incidents, read along an index, never for all of them. The ledger is filled through the
 * ledger's own stages (test/support/big-ledger.ts), then the real daemon serves it.
 */
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cpuSeconds } from '../../scripts/bench-proc.js';
import { bigIncidentId, fillLedger } from '../support/big-ledger.js';
import { harness } from '../support/harness.js';
import { API_TOKEN, ApiClient, apiSection } from '../support/local-api.js';
import { launchChromium, openPage, screenshot } from './browser.js';

const INCIDENTS = 10_000;
const CAMERAS = 8;
const PAGE_SIZE = 20;
const LOAD_LIMIT_MS = 1_000;
/**
 * The daemon's CPU per load (three requests), however many incidents: a few ms of queries along
 * indexes. Reading every video's row per request, as the cameras once did, cost 0.7–1 s here.
 */
const DAEMON_CPU_PER_LOAD_MS = 200;
const incidentId = bigIncidentId;

/** The page fully drawn: the header, every camera, and a page of incidents starting with `firstId`. */
async function drawn(page: Page, firstId: string): Promise<void> {
  await page.waitForFunction(
    ({ first, size, total, cameras }) =>
      document.querySelector('#daemon dl') !== null &&
      document.querySelectorAll('#cameras li.card').length === cameras &&
      document.querySelectorAll('#incidents article').length === size &&
      document.querySelector<HTMLElement>('#incidents article')?.dataset.incidentId === first &&
      (document.querySelector('#incident-range')?.textContent ?? '').includes(`of ${total}`),
    { first: firstId, size: PAGE_SIZE, total: INCIDENTS, cameras: CAMERAS },
    { polling: 'raf', timeout: 30_000 },
  );
}

interface DrawTimes {
  /** performance.now() (ms from the navigation's start) of each drawing of each part. */
  daemon: number[];
  cameras: number[];
  incidents: number[];
}

/**
 * Measures in the page, from its navigation's start, when each part of it is drawn: the time the
 * person waits, without the test's own polling and round trips through the browser's protocol.
 */
async function recordDrawTimes(page: Page): Promise<void> {
  await page.addInitScript(() => {
    const times: DrawTimes = { daemon: [], cameras: [], incidents: [] };
    (window as unknown as { drawTimes: DrawTimes }).drawTimes = times;
    new MutationObserver((mutations) => {
      const at = performance.now();
      for (const part of ['daemon', 'cameras', 'incidents'] as const) {
        if (mutations.some((m) => (m.target as Element).id === part)) times[part].push(at);
      }
    }).observe(document, { childList: true, subtree: true });
  });
}

const drawTimes = (page: Page): Promise<DrawTimes> => page.evaluate(() => (window as unknown as { drawTimes: DrawTimes }).drawTimes);

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ms = (x: number): string => `${x.toFixed(0)} ms`;
const figures = (xs: number[]): string => `${xs.map(ms).join(', ')}; median ${ms(median(xs))}, max ${ms(Math.max(...xs))}`;

describe('status page over 10,000 incidents', () => {
  let browser: Browser;
  beforeAll(async () => {
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
  });

  it('loads in under a second, a page of 20 at a time, newest first', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site({ sections: apiSection() });
    const fillStart = performance.now();
    await fillLedger(s.ledgerPath, s.exportsRoot, { incidents: INCIDENTS, cameras: CAMERAS });
    const fillMs = performance.now() - fillStart;
    const daemon = h.daemon(s);
    const api = await ApiClient.of(daemon);

    // The API on its own: what one refresh asks for.
    const apiMs: Record<string, number[]> = {};
    for (let round = 0; round < 5; round++) {
      for (const path of ['/status', '/cameras', `/incidents?order=newest&limit=${PAGE_SIZE}`]) {
        const t = performance.now();
        const r = await api.call('GET', path);
        (apiMs[path] ??= []).push(performance.now() - t);
        expect(r.status, path).toBe(200);
      }
    }

    const w = await openPage(browser);
    await recordDrawTimes(w.page);
    await w.page.goto(`${api.origin}/`);
    await w.page.locator('#token').fill(API_TOKEN);
    await w.page.locator('#token').press('Enter');
    await drawn(w.page, incidentId(INCIDENTS - 1));

    // Loads: the page reloaded (the token kept in the tab) until every part is drawn; in the page
    // from the navigation's start, and around it as the test sees it.
    const inPage: number[] = [];
    const aroundIt: number[] = [];
    const cpuBefore = await cpuSeconds(daemon.pid);
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      await w.page.reload();
      await drawn(w.page, incidentId(INCIDENTS - 1));
      aroundIt.push(performance.now() - t);
      const times = await drawTimes(w.page);
      inPage.push(Math.max(times.daemon[0]!, times.cameras[0]!, times.incidents[0]!));
    }
    // Background refreshes included (every 2 s), so this errs high.
    const cpuPerLoadMs = ((await cpuSeconds(daemon.pid)) - cpuBefore) * 200;
    const shownIds = await w.page.$$eval('#incidents article', (els) => els.map((e) => (e as HTMLElement).dataset.incidentId));
    expect(shownIds).toEqual(Array.from({ length: PAGE_SIZE }, (_, k) => incidentId(INCIDENTS - 1 - k)));
    expect(await w.page.locator('#incident-range').textContent()).toBe(`Incidents 1–${PAGE_SIZE} of ${INCIDENTS}, newest first.`);
    expect(await w.page.locator('#daemon').innerText()).toMatch(/Incidents\s+10000/);
    await screenshot(w.page, 'status-page-10000-incidents.png', { fullPage: false });

    // The next pages, and back: each one page of 20 along the index.
    const clickedAt = await w.page.evaluate(() => performance.now());
    await w.page.getByRole('button', { name: 'Older incidents' }).click();
    await drawn(w.page, incidentId(INCIDENTS - 1 - PAGE_SIZE));
    const olderMs = (await drawTimes(w.page)).incidents.find((t) => t > clickedAt)! - clickedAt;
    await w.page.getByRole('button', { name: 'Older incidents' }).click();
    await drawn(w.page, incidentId(INCIDENTS - 1 - 2 * PAGE_SIZE));
    expect(await w.page.locator('#incident-range').textContent()).toBe(`Incidents 41–60 of ${INCIDENTS}, newest first.`);
    await w.page.getByRole('button', { name: 'Newer incidents' }).click();
    await drawn(w.page, incidentId(INCIDENTS - 1 - PAGE_SIZE));

    // Never more than a page asked for.
    const incidentCalls = w.requests.filter((r) => new URL(r.url).pathname === '/incidents').map((r) => new URL(r.url).searchParams);
    expect(incidentCalls.length).toBeGreaterThan(0);
    expect(incidentCalls.every((q) => q.get('limit') === String(PAGE_SIZE) && q.get('order') === 'newest')).toBe(true);
    expect(w.errors).toEqual([]);

    console.log(
      [
        `${INCIDENTS} incidents: ledger filled through its stages in ${ms(fillMs)}`,
        `reload until every part is drawn, in the page from the navigation's start (5 runs): ${figures(inPage)}`,
        `the same as the test sees it, with its polling and the browser protocol's round trips: ${figures(aroundIt)}`,
        `the daemon's CPU per load (user + system, background refreshes included): ${ms(cpuPerLoadMs)}`,
        `"Older incidents" to the next page drawn: ${ms(olderMs)}`,
        ...Object.entries(apiMs).map(([path, xs]) => `GET ${path}: ${figures(xs)}`),
      ].join('\n'),
    );
    // The median of five: on a machine shared with other work, one load may wait for a core.
    expect(median(inPage)).toBeLessThan(LOAD_LIMIT_MS);
    expect(cpuPerLoadMs).toBeLessThan(DAEMON_CPU_PER_LOAD_MS);
  });
});

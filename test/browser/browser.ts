/**
 * Headless Chromium for the status page's tests: Debian's /usr/bin/chromium (CHROMIUM_PATH names
 * another), driven by playwright-core. No browser is ever downloaded; without Chromium the tests
 * fail saying how to install it.
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { CLI } from '../support/daemon-process.js';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** Screenshots land here (git-ignored): test-artifacts/ at the repository's root. */
export const ARTIFACTS = join(dirname(dirname(dirname(CLI))), 'test-artifacts');

export const LAPTOP = { width: 1280, height: 900 };
export const PHONE = { width: 390, height: 844 };

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: install Debian's (apt-get install -y chromium, as .ci/run does) or set CHROMIUM_PATH`);
  }
  return chromium.launch({ executablePath: CHROMIUM, headless: true });
}

/** What a page did that a test checks afterwards: dialogs, script errors, CSP violations, the requests it sent. */
export interface WatchedPage {
  page: Page;
  /** Messages of alert/confirm/prompt dialogs (each dismissed). */
  dialogs: string[];
  /** Uncaught script errors and console errors. */
  errors: string[];
  /** Every request: its URL and Authorization header. */
  requests: Array<{ method: string; url: string; authorization: string | undefined }>;
  /** The Content-Security-Policy violations the page reported (directive and what was blocked). */
  cspViolations(): Promise<string[]>;
}

export interface PageOptions {
  viewport?: { width: number; height: number };
  /** Runs the page without its Content-Security-Policy: shows that the page itself never runs data as markup. */
  bypassCSP?: boolean;
}

/** A fresh browser context (its own sessionStorage) and page, watched. */
export async function openPage(browser: Browser, options: PageOptions = {}): Promise<WatchedPage> {
  const context = await browser.newContext({ viewport: options.viewport ?? LAPTOP, bypassCSP: options.bypassCSP ?? false });
  const page = await context.newPage();
  await page.addInitScript(() => {
    const seen: string[] = [];
    (window as unknown as { cspViolations: string[] }).cspViolations = seen;
    document.addEventListener('securitypolicyviolation', (e) => seen.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  const watched: WatchedPage = {
    page,
    dialogs: [],
    errors: [],
    requests: [],
    cspViolations: () => page.evaluate(() => (window as unknown as { cspViolations: string[] }).cspViolations),
  };
  page.on('dialog', (dialog) => {
    watched.dialogs.push(dialog.message());
    void dialog.dismiss();
  });
  page.on('pageerror', (err) => watched.errors.push(err.message));
  page.on('console', (msg) => {
    if (msg.type() === 'error') watched.errors.push(msg.text());
  });
  page.on('request', (req) => watched.requests.push({ method: req.method(), url: req.url(), authorization: req.headers().authorization }));
  return watched;
}

/** Saves a screenshot under test-artifacts/: the whole page, or what the viewport shows. */
export async function screenshot(page: Page, name: string, { fullPage = true } = {}): Promise<string> {
  await mkdir(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, name);
  await page.screenshot({ path, fullPage });
  return path;
}

/**
 * What a fleet's Prometheus and Grafana get: contrib/prometheus/vms-uplink.rules.yml checked and
 * unit-tested by promtool, every query of the rules and of contrib/grafana/vms-uplink.json
 * naming only series a running daemon really exports, and the build's version in its scrape.
 */
import { spawnSync } from 'node:child_process';
import { statfsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { CLI, PACKAGE_VERSION, USER_AGENT, waitFor } from '../support/daemon-process.js';
import { MiB } from '../support/files.js';
import { harness } from '../support/harness.js';
import { ledgerRowsSoFar } from '../support/ledger.js';
import { ApiClient, apiSection, parsePrometheus, sampleValue, type Sample } from '../support/local-api.js';
import { writeIncident } from '../support/manifest.js';

const ROOT = join(dirname(CLI), '..', '..');
const RULES = join(ROOT, 'contrib', 'prometheus', 'vms-uplink.rules.yml');
const RULE_TESTS = join(ROOT, 'contrib', 'prometheus', 'vms-uplink.rules.test.yml');
const DASHBOARD = join(ROOT, 'contrib', 'grafana', 'vms-uplink.json');

interface RuleFile {
  groups: Array<{ name: string; rules: Array<{ alert?: string; record?: string; expr: string }> }>;
}

interface RuleTests {
  tests: Array<{ alert_rule_test?: Array<{ alertname: string; exp_alerts?: unknown[] }> }>;
}

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { type: string; uid: string };
  targets?: Array<{ expr: string; datasource?: { uid: string } }>;
}

interface Dashboard {
  title: string;
  uid: string;
  schemaVersion: number;
  panels: Panel[];
  templating: { list: Array<{ name: string; type: string; query: string | { query: string }; datasource?: { uid: string } }> };
}

async function rules(): Promise<RuleFile> {
  return parseYaml(await readFile(RULES, 'utf8')) as RuleFile;
}

async function dashboard(): Promise<Dashboard> {
  return JSON.parse(await readFile(DASHBOARD, 'utf8')) as Dashboard;
}

/** Every PromQL query of the dashboard: its panels' and its variables' (label_values' selector). */
function dashboardQueries(d: Dashboard): Array<{ where: string; expr: string }> {
  const queries = d.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ where: `panel "${p.title}"`, expr: t.expr })));
  for (const v of d.templating.list.filter((t) => t.type === 'query')) {
    const query = typeof v.query === 'string' ? v.query : v.query.query;
    const selector = /^label_values\((.*),\s*\w+\)$/.exec(query)?.[1];
    if (!selector) throw new Error(`variable ${v.name}: not a label_values(selector, label) query: ${query}`);
    queries.push({ where: `variable $${v.name}`, expr: selector });
  }
  return queries;
}

/** The query as Grafana sends it with every box and target selected. */
function asGrafanaSends(expr: string): string {
  return expr.replaceAll('$__rate_interval', '5m').replaceAll('$instance', '.*').replaceAll('$target', '.*');
}

/** The daemon's series a query names, with the label values it asks for exactly (`filesystem="ledger"`). */
function seriesNamed(expr: string): Array<{ name: string; equal: Record<string, string> }> {
  const found: Array<{ name: string; equal: Record<string, string> }> = [];
  // Outside string literals only: a label value is not a series name.
  const code = expr.replace(/"(?:[^"\\]|\\.)*"/g, (literal) => literal.replace(/\w/g, 'x'));
  for (const m of code.matchAll(/\bvms_uplink_\w+/g)) {
    const rest = expr.slice(m.index + m[0].length);
    const matchers = /^\s*\{([^}]*)\}/.exec(rest)?.[1] ?? '';
    const equal = Object.fromEntries([...matchers.matchAll(/(\w+)\s*=\s*"([^"]*)"/g)].map((e) => [e[1]!, e[2]!]));
    found.push({ name: m[0], equal });
  }
  return found;
}

/** Runs promtool; a machine without it fails here, saying what to install (CI's .ci/run installs it). */
function promtool(...args: string[]): { code: number | null; output: string } {
  const r = spawnSync('promtool', args, { encoding: 'utf8', cwd: ROOT });
  if (r.error) {
    throw new Error(`promtool could not be run (${r.error.message}): install Debian's prometheus package (apt-get install prometheus)`, {
      cause: r.error,
    });
  }
  return { code: r.status, output: `${r.stdout}${r.stderr}` };
}

describe('alert rules and dashboard', () => {
  it('promtool accepts the rules and their unit tests pass; every alert is tested both firing and not firing', async () => {
    const check = promtool('check', 'rules', RULES);
    expect(check.code, check.output).toBe(0);
    const alerts = (await rules()).groups.flatMap((g) => g.rules.map((r) => r.alert)).filter((a) => a !== undefined);
    expect(check.output).toContain(`SUCCESS: ${alerts.length} rules found`);

    const unit = promtool('test', 'rules', RULE_TESTS);
    expect(unit.code, unit.output).toBe(0);
    expect(unit.output).toContain('SUCCESS');

    const cases = (parseYaml(await readFile(RULE_TESTS, 'utf8')) as RuleTests).tests.flatMap((t) => t.alert_rule_test ?? []);
    for (const alert of alerts) {
      const mine = cases.filter((c) => c.alertname === alert);
      expect(
        mine.some((c) => (c.exp_alerts ?? []).length > 0),
        `${alert} has a case where it fires`,
      ).toBe(true);
      expect(
        mine.some((c) => (c.exp_alerts ?? []).length === 0),
        `${alert} has a case where it does not fire`,
      ).toBe(true);
    }
    expect(alerts).toEqual(
      expect.arrayContaining([
        'VmsUplinkDown',
        'VmsUplinkAbsent',
        'VmsUplinkTargetFailing',
        'VmsUplinkOldExportWaiting',
        'VmsUplinkBacklogGrowing',
        'VmsUplinkDiskLow',
        'VmsUplinkUploadsFailed',
        'VmsUplinkMixedVersions',
      ]),
    );
  });

  it('the dashboard is a Grafana dashboard: a templated data source, a target variable, one row per concern, panels that do not overlap, queries promtool parses', async () => {
    const d = await dashboard();
    expect(d.schemaVersion).toBeGreaterThanOrEqual(36);
    expect(d.uid).toBe('vms-uplink');
    const variables = new Map(d.templating.list.map((v) => [v.name, v]));
    expect(variables.get('datasource')).toMatchObject({ type: 'datasource', query: 'prometheus' });
    expect(variables.get('target')).toMatchObject({ type: 'query', datasource: { uid: '${datasource}' } });

    const rows = d.panels.filter((p) => p.type === 'row').map((p) => p.title);
    expect(rows).toEqual(['Throughput', 'Queue and age', 'Errors and retries per target', 'Disk and bandwidth', 'Daemons and versions']);
    expect(new Set(d.panels.map((p) => p.id)).size).toBe(d.panels.length);
    for (const [i, p] of d.panels.entries()) {
      const { x, y, w, h } = p.gridPos;
      expect(x >= 0 && w > 0 && h > 0 && y >= 0 && x + w <= 24, `panel "${p.title}" fits the 24-column grid`).toBe(true);
      for (const other of d.panels.slice(i + 1)) {
        const apart =
          x + w <= other.gridPos.x ||
          other.gridPos.x + other.gridPos.w <= x ||
          y + h <= other.gridPos.y ||
          other.gridPos.y + other.gridPos.h <= y;
        expect(apart, `panels "${p.title}" and "${other.title}" overlap`).toBe(true);
      }
      if (p.type === 'row') continue;
      expect(p.datasource?.uid, `panel "${p.title}" uses the templated data source`).toBe('${datasource}');
      expect(p.targets?.length, `panel "${p.title}" has a query`).toBeGreaterThan(0);
    }
    // Each panel under the row it belongs to: the rows' order by y is the panels' order.
    const byY = [...d.panels].sort((a, b) => a.gridPos.y - b.gridPos.y || a.gridPos.x - b.gridPos.x);
    expect(byY.map((p) => p.id)).toEqual(d.panels.map((p) => p.id));

    // promtool parses PromQL when it checks rules: every query, as Grafana sends it, as a recording rule.
    const dir = await mkdtemp(join(tmpdir(), 'vms-uplink-dashboard-'));
    try {
      const file = join(dir, 'dashboard.rules.yml');
      const queries = dashboardQueries(d);
      const recorded = queries.map((q, i) => ({ record: `dashboard:query_${i}`, expr: asGrafanaSends(q.expr) }));
      await writeFile(file, stringifyYaml({ groups: [{ name: 'dashboard', rules: recorded }] }));
      const check = promtool('check', 'rules', file);
      expect(check.code, check.output).toBe(0);
      expect(check.output).toContain(`SUCCESS: ${queries.length} rules found`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('names only series a running daemon exports: scraped after an upload, a retry and a failure, with the build and the disks in the scrape', async (ctx) => {
    const h = harness(ctx);
    const s = await h.site({ sections: apiSection(), ledger: { min_free: '1MiB' } });
    // One 503 (a retry), and one video ALO refuses for good (a failed upload).
    s.alo.failNext('upload_urls', 1, 503);
    s.alo.refuseFile('mon-refused', 'file type not accepted by this organisation');
    await writeIncident(s.exportsRoot, 'inc-mon', [
      { id: 'mon-ok', file: 'ok.mp4', size: 1 * MiB },
      { id: 'mon-refused', file: 'refused.mp4', size: 1 * MiB },
    ]);
    const d = h.daemon(s);
    const api = await ApiClient.of(d);
    await waitFor(
      () => {
        const states = ledgerRowsSoFar<{ video_id: string; state: string }>(
          s.ledgerPath,
          `SELECT video_id, state FROM uploads WHERE incident_id = 'inc-mon' ORDER BY video_id`,
        );
        return states.map((r) => `${r.video_id}:${r.state}`).join(' ') === 'mon-ok:done mon-refused:failed';
      },
      30_000,
      'one upload done and one failed',
    );
    const reply = await api.call('GET', '/metrics');
    expect(reply.status).toBe(200);
    const samples = parsePrometheus(reply.text);

    // The activity the alerts watch for really shows.
    expect(sampleValue(samples, 'vms_uplink_uploads_failed_total', { target: 'alo' })).toBe(1);
    expect(sampleValue(samples, 'vms_uplink_retries_total', { target: 'alo', reason: 'http_503' })).toBe(1);

    // Which build runs: exactly one build_info sample, with the version package.json gives.
    expect(samples.filter((x) => x.name === 'vms_uplink_build_info')).toEqual([
      { name: 'vms_uplink_build_info', labels: { version: PACKAGE_VERSION, node: process.versions.node }, value: 1 },
    ]);
    // Disks as statfs sees them now (free space moves with other work on the machine: within 1 %).
    expect(sampleValue(samples, 'vms_uplink_ledger_min_free_bytes')).toBe(1 * MiB);
    for (const [filesystem, dir] of [
      ['ledger', dirname(s.ledgerPath)],
      ['exports', s.exportsRoot],
    ] as const) {
      const fs = statfsSync(dir);
      const size = Number(fs.blocks) * Number(fs.bsize);
      expect(sampleValue(samples, 'vms_uplink_filesystem_size_bytes', { filesystem })).toBe(size);
      const free = sampleValue(samples, 'vms_uplink_filesystem_free_bytes', { filesystem });
      expect(Math.abs(free - Number(fs.bavail) * Number(fs.bsize))).toBeLessThan(size / 100);
    }

    const queries = [
      ...(await rules()).groups.flatMap((g) => g.rules.map((r) => ({ where: `rule ${r.alert ?? r.record}`, expr: r.expr }))),
      ...dashboardQueries(await dashboard()),
    ];
    const named = queries.flatMap((q) => seriesNamed(q.expr).map((series) => ({ ...series, where: q.where })));
    // Not a vacuous check: the rules and the dashboard name most of what the daemon exports.
    expect(new Set(named.map((n) => n.name)).size).toBeGreaterThanOrEqual(12);
    const missing = named.filter((n) => !samples.some((x) => x.name === n.name && matches(x, n.equal)));
    expect(missing.map((n) => `${n.where}: ${n.name}${JSON.stringify(n.equal)}`)).toEqual([]);

    // And the requests it made to get there carried its version.
    expect(s.alo.arrivals.filter((a) => a.userAgent !== USER_AGENT)).toEqual([]);
    expect(s.store.requests.filter((r) => r.headers['user-agent'] !== USER_AGENT)).toEqual([]);
    expect(s.store.requests.length).toBeGreaterThan(0);
  });
});

function matches(sample: Sample, equal: Record<string, string>): boolean {
  return Object.entries(equal).every(([label, value]) => sample.labels[label] === value);
}

/**
 * `npm run soak -- --minutes N [--steady-minutes N] [--seed N] [--max-size MiB]`: test/support/soak.ts,
 * N minutes with kills (default 30), then a steady phase without kills (default 10 minutes), printing
 * RSS and open file descriptors over time. Exits 1 when an export is lost, sent twice or altered,
 * the ledger fails integrity_check, or RSS or descriptors of the steady phase's one process grow.
 */
import { MiB } from '../test/support/files.js';
import { runSoak, type SoakOptions } from '../test/support/soak.js';

const USAGE = 'usage: npm run soak -- [--minutes N] [--steady-minutes N] [--seed N] [--max-size MiB]';
/**
 * Growth allowed for the steady phase's one process, from the third to the last quarter of the
 * phase: its RSS floor, all its descriptors, those on files (as in test/e2e/soak.test.ts, where
 * the phase is 25 s and the RSS allowance wider).
 */
const RSS_SLACK = 1.1;
const FD_SLACK = 6;
const FILE_SLACK = 2;

function parseArgs(argv: string[]): SoakOptions {
  const options: SoakOptions = {
    seconds: 30 * 60,
    exportEveryMs: 4000,
    faultEveryMs: 7000,
    lifetimeMs: [20_000, 60_000],
    steadySeconds: 10 * 60,
    maxSize: 48 * MiB,
    concurrency: 4,
    seed: Date.now() % 1_000_000,
  };
  for (let i = 0; i < argv.length; i += 2) {
    const value = Number(argv[i + 1]);
    if (!Number.isFinite(value) || value <= 0) throw new Error(`${argv[i]} needs a positive number\n${USAGE}`);
    if (argv[i] === '--minutes') options.seconds = value * 60;
    else if (argv[i] === '--steady-minutes') options.steadySeconds = value * 60;
    else if (argv[i] === '--seed') options.seed = value;
    else if (argv[i] === '--max-size') options.maxSize = value * MiB;
    else throw new Error(`unknown option ${argv[i]}\n${USAGE}`);
  }
  return options;
}

const options = parseArgs(process.argv.slice(2));
console.log(
  `soak: ${(options.seconds / 60).toFixed(1)} min with a SIGKILL every 20–60 s, then ${(options.steadySeconds / 60).toFixed(1)} min without; an incident every ${options.exportEveryMs / 1000} s, a fault burst every ${options.faultEveryMs / 1000} s, seed ${options.seed}`,
);
const r = await runSoak(options, (line) => console.log(`  ${line}`));
const mb = (n: number): string => `${(n / 1e6).toFixed(0)} MB`;
console.log('\nRSS and open descriptors of the daemon, per minute (max; which process, and the steady phase marked):');
for (let minute = 0; minute * 60 < options.seconds + options.steadySeconds; minute++) {
  const inMinute = r.samples.filter((s) => s.at >= minute * 60 && s.at < (minute + 1) * 60);
  if (inMinute.length === 0) continue;
  const pids = [...new Set(inMinute.map((s) => s.pid))];
  console.log(
    `  min ${String(minute + 1).padStart(3)}: RSS ${mb(Math.max(...inMinute.map((s) => s.rssBytes))).padStart(7)}, fds ${Math.max(...inMinute.map((s) => s.fds))}, pid ${pids.join(' ')}${pids.every((p) => p === r.steady.pid) ? ' (steady)' : ''}`,
  );
}
const rssOk = r.steady.samples.length > 0 && r.steady.rssLate <= r.steady.rssEarly * RSS_SLACK;
const fdsOk =
  r.steady.samples.length > 0 && r.steady.fdsLate <= r.steady.fdsEarly + FD_SLACK && r.steady.filesLate <= r.steady.filesEarly + FILE_SLACK;
console.log(`
incidents / videos:    ${r.incidents} / ${r.videos}, ${(r.bytes / MiB).toFixed(0)} MiB
kills survived:        ${r.kills}; fault bursts injected: ${r.faults}
integrity_check:       ${r.integrityFailures.length === 0 ? 'ok after every kill' : r.integrityFailures.join('; ')}
re-sent:               ${(r.resent.bytes / MiB).toFixed(1)} MiB in ${r.resent.parts} parts (allowed by the kills: ${(r.resendAllowance / MiB).toFixed(0)} MiB)
RSS of one process:    pid ${r.steady.pid}, ${r.steady.samples.length} samples over ${(r.steady.to - r.steady.from).toFixed(0)} s without kills: ${mb(r.steady.rssEarly)} → ${mb(r.steady.rssLate)} (lowest in the third and in the last quarter) ${rssOk ? 'flat' : 'GREW'}
fds of one process:    ${r.steady.fdsEarly} → ${r.steady.fdsLate}, of them on files ${r.steady.filesEarly} → ${r.steady.filesLate} (medians) ${fdsOk ? 'flat' : 'GREW'}
problems:              ${r.problems.length === 0 ? 'none' : ''}`);
for (const p of r.problems) console.log(`  - ${p}`);
const ok = rssOk && fdsOk && r.problems.length === 0 && r.integrityFailures.length === 0 && r.resent.bytes <= r.resendAllowance;
console.log(ok ? '\nsoak OK' : '\nsoak FAILED');
process.exit(ok ? 0 : 1);

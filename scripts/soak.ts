/**
 * `npm run soak -- --minutes N [--seed N] [--max-size MiB]`: test/support/soak.ts for N minutes
 * (default 30), printing RSS and open file descriptors over time. Exits 1 when an export is lost,
 * sent twice or altered, the ledger fails integrity_check, or RSS or descriptors grow.
 */
import { MiB } from '../test/support/files.js';
import { runSoak, type SoakOptions } from '../test/support/soak.js';

const USAGE = 'usage: npm run soak -- [--minutes N] [--seed N] [--max-size MiB]';
/** Growth allowed between the first and the last third of the run. */
const RSS_SLACK = 1.25;
const FD_SLACK = 8;

function parseArgs(argv: string[]): SoakOptions {
  const options: SoakOptions = {
    seconds: 30 * 60,
    exportEveryMs: 4000,
    faultEveryMs: 7000,
    lifetimeMs: [20_000, 60_000],
    maxSize: 48 * MiB,
    concurrency: 4,
    seed: Date.now() % 1_000_000,
  };
  for (let i = 0; i < argv.length; i += 2) {
    const value = Number(argv[i + 1]);
    if (!Number.isFinite(value) || value <= 0) throw new Error(`${argv[i]} needs a positive number\n${USAGE}`);
    if (argv[i] === '--minutes') options.seconds = value * 60;
    else if (argv[i] === '--seed') options.seed = value;
    else if (argv[i] === '--max-size') options.maxSize = value * MiB;
    else throw new Error(`unknown option ${argv[i]}\n${USAGE}`);
  }
  return options;
}

const options = parseArgs(process.argv.slice(2));
console.log(
  `soak: ${(options.seconds / 60).toFixed(1)} min, an incident every ${options.exportEveryMs / 1000} s, a fault burst every ${options.faultEveryMs / 1000} s, SIGKILL every 20–60 s, seed ${options.seed}`,
);
const r = await runSoak(options, (line) => console.log(`  ${line}`));
const mb = (n: number): string => `${(n / 1e6).toFixed(0)} MB`;
console.log('\nRSS and open descriptors of the daemon, per minute (max):');
for (let minute = 0; minute * 60 < options.seconds; minute++) {
  const inMinute = r.samples.filter((s) => s.at >= minute * 60 && s.at < (minute + 1) * 60);
  if (inMinute.length === 0) continue;
  console.log(
    `  min ${String(minute + 1).padStart(3)}: RSS ${mb(Math.max(...inMinute.map((s) => s.rssBytes))).padStart(7)}, fds ${Math.max(...inMinute.map((s) => s.fds))}`,
  );
}
const rssOk = r.trend.rssLate <= r.trend.rssEarly * RSS_SLACK;
const fdsOk = r.trend.fdsLate <= r.trend.fdsEarly + FD_SLACK;
console.log(`
incidents / videos:    ${r.incidents} / ${r.videos}, ${(r.bytes / MiB).toFixed(0)} MiB
kills survived:        ${r.kills}; fault bursts injected: ${r.faults}
integrity_check:       ${r.integrityFailures.length === 0 ? 'ok after every kill' : r.integrityFailures.join('; ')}
re-sent:               ${(r.resent.bytes / MiB).toFixed(1)} MiB in ${r.resent.parts} parts (allowed by the kills: ${(r.resendAllowance / MiB).toFixed(0)} MiB)
RSS trend:             ${mb(r.trend.rssEarly)} early → ${mb(r.trend.rssLate)} late (median of the samples) ${rssOk ? 'flat' : 'GREW'}
fd trend:              ${r.trend.fdsEarly} early → ${r.trend.fdsLate} late ${fdsOk ? 'flat' : 'GREW'}
problems:              ${r.problems.length === 0 ? 'none' : ''}`);
for (const p of r.problems) console.log(`  - ${p}`);
const ok = rssOk && fdsOk && r.problems.length === 0 && r.integrityFailures.length === 0 && r.resent.bytes <= r.resendAllowance;
console.log(ok ? '\nsoak OK' : '\nsoak FAILED');
process.exit(ok ? 0 : 1);

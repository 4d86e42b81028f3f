/**
 * `npm run crash-loop [-- --incidents 20 --videos 2 --kills 50 --max-size 300MiB --seed N]`:
 * the crash loop of test/support/crash-loop.ts at full size, with its figures. Exits 1 when any
 * promise is broken.
 */
import { MiB } from '../test/support/files.js';
import { runCrashLoop, type CrashLoopOptions } from '../test/support/crash-loop.js';

const USAGE =
  'usage: npm run crash-loop -- [--incidents N] [--videos N] [--kills N] [--max-size MiB] [--seed N] [--latency MS per part answer, default 150]';

function parseArgs(argv: string[]): CrashLoopOptions {
  const options: CrashLoopOptions = {
    incidents: 20,
    videosPerIncident: 2,
    kills: 50,
    maxSize: 300 * MiB,
    killAfterMs: [300, 4000],
    seed: Date.now() % 1_000_000,
    concurrency: 4,
    partSize: 8 * MiB,
    partLatencyMs: 150,
    finishTimeoutMs: 20 * 60_000,
  };
  for (let i = 0; i < argv.length; i += 2) {
    const value = Number(argv[i + 1]);
    if (!Number.isFinite(value) || value < 0) throw new Error(`${argv[i]} needs a number\n${USAGE}`);
    if (argv[i] === '--incidents') options.incidents = value;
    else if (argv[i] === '--videos') options.videosPerIncident = value;
    else if (argv[i] === '--kills') options.kills = value;
    else if (argv[i] === '--max-size') options.maxSize = value * MiB;
    else if (argv[i] === '--seed') options.seed = value;
    else if (argv[i] === '--latency') options.partLatencyMs = value;
    else throw new Error(`unknown option ${argv[i]}\n${USAGE}`);
  }
  return options;
}

const options = parseArgs(process.argv.slice(2));
const at = Date.now();
const say = (line: string): void => console.log(`[${((Date.now() - at) / 1000).toFixed(0).padStart(4)} s] ${line}`);
say(
  `crash loop: ${options.incidents} incidents × ${options.videosPerIncident} videos up to ${options.maxSize / MiB} MiB over 4 platforms, ${options.kills} SIGKILLs, seed ${options.seed}`,
);
const r = await runCrashLoop(options, say);
const mib = (n: number): string => `${(n / MiB).toFixed(1)} MiB`;
console.log(`
kills survived:        ${r.kills} (${r.killsMidUpload} with uploads under way, ${r.killsMidParts} leaving an upload with parts done and parts not)
resumed:               ${r.resumedUploads.length} uploads cut mid-parts by a kill, each resumed and done
videos:                ${r.videos}, ${mib(r.bytes)} in all
integrity_check:       ${r.integrityFailures.length === 0 ? `ok after all ${r.kills} kills` : r.integrityFailures.join('; ')}
re-sent:               ${mib(r.resent.bytes)} in ${r.resent.parts} parts (allowed by the kills: ${mib(r.resendAllowance)})
wall time:             ${r.seconds.toFixed(0)} s
problems:              ${r.problems.length === 0 ? 'none: every export arrived once, byte-identical; every ALO report complete' : ''}`);
for (const p of r.problems) console.log(`  - ${p}`);
const ok = r.killsMidParts > 0 && r.problems.length === 0 && r.integrityFailures.length === 0 && r.resent.bytes <= r.resendAllowance;
console.log(ok ? '\ncrash loop OK' : '\ncrash loop FAILED');
process.exit(ok ? 0 : 1);

/**
 * How `status` writes sizes, rates, percentages and durations, in its table and its bars alike:
 * the same module the status page writes them with.
 */
export { formatBytes, formatDuration, formatRate, percentDone } from '../api/page/units.js';

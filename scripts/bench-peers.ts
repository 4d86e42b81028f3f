/**
 * The peers the daemon is compared with: `rclone copyto` and `aws s3 cp`, each uploading the same
 * file to the same null sink with 16 MiB parts, 4 at once, and dummy credentials.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SINK_ACCESS_KEY_ID, SINK_SECRET_ACCESS_KEY, type NullSink } from './null-sink.js';
import { GNU_TIME, isExecutable, onPath } from './bench-proc.js';

export interface Peer {
  name: string;
  command: string;
  args(file: string, key: string): string[];
  env: NodeJS.ProcessEnv;
}

/**
 * The environment without the caller's AWS and rclone settings: a profile, region or CA bundle of
 * the machine must not reach the peers (rclone refuses to start with AWS_CA_BUNDLE set, for one).
 */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^(AWS_|RCLONE_)/.test(name)));
}

function rclone(sink: NullSink): Peer {
  return {
    name: 'rclone copyto',
    command: 'rclone',
    args: (file, key) => ['copyto', file, `sink:${sink.bucket}/${key}`, '--s3-chunk-size', '16M', '--s3-upload-concurrency', '4'],
    env: {
      ...cleanEnv(),
      RCLONE_CONFIG: '/dev/null',
      RCLONE_CONFIG_SINK_TYPE: 's3',
      RCLONE_CONFIG_SINK_PROVIDER: 'Other',
      RCLONE_CONFIG_SINK_ENDPOINT: sink.origin,
      RCLONE_CONFIG_SINK_REGION: sink.region,
      RCLONE_CONFIG_SINK_ACCESS_KEY_ID: SINK_ACCESS_KEY_ID,
      RCLONE_CONFIG_SINK_SECRET_ACCESS_KEY: SINK_SECRET_ACCESS_KEY,
    },
  };
}

/**
 * payload_signing_enabled = false: over plain http botocore would otherwise SHA-256 every body for
 * its signature, which it does not do against real S3 over https, and which neither the daemon
 * (presigned URLs) nor rclone does (both send UNSIGNED-PAYLOAD).
 */
async function aws(sink: NullSink, dir: string): Promise<Peer> {
  const configFile = join(dir, 'aws-config');
  await writeFile(
    configFile,
    `[default]\nregion = ${sink.region}\ns3 =\n  multipart_chunksize = 16MB\n  max_concurrent_requests = 4\n  addressing_style = path\n  payload_signing_enabled = false\n`,
  );
  return {
    name: 'aws s3 cp',
    command: 'aws',
    args: (file, key) => ['--endpoint-url', sink.origin, 's3', 'cp', file, `s3://${sink.bucket}/${key}`, '--only-show-errors'],
    env: {
      ...cleanEnv(),
      AWS_CONFIG_FILE: configFile,
      AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
      AWS_ACCESS_KEY_ID: SINK_ACCESS_KEY_ID,
      AWS_SECRET_ACCESS_KEY: SINK_SECRET_ACCESS_KEY,
    },
  };
}

/** The peers whose command is on the PATH, and a note for each one left out. */
export async function availablePeers(sink: NullSink, dir: string): Promise<{ peers: Peer[]; notes: string[] }> {
  const hasRclone = await onPath('rclone');
  const hasAws = await onPath('aws');
  const notes = [...(hasRclone ? [] : ['rclone is not on the PATH: skipped']), ...(hasAws ? [] : ['aws is not on the PATH: skipped'])];
  if ((hasRclone || hasAws) && !(await isExecutable(GNU_TIME))) {
    return { peers: [], notes: [...notes, `${GNU_TIME} (GNU time) is missing: it measures the peers' CPU and RSS, so no peer runs`] };
  }
  const peers = [...(hasRclone ? [rclone(sink)] : []), ...(hasAws ? [await aws(sink, dir)] : [])];
  return { peers, notes };
}

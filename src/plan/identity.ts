/**
 * Files' identities (SHA-256), computed at most once per version of a file: the planner asks
 * before it plans uploads when the content could equal an upload of the same incident, and the
 * engine asks as an upload starts and waits for the answer only before `complete`, so the
 * hashing of a file overlaps with the sending of its parts. Whoever asks first starts the pass;
 * the others share it; the result goes to the ledger.
 */
import type { FileRole } from '../targets/target.js';
import { sha256Of } from './hash.js';

export interface IdentityFile {
  incidentId: string;
  videoId: string;
  role: FileRole;
  path: string;
  stamp: string;
}

export interface IdentityLedger {
  knownIdentity(file: IdentityFile): string | null;
  identityKnown(file: IdentityFile, sha256: string): Promise<void>;
}

export class FileIdentities {
  private readonly running = new Map<string, Promise<string>>();

  constructor(private readonly ledger: IdentityLedger) {}

  /** The SHA-256 of the file as stamped: from the ledger, from a pass under way, or from a new pass. */
  of(file: IdentityFile, signal: AbortSignal): Promise<string> {
    const key = `${file.incidentId}\u0000${file.videoId}\u0000${file.role}\u0000${file.stamp}`;
    const known = this.ledger.knownIdentity(file);
    if (known) return Promise.resolve(known);
    let pass = this.running.get(key);
    if (!pass) {
      pass = sha256Of(file.path, file.stamp, signal).then(async (sha) => {
        await this.ledger.identityKnown(file, sha);
        return sha;
      });
      this.running.set(key, pass);
      void pass.catch(() => undefined).finally(() => this.running.delete(key));
    }
    return pass;
  }
}

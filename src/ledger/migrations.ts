/**
 * Schema versions, applied in order inside one transaction each; `PRAGMA user_version` holds
 * the version reached. Never edit a shipped migration: add the next one. A migration that
 * rebuilds a table (SQLite cannot change a column's constraints in place) runs with foreign keys
 * off, as SQLite's documentation prescribes, and is checked with foreign_key_check after.
 */
export interface Migration {
  sql: string;
  rebuildsTables?: boolean;
}

export const MIGRATIONS: readonly Migration[] = [
  // 1: incidents, their videos and files, one upload per (video file, target), its parts,
  //    incident reports, remote uploads still to abort, manifests that did not validate.
  {
    sql: `
  CREATE TABLE incidents (
    id TEXT PRIMARY KEY,
    folder TEXT NOT NULL,
    manifest_path TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    info TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
  ) STRICT;

  CREATE TABLE videos (
    incident_id TEXT NOT NULL REFERENCES incidents(id),
    id TEXT NOT NULL,
    info TEXT NOT NULL,
    position INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('waiting', 'ready', 'failed')),
    errors TEXT,
    notes TEXT,
    restarts INTEGER NOT NULL DEFAULT 0,
    first_seen_at INTEGER NOT NULL,
    settled_at INTEGER,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (incident_id, id)
  ) STRICT;

  CREATE TABLE video_files (
    incident_id TEXT NOT NULL,
    video_id TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('video', 'thumbnail')),
    rel_path TEXT NOT NULL,
    path TEXT,
    size INTEGER,
    mtime_ms REAL,
    sha256 TEXT,
    content_type TEXT,
    PRIMARY KEY (incident_id, video_id, role),
    FOREIGN KEY (incident_id, video_id) REFERENCES videos(incident_id, id) ON DELETE CASCADE
  ) STRICT;

  CREATE TABLE uploads (
    id INTEGER PRIMARY KEY,
    incident_id TEXT NOT NULL,
    video_id TEXT NOT NULL,
    role TEXT NOT NULL,
    target TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'done', 'failed')),
    session TEXT,
    result TEXT,
    last_error TEXT,
    reused_from INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    completed_at INTEGER,
    UNIQUE (incident_id, video_id, role, target),
    FOREIGN KEY (incident_id, video_id) REFERENCES videos(incident_id, id) ON DELETE CASCADE
  ) STRICT;
  CREATE INDEX uploads_by_content ON uploads (target, role, sha256, state);
  CREATE INDEX uploads_by_state ON uploads (state, id);

  CREATE TABLE parts (
    upload_id INTEGER NOT NULL REFERENCES uploads(id) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    size INTEGER NOT NULL,
    md5 TEXT NOT NULL,
    etag TEXT,
    state TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    done_at INTEGER,
    PRIMARY KEY (upload_id, number)
  ) STRICT;

  CREATE TABLE reports (
    incident_id TEXT NOT NULL REFERENCES incidents(id),
    target TEXT NOT NULL,
    wanted INTEGER NOT NULL,
    acked INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    acked_at INTEGER,
    PRIMARY KEY (incident_id, target)
  ) STRICT;

  CREATE TABLE pending_aborts (
    id INTEGER PRIMARY KEY,
    target TEXT NOT NULL,
    session TEXT NOT NULL,
    file TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at INTEGER NOT NULL
  ) STRICT;

  CREATE TABLE manifest_errors (
    path TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    problems TEXT NOT NULL,
    seen_at INTEGER NOT NULL
  ) STRICT;
  `,
  },
  // 2: the targets `routes` chose for each incident (NULL: every target, as before routes).
  { sql: `ALTER TABLE incidents ADD COLUMN targets TEXT;` },
  // 3: one row the daemon rewrites to find out whether ledger writes commit again after a
  //    storage fault (a full disk).
  { sql: `CREATE TABLE ledger_probe (id INTEGER PRIMARY KEY CHECK (id = 1), probed_at INTEGER NOT NULL) STRICT;` },
  // 4: after-upload handling: what was done with a video's files once every target had it
  //    ('delete', 'move' or 'retention'), and with its incident's folder once every video was handled.
  {
    sql: `
  ALTER TABLE videos ADD COLUMN files_handled TEXT;
  ALTER TABLE videos ADD COLUMN files_handled_at INTEGER;
  ALTER TABLE incidents ADD COLUMN folder_handled TEXT;
  ALTER TABLE incidents ADD COLUMN folder_handled_at INTEGER;
  `,
  },
  // 5: cameras an operator paused or resumed through the local API (a camera without a row
  //    runs), when each upload's remote session was opened (for upload time), and a lookup of
  //    videos by the manifest's camera_id.
  {
    sql: `
  CREATE TABLE cameras (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('running', 'paused')),
    updated_at INTEGER NOT NULL
  ) STRICT;
  ALTER TABLE uploads ADD COLUMN started_at INTEGER;
  CREATE INDEX videos_by_camera ON videos (json_extract(info, '$.camera_id'));
  `,
  },
  // 6: each incident is its own case on every platform (each incident is its own case on every platform): content is shared only
  //    within one incident. Uploads that were "done" by reusing another incident's upload named a
  //    key or media handed out for that other incident, so their videos are planned again (their
  //    files are hashed and uploaded anew), unless after-upload already handled the files.
  //    Reports a platform refused for good remember the version refused (sent again only once the
  //    incident changes, or on retry). A file that changed after its upload completed is uploaded
  //    again: the new upload keeps the result it replaces (`superseded`, for the log), the video
  //    counts such changes. Files are found by path when the watcher reports a change.
  {
    sql: `
  CREATE TEMP TABLE reused_elsewhere AS
    WITH RECURSIVE chain(id, origin) AS (
      SELECT id, reused_from FROM uploads WHERE reused_from IS NOT NULL
      UNION
      SELECT c.id, u.reused_from FROM chain c JOIN uploads u ON u.id = c.origin WHERE u.reused_from IS NOT NULL
    )
    SELECT DISTINCT c.id FROM chain c JOIN uploads u ON u.id = c.id JOIN uploads o ON o.id = c.origin WHERE o.incident_id <> u.incident_id;
  UPDATE videos SET state = 'waiting', settled_at = NULL
  WHERE state = 'ready' AND files_handled IS NULL
    AND EXISTS (SELECT 1 FROM uploads u WHERE u.id IN (SELECT id FROM reused_elsewhere) AND u.incident_id = videos.incident_id AND u.video_id = videos.id);
  DELETE FROM uploads WHERE id IN (SELECT id FROM reused_elsewhere)
    AND EXISTS (SELECT 1 FROM videos v WHERE v.incident_id = uploads.incident_id AND v.id = uploads.video_id AND v.state = 'waiting');
  DROP TABLE reused_elsewhere;
  DROP INDEX uploads_by_content;
  CREATE INDEX uploads_by_content ON uploads (incident_id, target, role, sha256, state);
  ALTER TABLE reports ADD COLUMN refused INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE uploads ADD COLUMN superseded TEXT;
  ALTER TABLE videos ADD COLUMN changed_after_upload INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE videos ADD COLUMN change_note TEXT;
  CREATE INDEX video_files_by_path ON video_files (path);
  `,
  },
  // 7: one read of the bytes per target. A file's SHA-256 (its identity) may be computed while
  //    its parts are sent, so an upload's sha256 is unknown (NULL) until then, and each part's
  //    MD5 is the digest of what was sent, known once sent. A file's stamp (size, mtime and ctime
  //    in ns, device, inode) is what every read of it is checked against: ctime cannot be set
  //    back by a writer, so a rewrite that restores size and mtime still shows. Manifests keep
  //    the stamp of the version last read (a rescan reads only what changed), and an incident
  //    every target finished with is marked, so its folder is no longer watched.
  {
    rebuildsTables: true,
    sql: `
  CREATE TABLE uploads_v7 (
    id INTEGER PRIMARY KEY,
    incident_id TEXT NOT NULL,
    video_id TEXT NOT NULL,
    role TEXT NOT NULL,
    target TEXT NOT NULL,
    sha256 TEXT,
    size INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'done', 'failed')),
    session TEXT,
    result TEXT,
    last_error TEXT,
    reused_from INTEGER,
    superseded TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    started_at INTEGER,
    completed_at INTEGER,
    UNIQUE (incident_id, video_id, role, target),
    FOREIGN KEY (incident_id, video_id) REFERENCES videos(incident_id, id) ON DELETE CASCADE
  ) STRICT;
  INSERT INTO uploads_v7 (id, incident_id, video_id, role, target, sha256, size, state, session, result, last_error, reused_from,
                          superseded, created_at, updated_at, started_at, completed_at)
    SELECT id, incident_id, video_id, role, target, sha256, size, state, session, result, last_error, reused_from,
           superseded, created_at, updated_at, started_at, completed_at FROM uploads;
  DROP TABLE uploads;
  ALTER TABLE uploads_v7 RENAME TO uploads;
  CREATE INDEX uploads_by_content ON uploads (incident_id, target, role, sha256, state);
  CREATE INDEX uploads_by_state ON uploads (state, id);
  CREATE INDEX uploads_by_video ON uploads (incident_id, video_id);

  CREATE TABLE parts_v7 (
    upload_id INTEGER NOT NULL REFERENCES uploads(id) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    size INTEGER NOT NULL,
    md5 TEXT,
    etag TEXT,
    state TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    done_at INTEGER,
    PRIMARY KEY (upload_id, number)
  ) STRICT;
  INSERT INTO parts_v7 SELECT upload_id, number, offset, size, md5, etag, state, attempts, last_error, done_at FROM parts;
  DROP TABLE parts;
  ALTER TABLE parts_v7 RENAME TO parts;

  ALTER TABLE video_files ADD COLUMN stamp TEXT;
  ALTER TABLE incidents ADD COLUMN manifest_stamp TEXT;
  ALTER TABLE incidents ADD COLUMN finished_at INTEGER;
  ALTER TABLE manifest_errors ADD COLUMN stamp TEXT;
  ALTER TABLE reports ADD COLUMN refused_at INTEGER;
  CREATE INDEX incidents_by_manifest ON incidents (manifest_path);
  CREATE INDEX incidents_by_folder ON incidents (folder);
  CREATE INDEX videos_by_state ON videos (state, first_seen_at, incident_id, position);
  CREATE INDEX reports_due ON reports (incident_id, target) WHERE wanted > acked AND wanted > refused;
  `,
  },
  // 8: what the status page asks for every 2 s, read along indexes rather than every row:
  //    incidents newest first, a page at a time; a camera's videos by when they were seen (its
  //    name, its latest completed video) and by recorded time (its last video), without reading
  //    each video's JSON; what was sent in the last minute.
  {
    sql: `
  CREATE INDEX incidents_by_age ON incidents (created_at, id);
  DROP INDEX videos_by_camera;
  CREATE INDEX videos_by_camera_seen ON videos (json_extract(info, '$.camera_id'), first_seen_at, incident_id, position);
  CREATE INDEX videos_by_camera_recorded ON videos (
    json_extract(info, '$.camera_id'), julianday(COALESCE(json_extract(info, '$.ended_at'), json_extract(info, '$.started_at'))));
  CREATE INDEX uploads_done_by_completion ON uploads (completed_at) WHERE state = 'done';
  CREATE INDEX parts_done_by_time ON parts (done_at) WHERE state = 'done';
  `,
  },
  // 9: incidents skipped because their manifest was older than watch.ignore_older when first
  //    seen (a recorder's history at installation): the version of the manifest last read (so a
  //    rescan reads it no more), its mtime, and when `retry` took it in anyway (it is then read
  //    and applied like any other; the row stays, so the incident is never skipped again).
  {
    sql: `
  CREATE TABLE skipped_incidents (
    id TEXT PRIMARY KEY,
    folder TEXT NOT NULL,
    manifest_path TEXT NOT NULL,
    manifest_stamp TEXT NOT NULL,
    manifest_mtime REAL NOT NULL,
    skipped_at INTEGER NOT NULL,
    taken_in_at INTEGER
  ) STRICT;
  CREATE INDEX skipped_by_manifest ON skipped_incidents (manifest_path) WHERE taken_in_at IS NULL;
  CREATE INDEX skipped_by_folder ON skipped_incidents (folder) WHERE taken_in_at IS NULL;
  CREATE INDEX skipped_taken_in ON skipped_incidents (taken_in_at) WHERE taken_in_at IS NOT NULL;
  `,
  },
];

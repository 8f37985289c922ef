-- A component's bytes may be registered under more than one name: a row is
-- one name (and version) for one digest. A name and version mean one digest
-- (checked when a plugin is stored); a digest may have many names.
CREATE TABLE plugins_v2 (
    digest     TEXT NOT NULL,               -- hex sha256 of the component
    name       TEXT NOT NULL,
    version    TEXT,
    size       INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
INSERT INTO plugins_v2 (digest, name, version, size, created_at)
    SELECT digest, name, version, size, created_at FROM plugins ORDER BY rowid;
DROP TABLE plugins;
ALTER TABLE plugins_v2 RENAME TO plugins;
CREATE UNIQUE INDEX plugins_by_name_version ON plugins (name, IFNULL(version, ''), digest);
CREATE INDEX plugins_by_name ON plugins (name, created_at);
CREATE INDEX plugins_by_digest ON plugins (digest, created_at);

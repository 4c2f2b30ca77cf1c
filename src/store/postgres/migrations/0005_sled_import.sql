-- The state of `siemsync migrate --from-sled` into this database (at most one row):
-- 'copying' from before its first data write until it finished, so that no node
-- starts on a half-copied database (it would give out sequences and dead letter
-- ids the copy is still writing); 'done' afterwards. The fingerprint names the
-- copied directory's content, so that only the same copy may resume.
CREATE TABLE sled_import (
    only_row           boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    state              text NOT NULL CHECK (state IN ('copying', 'done')),
    source_fingerprint text NOT NULL,
    started_at         timestamptz NOT NULL,
    finished_at        timestamptz
);

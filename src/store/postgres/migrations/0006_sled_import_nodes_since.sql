-- When a node first started on this database after `siemsync migrate --from-sled`
-- finished: a copy run again after that is refused before it writes anything,
-- since re-inserting what is missing would bring back what the nodes deleted, and
-- a checkpoint they moved would stop the copy half-way with its marker saying
-- 'copying', which keeps every node from starting.
ALTER TABLE sled_import ADD COLUMN nodes_since timestamptz;

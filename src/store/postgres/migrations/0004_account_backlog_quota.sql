-- An account's own backlog quota in bytes (issue 17), where the operator set one;
-- NULL: the node's configured account_max_backlog_bytes.
ALTER TABLE accounts
    ADD COLUMN max_backlog_bytes bigint CHECK (max_backlog_bytes >= 1);

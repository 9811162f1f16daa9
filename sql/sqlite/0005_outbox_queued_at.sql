-- Same as sql/postgres/0005_outbox_queued_at.sql: when each outbox row was queued, by the
-- agent's clock (RFC 3339 text like every other time); NULL for rows queued before the
-- migration, which are sent without waiting.
ALTER TABLE notification_outbox ADD COLUMN queued_at TEXT;

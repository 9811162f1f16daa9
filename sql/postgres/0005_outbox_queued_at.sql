-- The batch window (KIJO_NOTIFY_BATCH_WINDOW): when each outbox row was queued, by the agent's
-- clock (not the database's, and not the report's scan time), so that the notify thread can let
-- a target's first change wait for later ones of the same scan wave. The window lives here, in
-- the outbox, so it survives restarts and `--once` runs.
--
-- Rows queued before this migration keep NULL: nothing says how long they have waited already,
-- so they count as "window closed" and are grouped and sent at once.
ALTER TABLE notification_outbox ADD COLUMN queued_at TIMESTAMPTZ;

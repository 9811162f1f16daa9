-- Messages with a fixed composition. Events are grouped into messages once; afterwards the same
-- message (same id, same events) is what every retry sends, so a receiver can drop a duplicate
-- by its id. One row per message and target.
CREATE TABLE notification_messages (
    message_id      TEXT        NOT NULL,
    target          TEXT        NOT NULL,
    cluster_name    TEXT        NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    state           TEXT        NOT NULL DEFAULT 'pending'
                                CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        INTEGER     NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_error      TEXT,
    delivered_at    TIMESTAMPTZ,
    PRIMARY KEY (message_id, target)
);
CREATE INDEX notification_messages_due ON notification_messages (cluster_name, target, next_attempt_at)
    WHERE state = 'pending';

-- NULL: not yet grouped. 'filtered': recorded but below the notification threshold (or a kind
-- nobody asked for), never sent.
ALTER TABLE notification_outbox ADD COLUMN message_id TEXT;
ALTER TABLE notification_outbox DROP CONSTRAINT notification_outbox_state_check;
ALTER TABLE notification_outbox ADD CONSTRAINT notification_outbox_state_check
    CHECK (state IN ('pending', 'delivered', 'dead', 'filtered'));
CREATE INDEX notification_outbox_message ON notification_outbox (message_id, target);
CREATE INDEX notification_outbox_unassigned ON notification_outbox (target)
    WHERE state = 'pending' AND message_id IS NULL;

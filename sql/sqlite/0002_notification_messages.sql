-- Same as sql/postgres/0002_notification_messages.sql. SQLite cannot change a CHECK constraint,
-- so notification_outbox is rebuilt (nothing references it).
CREATE TABLE notification_messages (
    message_id      TEXT    NOT NULL,
    target          TEXT    NOT NULL,
    cluster_name    TEXT    NOT NULL,
    created_at      TEXT    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending'
                            CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT    NOT NULL,
    last_error      TEXT,
    delivered_at    TEXT,
    PRIMARY KEY (message_id, target)
);
CREATE INDEX notification_messages_due ON notification_messages (cluster_name, target, next_attempt_at)
    WHERE state = 'pending';

CREATE TABLE notification_outbox_v3 (
    event_id        TEXT    NOT NULL REFERENCES lifecycle_events (event_id),
    target          TEXT    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending'
                            CHECK (state IN ('pending', 'delivered', 'dead', 'filtered')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    last_error      TEXT,
    delivered_at    TEXT,
    message_id      TEXT,
    PRIMARY KEY (event_id, target)
);
INSERT INTO notification_outbox_v3
    (event_id, target, state, attempts, next_attempt_at, last_error, delivered_at)
    SELECT event_id, target, state, attempts, next_attempt_at, last_error, delivered_at
    FROM notification_outbox;
DROP TABLE notification_outbox;
ALTER TABLE notification_outbox_v3 RENAME TO notification_outbox;
CREATE INDEX notification_outbox_due ON notification_outbox (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX notification_outbox_message ON notification_outbox (message_id, target);
CREATE INDEX notification_outbox_unassigned ON notification_outbox (target)
    WHERE state = 'pending' AND message_id IS NULL;

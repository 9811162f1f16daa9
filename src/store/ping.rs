//! The readiness probe's own connection to the store, separate from the writer's.

use std::time::Duration;

use super::target::DatabaseTarget;
use super::{StoreError, error, postgres, sqlite};

/// A separate, cheap connection for the readiness probe. It never blocks the writer and opens a
/// new connection by itself after a failure.
///
/// A ping against a hung PostgreSQL (the socket accepts bytes but nothing ever answers) fails
/// after `timeout`, but dropping the failed client may then block for as long as the server
/// stays silent: the synchronous client's `Drop` waits for its connection task to finish
/// (rust-postgres issue 755). So a `Pinger` must live on a thread nobody waits for; the
/// readiness checker (`health::spawn_readiness_checker`) runs it on such a thread and counts a
/// ping that has not answered in time as a failure without waiting for it.
pub struct Pinger {
    target: DatabaseTarget,
    pg: Option<::postgres::Client>,
    sqlite: Option<rusqlite::Connection>,
}

impl Pinger {
    pub fn new(target: &DatabaseTarget) -> Pinger {
        Pinger {
            target: target.clone(),
            pg: None,
            sqlite: None,
        }
    }

    pub fn ping(&mut self, timeout: Duration) -> Result<(), StoreError> {
        match &self.target {
            DatabaseTarget::Postgres(pg) => {
                if self.pg.is_none() {
                    let mut pg = pg.clone();
                    pg.config.connect_timeout(timeout);
                    self.pg = Some(postgres::connect(&pg)?);
                }
                let client = self.pg.as_mut().expect("connected above");
                client.is_valid(timeout).map_err(|e| {
                    // May block on a hung server (see the type's comment): this thread is the
                    // one that waits, never the probe's.
                    self.pg = None;
                    StoreError::ConnectionLost(error::redact(&e.to_string(), &pg.secrets))
                })
            }
            DatabaseTarget::Sqlite(path) => {
                if self.sqlite.is_none() {
                    self.sqlite = Some(sqlite::open_existing(path, timeout)?);
                }
                let conn = self.sqlite.as_ref().expect("opened above");
                conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
                    .map_err(|e| {
                        self.sqlite = None;
                        StoreError::ConnectionLost(format!("{}: {e}", path.display()))
                    })
            }
        }
    }
}

//! A throwaway PostgreSQL database per test on the local server (127.0.0.1:5432, trust auth).

use std::sync::atomic::{AtomicU32, Ordering};

pub const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn admin() -> postgres::Client {
    postgres::Client::connect(ADMIN_URL, postgres::NoTls).expect(
        "PostgreSQL must listen on 127.0.0.1:5432 with trust auth for user postgres (.ci/run starts it)",
    )
}

pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub fn create(tag: &str) -> TestDb {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "kijo_{tag}_{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let mut admin = admin();
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        TestDb { name }
    }

    /// A URL for this database; `password` goes into the URL (trust auth ignores it).
    pub fn url_with_password(&self, password: &str) -> String {
        format!(
            "postgres://postgres:{password}@127.0.0.1:5432/{}?sslmode=disable",
            self.name
        )
    }

    /// Refuses new connections and ends existing ones, as if the database went away.
    pub fn take_away(&self) {
        let mut admin = admin();
        admin
            .batch_execute(&format!(
                "ALTER DATABASE {} ALLOW_CONNECTIONS false",
                self.name
            ))
            .unwrap();
        admin
            .batch_execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
                self.name
            ))
            .unwrap();
    }

    pub fn bring_back(&self) {
        admin()
            .batch_execute(&format!(
                "ALTER DATABASE {} ALLOW_CONNECTIONS true",
                self.name
            ))
            .unwrap();
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(ADMIN_URL, postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

//! The store's own metrics: how long writes take and why they fail.

use std::time::Duration;

use prometheus_client::metrics::histogram::exponential_buckets;

use super::StoreError;
use crate::metrics::{Counter, Family, Histogram, Registry};

#[derive(Clone)]
pub struct StoreMetrics {
    write_seconds: Histogram,
    errors: Family<Vec<(String, String)>, Counter>,
}

impl StoreMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        // 1 ms … ~16 s: one workload container's transaction.
        let write_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let errors = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "kijo_store_write_seconds",
            "Time to apply one scan or workload removal in one transaction",
            write_seconds.clone(),
        );
        registry.register(
            "kijo_store_errors",
            "Failed store writes by cause (connection, query, conflict, migration, config)",
            errors.clone(),
        );
        StoreMetrics {
            write_seconds,
            errors,
        }
    }

    pub(crate) fn observe(&self, took: Duration, error: Option<&StoreError>) {
        self.write_seconds.observe(took.as_secs_f64());
        if let Some(e) = error {
            self.errors
                .get_or_create(&vec![("cause".to_owned(), cause(e).to_owned())])
                .inc();
        }
    }
}

fn cause(e: &StoreError) -> &'static str {
    match e {
        StoreError::Connect { .. } | StoreError::ConnectionLost(_) | StoreError::Backoff { .. } => {
            "connection"
        }
        StoreError::Query { .. } => "query",
        StoreError::Conflict(_) => "conflict",
        StoreError::Migration { .. } | StoreError::SchemaTooNew { .. } => "migration",
        StoreError::Tls(_) => "config",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_counted_by_cause() {
        let mut registry = Registry::default();
        let m = StoreMetrics::new(&mut registry);
        m.observe(Duration::from_millis(3), None);
        m.observe(
            Duration::from_millis(3),
            Some(&StoreError::ConnectionLost("x".into())),
        );
        m.observe(
            Duration::from_millis(3),
            Some(&StoreError::Conflict("x".into())),
        );
        let text = crate::metrics::render(&registry);
        assert!(
            text.contains("kijo_store_errors_total{cause=\"connection\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("kijo_store_errors_total{cause=\"conflict\"} 1"),
            "{text}"
        );
        assert!(text.contains("kijo_store_write_seconds_count 3"), "{text}");
    }
}

//! The Kijo SaaS API as the agent speaks it. The contract is `saas-openapi.yaml` next to this
//! file (also served to readers of the repository); the tests below keep the two in step.

use jiff::Timestamp;
use serde::Serialize;

use super::group::{Message, message_id};
use super::webhook::{WebhookPayload, payload, rfc3339_seconds};

pub(crate) const EVENTS_PATH: &str = "/v1/events";
pub(crate) const HEARTBEAT_PATH: &str = "/v1/heartbeat";

#[derive(Debug, Clone, Serialize)]
pub(crate) struct AgentInfo<'a> {
    pub version: &'a str,
    pub cluster: &'a str,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct EventsRequest<'a> {
    pub agent: AgentInfo<'a>,
    pub events: Vec<WebhookPayload<'a>>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct HeartbeatRequest<'a> {
    pub agent: AgentInfo<'a>,
    pub sent_at: String,
}

/// `endpoint` + `path` without a doubled or missing slash.
pub(crate) fn url(endpoint: &str, path: &str) -> String {
    format!("{}{path}", endpoint.trim_end_matches('/'))
}

/// Idempotency key of a batch: the message id for one message, otherwise derived from the
/// sorted message ids, so a retried batch carries the same key.
pub(crate) fn batch_id(messages: &[Message]) -> String {
    match messages {
        [one] => one.id.clone(),
        many => message_id(many.iter().map(|m| m.id.as_str())),
    }
}

pub(crate) fn events_body(version: &str, cluster: &str, messages: &[Message]) -> Vec<u8> {
    let body = EventsRequest {
        agent: AgentInfo { version, cluster },
        events: messages.iter().map(payload).collect(),
    };
    serde_json::to_vec(&body).expect("events body serializes")
}

pub(crate) fn heartbeat_body(version: &str, cluster: &str, now: Timestamp) -> Vec<u8> {
    let body = HeartbeatRequest {
        agent: AgentInfo { version, cluster },
        sent_at: rfc3339_seconds(now),
    };
    serde_json::to_vec(&body).expect("heartbeat body serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::event::{ChangeKind, Severity};
    use crate::notify::group::group;
    use crate::notify::group::tests::change;
    use serde_json::Value;

    /// The OpenAPI 3.1 document of the API.
    const OPENAPI: &str = include_str!("saas-openapi.yaml");

    fn spec() -> Value {
        serde_saphyr::from_str(OPENAPI).expect("saas-openapi.yaml parses")
    }

    /// Required properties of a schema in `components.schemas`.
    fn required(spec: &Value, schema: &str) -> Vec<String> {
        spec["components"]["schemas"][schema]["required"]
            .as_array()
            .unwrap_or_else(|| panic!("schema {schema} has a required list"))
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn spec_declares_the_paths_and_statuses_the_client_relies_on() {
        let spec = spec();
        assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
        for path in [EVENTS_PATH, HEARTBEAT_PATH] {
            let responses = &spec["paths"][path]["post"]["responses"];
            for status in ["202", "400", "401", "403", "429"] {
                assert!(responses.get(status).is_some(), "{path} lacks {status}");
            }
        }
        assert!(spec["components"]["securitySchemes"]["bearerKey"]["scheme"] == "bearer");
    }

    #[test]
    fn bodies_carry_every_required_property_of_the_spec() {
        let spec = spec();
        let messages = group(vec![
            change("1", "web", "CVE-1", Severity::Critical),
            change("2", "api", "CVE-2", Severity::High),
        ]);
        let body: Value = serde_json::from_slice(&events_body("0.1.0", "prod", &messages)).unwrap();
        for key in required(&spec, "EventBatch") {
            assert!(body.get(&key).is_some(), "batch lacks {key}");
        }
        for key in required(&spec, "Agent") {
            assert!(body["agent"].get(&key).is_some(), "agent lacks {key}");
        }
        for key in required(&spec, "Event") {
            assert!(body["events"][0].get(&key).is_some(), "event lacks {key}");
        }
        for key in required(&spec, "Finding") {
            assert!(
                body["events"][0]["findings"][0].get(&key).is_some(),
                "finding lacks {key}"
            );
        }
        let hb: Value = serde_json::from_slice(&heartbeat_body(
            "0.1.0",
            "prod",
            "2024-01-15T10:30:00Z".parse().unwrap(),
        ))
        .unwrap();
        for key in required(&spec, "Heartbeat") {
            assert!(hb.get(&key).is_some(), "heartbeat lacks {key}");
        }
    }

    #[test]
    fn spec_lists_every_event_kind_and_the_optional_finding_fields() {
        let spec = spec();
        let schemas = &spec["components"]["schemas"];
        let mut listed: Vec<&str> = schemas["Event"]["properties"]["event"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        // The original four stay first and in their order: the contract only grows.
        assert_eq!(
            listed[..4],
            [
                "vulnerabilities_detected",
                "vulnerabilities_fixed",
                "vulnerabilities_reintroduced",
                "workload_removed"
            ]
        );
        listed.sort_unstable();
        let mut kinds: Vec<&str> = ChangeKind::ALL.iter().map(|k| k.event_name()).collect();
        kinds.sort_unstable();
        assert_eq!(listed, kinds);
        let finding = &schemas["Finding"]["properties"];
        let required = required(&spec, "Finding");
        for key in ["previous_severity", "peak_severity", "package_path"] {
            assert!(finding.get(key).is_some(), "Finding lacks {key}");
            assert!(!required.iter().any(|r| r == key), "{key} is optional");
        }
    }

    /// What the agent sends for the new kinds is what the spec declares: every property of an
    /// event and of a finding is one the spec names.
    #[test]
    fn bodies_of_every_kind_use_only_declared_properties() {
        let spec = spec();
        let schemas = &spec["components"]["schemas"];
        let declared = |schema: &str| -> Vec<String> {
            schemas[schema]["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect()
        };
        let (event_props, finding_props) = (declared("Event"), declared("Finding"));
        for kind in ChangeKind::ALL {
            let mut c = change("1", "web", "CVE-1", Severity::Critical);
            c.kind = kind;
            c.finding.package_path = "usr/lib/libssl.so".to_owned();
            c.peak_severity = Severity::Critical;
            if kind == ChangeKind::SeverityRaised {
                c.previous_severity = Some(Severity::Medium);
            }
            if kind.is_closing() {
                c.finding.severity = Severity::Low;
            }
            let body: Value =
                serde_json::from_slice(&events_body("0.1.0", "prod", &group(vec![c]))).unwrap();
            let event = &body["events"][0];
            assert_eq!(event["event"], kind.event_name());
            for key in event.as_object().unwrap().keys() {
                assert!(event_props.contains(key), "{kind:?}: event has undeclared {key}");
            }
            for key in event["findings"][0].as_object().unwrap().keys() {
                assert!(finding_props.contains(key), "{kind:?}: finding has undeclared {key}");
            }
        }
    }

    #[test]
    fn urls_and_batch_ids() {
        assert_eq!(
            url("https://api.kijo.io/", EVENTS_PATH),
            "https://api.kijo.io/v1/events"
        );
        assert_eq!(
            url("https://api.kijo.io", HEARTBEAT_PATH),
            "https://api.kijo.io/v1/heartbeat"
        );
        let m = group(vec![change("1", "web", "CVE-1", Severity::Critical)]);
        assert_eq!(batch_id(&m), m[0].id);
        let two = group(vec![change("1", "web", "CVE-1", Severity::Critical), {
            let mut c = change("2", "web", "CVE-1", Severity::Critical);
            c.asset.namespace = "other".to_owned();
            c
        }]);
        let reversed: Vec<Message> = two.iter().rev().cloned().collect();
        assert_eq!(batch_id(&two), batch_id(&reversed));
    }
}

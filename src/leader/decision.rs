//! One decision of client-go's `tryAcquireOrRenew`, from plain data: the fetched Lease, how
//! long we have seen it unchanged, and the time. No I/O, so every rule is a table test.

use std::time::Duration;

use serde_json::{Value, json};

use super::Settings;

/// Lease `MicroTime`: microseconds, UTC, always six digits.
pub fn micro_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The spec fields the algorithm reads; the rest of the object is kept as fetched.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub holder: String,
    pub duration_seconds: i64,
    pub transitions: i64,
    pub acquire_time: String,
    pub renew_time: String,
}

impl Record {
    pub fn of(lease: &Value) -> Record {
        let spec = &lease["spec"];
        Record {
            holder: spec["holderIdentity"].as_str().unwrap_or("").to_owned(),
            duration_seconds: spec["leaseDurationSeconds"].as_i64().unwrap_or(0),
            transitions: spec["leaseTransitions"].as_i64().unwrap_or(0),
            acquire_time: spec["acquireTime"].as_str().unwrap_or("").to_owned(),
            renew_time: spec["renewTime"].as_str().unwrap_or("").to_owned(),
        }
    }
}

/// What to do after reading the Lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// No Lease yet: POST this one.
    Create(Value),
    /// Take over or renew: PUT this one (it carries the fetched resourceVersion).
    Update(Value),
    /// Someone else holds a valid lease.
    Standby { holder: String },
}

/// One decision of `tryAcquireOrRenew`, from plain data. `observed_for` is how long ago (on our
/// clock) we first saw the current record unchanged.
pub fn decide(
    settings: &Settings,
    fetched: Option<&Value>,
    observed_for: Duration,
    now: jiff::Timestamp,
) -> Step {
    let now_text = micro_time(now);
    let seconds = settings.lease_duration.as_secs() as i64;
    let Some(lease) = fetched else {
        return Step::Create(json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": settings.lease_name, "namespace": settings.namespace},
            "spec": {
                "holderIdentity": settings.identity,
                "leaseDurationSeconds": seconds,
                "acquireTime": now_text,
                "renewTime": now_text,
                "leaseTransitions": 0,
            }
        }));
    };
    let record = Record::of(lease);
    let held_by_other = !record.holder.is_empty() && record.holder != settings.identity;
    let valid_for = Duration::from_secs(record.duration_seconds.max(0) as u64);
    if held_by_other && observed_for < valid_for {
        return Step::Standby {
            holder: record.holder,
        };
    }
    let mut next = lease.clone();
    let spec = &mut next["spec"];
    if !spec.is_object() {
        *spec = json!({});
    }
    spec["holderIdentity"] = json!(settings.identity);
    spec["leaseDurationSeconds"] = json!(seconds);
    spec["renewTime"] = json!(now_text);
    if record.holder != settings.identity {
        spec["acquireTime"] = json!(now_text);
        spec["leaseTransitions"] = json!(record.transitions + 1);
    }
    Step::Update(next)
}

/// The Lease we hold and last wrote, renewed now: only `renewTime` changes, so the PUT needs no
/// GET first (its resourceVersion is the one our write returned).
pub(crate) fn renewed(held: &Value, now: jiff::Timestamp) -> Value {
    let mut next = held.clone();
    next["spec"]["renewTime"] = json!(micro_time(now));
    next
}

/// The Lease as released on shutdown: nobody holds it, and it is over in a second.
pub fn released(lease: &Value, now: jiff::Timestamp) -> Value {
    let mut next = lease.clone();
    next["spec"]["holderIdentity"] = json!("");
    next["spec"]["leaseDurationSeconds"] = json!(1);
    next["spec"]["renewTime"] = json!(micro_time(now));
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            lease_name: "kijo-agent".into(),
            namespace: "kijo".into(),
            identity: "me_1".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    fn lease(holder: &str, seconds: i64, transitions: i64) -> Value {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "kijo-agent", "namespace": "kijo", "resourceVersion": "42"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": seconds,
                     "acquireTime": "2026-01-01T10:00:00.000000Z",
                     "renewTime": "2026-01-01T10:05:00.000000Z", "leaseTransitions": transitions}
        })
    }

    fn now() -> jiff::Timestamp {
        "2026-01-01T10:05:03.5Z".parse().unwrap()
    }

    #[test]
    fn decisions_follow_client_go() {
        let s = settings();
        let secs = Duration::from_secs;
        // (fetched, observed for, expect: create / update(transitions, acquire kept) / standby)
        enum Want {
            Create,
            Update {
                transitions: i64,
                keeps_acquire: bool,
            },
            Standby,
        }
        let cases: Vec<(&str, Option<Value>, Duration, Want)> = vec![
            ("absent", None, secs(0), Want::Create),
            (
                "other holder, fresh",
                Some(lease("other_2", 15, 3)),
                secs(14),
                Want::Standby,
            ),
            (
                "other holder, expired on our clock",
                Some(lease("other_2", 15, 3)),
                secs(15),
                Want::Update {
                    transitions: 4,
                    keeps_acquire: false,
                },
            ),
            (
                "other holder's own duration counts",
                Some(lease("other_2", 60, 3)),
                secs(30),
                Want::Standby,
            ),
            (
                "released (empty holder)",
                Some(lease("", 1, 3)),
                secs(0),
                Want::Update {
                    transitions: 4,
                    keeps_acquire: false,
                },
            ),
            (
                "ours: renew",
                Some(lease("me_1", 15, 3)),
                secs(0),
                Want::Update {
                    transitions: 3,
                    keeps_acquire: true,
                },
            ),
        ];
        for (name, fetched, observed, want) in cases {
            let step = decide(&s, fetched.as_ref(), observed, now());
            match (want, step) {
                (Want::Create, Step::Create(v)) => {
                    assert_eq!(v["spec"]["holderIdentity"], "me_1", "{name}");
                    assert_eq!(v["spec"]["leaseTransitions"], 0, "{name}");
                    assert_eq!(v["spec"]["leaseDurationSeconds"], 15, "{name}");
                    assert_eq!(
                        v["spec"]["renewTime"], "2026-01-01T10:05:03.500000Z",
                        "{name}"
                    );
                    assert_eq!(v["metadata"]["namespace"], "kijo", "{name}");
                }
                (Want::Standby, Step::Standby { holder }) => {
                    assert_eq!(holder, "other_2", "{name}")
                }
                (
                    Want::Update {
                        transitions,
                        keeps_acquire,
                    },
                    Step::Update(v),
                ) => {
                    assert_eq!(v["spec"]["holderIdentity"], "me_1", "{name}");
                    assert_eq!(v["spec"]["leaseTransitions"], transitions, "{name}");
                    assert_eq!(
                        v["metadata"]["resourceVersion"], "42",
                        "{name}: optimistic concurrency"
                    );
                    assert_eq!(
                        v["spec"]["renewTime"], "2026-01-01T10:05:03.500000Z",
                        "{name}"
                    );
                    let acquire = v["spec"]["acquireTime"].as_str().unwrap();
                    assert_eq!(
                        acquire == "2026-01-01T10:00:00.000000Z",
                        keeps_acquire,
                        "{name}"
                    );
                }
                (_, step) => panic!("{name}: unexpected {step:?}"),
            }
        }
    }

    #[test]
    fn renewal_changes_only_the_renew_time() {
        let held = lease("me_1", 15, 3);
        let v = renewed(&held, now());
        assert_eq!(v["spec"]["renewTime"], "2026-01-01T10:05:03.500000Z");
        let mut back = v.clone();
        back["spec"]["renewTime"] = held["spec"]["renewTime"].clone();
        assert_eq!(back, held);
    }

    #[test]
    fn release_empties_the_holder_and_shortens_the_lease() {
        let v = released(&lease("me_1", 15, 3), now());
        assert_eq!(v["spec"]["holderIdentity"], "");
        assert_eq!(v["spec"]["leaseDurationSeconds"], 1);
        assert_eq!(v["spec"]["leaseTransitions"], 3);
        assert_eq!(v["metadata"]["resourceVersion"], "42");
    }
}

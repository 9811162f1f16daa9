//! Notifications: what is worth telling people, how it is grouped and rendered for Slack,
//! generic webhooks and the Kijo SaaS, and how it is delivered.
//!
//! Pure core: [`group::select`] and [`group::group`] turn one cycle's lifecycle changes into
//! messages with stable ids; [`slack`], [`webhook`] and [`saas`] render them; the retry policy
//! in [`deliver`] is a set of pure functions. Thin shell: [`deliver::Deliverer`] makes one HTTP
//! attempt and returns a typed [`deliver::Outcome`]. The outbox that makes delivery durable is
//! kept by the store; [`plan`] decides what its queued rows become, and [`outbox::Dispatcher`]
//! (the notify thread) delivers it.

pub mod deliver;
pub mod event;
pub mod group;
pub mod metrics;
pub mod outbox;
pub mod plan;
pub mod saas;
pub mod settings;
pub mod signature;
pub mod slack;
pub mod webhook;

pub use deliver::{
    Deliverer, DelivererConfig, DeliveryReport, Disposition, Outcome, RetryPolicy, Target,
    send_test_message, validate_target_url,
};
pub use event::{Change, ChangeKind, Severity};
pub use group::{Message, group, select};
pub use metrics::NotifyMetrics;
pub use outbox::Dispatcher;
pub use settings::NotifySettings;

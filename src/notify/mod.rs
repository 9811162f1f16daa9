//! Notifications: what is worth telling people, how it is grouped and rendered for Slack,
//! generic webhooks and the Kijo SaaS, and how it is delivered.
//!
//! Pure core: [`group::select`] and [`group::group`] turn one cycle's lifecycle changes into
//! messages with stable ids; [`slack`], `webhook` and `saas` render them; the retry policy
//! in `policy` is a set of pure functions, and [`plan`] decides what the outbox's queued rows
//! become, once a target's batch window (`window`) has closed. Thin shell: [`Deliverer`] makes
//! one HTTP attempt and returns a typed [`Outcome`]; `test_message` is `notify-test`. The outbox
//! that makes delivery durable is kept by the store; [`outbox::Dispatcher`] (the notify thread)
//! delivers it.

pub mod deliver;
pub mod event;
pub mod group;
pub mod metrics;
pub mod outbox;
pub mod plan;
pub mod policy;
pub(crate) mod saas;
pub mod settings;
pub mod signature;
pub mod slack;
pub(crate) mod test_message;
pub(crate) mod webhook;
pub(crate) mod window;

pub use deliver::{Deliverer, Target};
pub use metrics::NotifyMetrics;
pub use outbox::Dispatcher;
pub use policy::Outcome;
pub use settings::NotifySettings;
pub use test_message::send_test_message;

//! Paginated, streamed listings and single-object reads.
//!
//! A list page is decoded while it arrives: each item is handed to the caller as soon as its
//! closing brace is read, so memory holds one item (one report) at a time, never a page or
//! the cluster. Because items are delivered before a page is complete, a page that breaks
//! mid-body, or a continue token that expires, restarts the whole listing; the caller is told
//! with [`ListEvent::Restart`] and must drop what it collected from this listing.

use std::fmt;
use std::io::{BufReader, Read};

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::client::{Client, Request, encode_query};
use super::error::{KubeError, path_only};
use super::options::RetryPolicy;
use crate::trivy::{Malformed, ObjectMeta, Report, ReportKind, parse_report};

pub const ACCEPT_JSON: &str = "application/json";
pub const ACCEPT_METADATA_LIST: &str =
    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";

/// What a listing hands to its callback.
#[derive(Debug)]
pub enum ListEvent<T> {
    Item(T),
    /// Everything delivered so far by this listing is void; items follow again from the
    /// start.
    Restart,
}

/// Counters of one listing, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListStats {
    pub pages: u32,
    pub items: u64,
    pub restarts: u32,
    /// How many of the restarts were signalled to the caller with [`ListEvent::Restart`].
    pub restarts_signalled: u32,
    /// `metadata.resourceVersion` of the last page.
    pub resource_version: String,
}

/// The list's own `metadata`.
#[derive(Deserialize, Default, Debug)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ListMeta {
    #[serde(rename = "continue")]
    continue_token: Option<String>,
    resource_version: Option<String>,
}

/// A Kubernetes collection path for a report kind, all namespaces (`namespace == None`) or
/// one.
pub fn collection_path(kind: ReportKind, namespace: Option<&str>) -> String {
    let group = "/apis/aquasecurity.github.io/v1alpha1";
    match namespace {
        Some(ns) if !kind.cluster_scoped() => {
            format!("{group}/namespaces/{}/{}", encode_query(ns), kind.plural())
        }
        _ => format!("{group}/{}", kind.plural()),
    }
}

/// Decodes `{"metadata": {...}, "items": [...]}` and calls `on_item` per item.
struct ListSeed<'a, F> {
    on_item: &'a mut F,
}

impl<'de, F: FnMut(Box<RawValue>)> DeserializeSeed<'de> for ListSeed<'_, F> {
    type Value = ListMeta;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ListMeta, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, F: FnMut(Box<RawValue>)> Visitor<'de> for ListSeed<'_, F> {
    type Value = ListMeta;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Kubernetes list object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ListMeta, A::Error> {
        let mut meta = ListMeta::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "metadata" => meta = map.next_value()?,
                "items" => map.next_value_seed(ItemsSeed {
                    on_item: &mut *self.on_item,
                })?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(meta)
    }
}

struct ItemsSeed<'a, F> {
    on_item: &'a mut F,
}

impl<'de, F: FnMut(Box<RawValue>)> DeserializeSeed<'de> for ItemsSeed<'_, F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, F: FnMut(Box<RawValue>)> Visitor<'de> for ItemsSeed<'_, F> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of items")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<Box<RawValue>>()? {
            (self.on_item)(item);
        }
        Ok(())
    }
}

/// Streams one list body into `on_item`; returns the list metadata. Trailing data and
/// truncated bodies are errors. `pub(crate)` for the fuzzing facade (`crate::fuzz_api`).
pub(crate) fn decode_list<R: Read>(
    reader: R,
    on_item: &mut impl FnMut(Box<RawValue>),
) -> Result<ListMeta, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(64 * 1024, reader));
    let meta = ListSeed { on_item }.deserialize(&mut de)?;
    de.end()?;
    Ok(meta)
}

/// One listing in progress: where it is (continue token), what the caller has been handed
/// (to know whether a restart must be signalled) and how often pages failed.
struct Pager<'a> {
    client: &'a Client,
    path: &'a str,
    accept: &'a str,
    extra_query: &'a str,
    policy: RetryPolicy,
    stats: ListStats,
    continue_token: Option<String>,
    /// Items handed to the caller since the listing (re)started.
    delivered: u64,
    /// Items the caller still holds from earlier scopes of the same listing: a restart voids
    /// them too.
    held: u64,
    /// Consecutive pages that could not be read.
    page_failures: u32,
}

/// What one page left to do.
enum Next {
    More,
    Done,
}

impl Pager<'_> {
    fn url(&self) -> String {
        let mut url = format!("{}?limit={}", self.path, self.client.page_size());
        if !self.extra_query.is_empty() {
            url.push('&');
            url.push_str(self.extra_query);
        }
        if let Some(t) = &self.continue_token {
            url.push_str("&continue=");
            url.push_str(&encode_query(t));
        }
        url
    }

    /// Starts over from the first page, telling the caller to drop what it has if it has
    /// anything; gives up after `max_list_restarts`.
    fn restart(
        &mut self,
        on_event: &mut dyn FnMut(ListEvent<Box<RawValue>>),
    ) -> Result<(), KubeError> {
        self.stats.restarts += 1;
        if let Some(m) = self.client.metrics() {
            m.list_restarts.inc();
        }
        if self.stats.restarts > self.policy.max_list_restarts {
            return Err(KubeError::TooManyRestarts {
                path: path_only(self.path),
                restarts: self.stats.restarts - 1,
            });
        }
        if self.delivered > 0 || self.held > 0 {
            on_event(ListEvent::Restart);
            self.stats.restarts_signalled += 1;
        }
        self.delivered = 0;
        self.held = 0;
        self.continue_token = None;
        self.stats.items = 0;
        Ok(())
    }

    /// Requests and streams one page. An expired continue token (410) restarts the listing;
    /// a page that breaks mid-body is retried, restarting the listing if the caller saw part
    /// of it.
    fn page(
        &mut self,
        on_event: &mut dyn FnMut(ListEvent<Box<RawValue>>),
    ) -> Result<Next, KubeError> {
        let resp = match self.client.execute(&Request::get(&self.url(), self.accept)) {
            Ok(r) => r,
            Err(KubeError::Api { status: 410, .. }) if self.continue_token.is_some() => {
                log::warn!(path = self.path; "continue token expired (410); restarting the listing");
                self.restart(on_event)?;
                self.client.pause(self.policy.backoff(0))?;
                return Ok(Next::More);
            }
            Err(e) => return Err(e),
        };
        let reader = resp
            .into_body()
            .into_with_config()
            .limit(self.client.max_page_bytes())
            .reader();
        let mut delivered_in_page = 0u64;
        let decoded = decode_list(reader, &mut |item| {
            delivered_in_page += 1;
            on_event(ListEvent::Item(item));
        });
        self.delivered += delivered_in_page;
        self.stats.items += delivered_in_page;
        match decoded {
            Ok(meta) => {
                self.stats.pages += 1;
                self.page_failures = 0;
                self.stats.resource_version = meta.resource_version.unwrap_or_default();
                self.continue_token = meta.continue_token.filter(|t| !t.is_empty());
                Ok(if self.continue_token.is_some() {
                    Next::More
                } else {
                    Next::Done
                })
            }
            Err(e) => {
                if self.client.is_shut_down() {
                    return Err(KubeError::Shutdown);
                }
                self.page_failures += 1;
                let failure = KubeError::Body {
                    path: path_only(self.path),
                    message: e.to_string(),
                };
                if self.page_failures >= self.policy.max_attempts {
                    return Err(failure);
                }
                self.client.count_retry();
                log::warn!(path = self.path, error = failure.to_string().as_str(), items_in_page = delivered_in_page; "list page could not be read; retrying");
                if delivered_in_page > 0 {
                    // The caller has seen part of this page: start over.
                    self.restart(on_event)?;
                }
                self.client
                    .pause(self.policy.backoff(self.page_failures - 1))?;
                Ok(Next::More)
            }
        }
    }
}

impl Client {
    /// Lists a collection page by page, handing each raw item to `on_item`. Handles 410 on
    /// continue and broken pages by restarting (see the module docs). `held` is how many
    /// items the caller holds from earlier scopes of the same listing.
    pub(crate) fn list_raw(
        &self,
        path: &str,
        accept: &str,
        extra_query: &str,
        held: u64,
        on_event: &mut dyn FnMut(ListEvent<Box<RawValue>>),
    ) -> Result<ListStats, KubeError> {
        let mut pager = Pager {
            client: self,
            path,
            accept,
            extra_query,
            policy: self.retry_policy().clone(),
            stats: ListStats::default(),
            continue_token: None,
            delivered: 0,
            held,
            page_failures: 0,
        };
        while let Next::More = pager.page(on_event)? {}
        Ok(pager.stats)
    }

    /// Metadata-only listing (`as=PartialObjectMetadataList`) of a report kind, for change
    /// detection by `(uid, resourceVersion)`. `namespaces` empty means all namespaces;
    /// cluster-scoped kinds are skipped when namespaces are given (namespace-scoped RBAC
    /// cannot read them).
    pub fn list_metadata(
        &self,
        kind: ReportKind,
        namespaces: &[String],
        on_event: &mut dyn FnMut(ListEvent<ObjectMeta>),
    ) -> Result<ListStats, KubeError> {
        #[derive(Deserialize)]
        struct Partial {
            #[serde(default)]
            metadata: ObjectMeta,
        }
        self.for_each_scope(kind, namespaces, |client, path, held| {
            client.list_raw(&path, ACCEPT_METADATA_LIST, "", held, &mut |ev| match ev {
                ListEvent::Restart => on_event(ListEvent::Restart),
                ListEvent::Item(raw) => match serde_json::from_str::<Partial>(raw.get()) {
                    Ok(p) => on_event(ListEvent::Item(p.metadata)),
                    Err(e) => {
                        client.count_malformed();
                        log::warn!(kind = kind.as_str(), error = e.to_string().as_str(); "skipping a list item with unreadable metadata");
                    }
                },
            })
        })
    }

    #[cfg(feature = "test-support")]
    /// Full listing of a report kind. Test hook (`test-support`): the poll loop lists metadata
    /// only and fetches each changed report (`list_metadata`, `get_report`). Malformed reports are logged and counted here and
    /// still handed to the caller (as `Err`), so it can keep their previous state instead of
    /// treating their findings as gone.
    pub fn list_reports(
        &self,
        kind: ReportKind,
        namespaces: &[String],
        on_event: &mut dyn FnMut(ListEvent<Result<Report, Malformed>>),
    ) -> Result<ListStats, KubeError> {
        self.for_each_scope(kind, namespaces, |client, path, held| {
            client.list_raw(&path, ACCEPT_JSON, "", held, &mut |ev| match ev {
                ListEvent::Restart => on_event(ListEvent::Restart),
                ListEvent::Item(raw) => {
                    let parsed = parse_report(kind, raw.get());
                    drop(raw);
                    if let Err(m) = &parsed {
                        client.note_malformed(m);
                    }
                    on_event(ListEvent::Item(parsed));
                }
            })
        })
    }

    /// Reads one report; `Ok(None)` when it does not exist (any more).
    pub fn get_report(
        &self,
        kind: ReportKind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Result<Report, Malformed>>, KubeError> {
        let ns = (!kind.cluster_scoped()).then_some(namespace);
        let path = format!("{}/{}", collection_path(kind, ns), encode_query(name));
        let Some(text) = self.get_text(&path)? else {
            return Ok(None);
        };
        let parsed = parse_report(kind, &text);
        if let Err(m) = &parsed {
            self.note_malformed(m);
        }
        Ok(Some(parsed))
    }

    /// GET of one object as text; `Ok(None)` on 404. Bounded by the page limit.
    pub(crate) fn get_text(&self, path: &str) -> Result<Option<String>, KubeError> {
        self.get_text_as(path, ACCEPT_JSON)
    }

    /// [`Client::get_text`] asking for another representation (`accept`), e.g. aggregated
    /// discovery.
    pub(crate) fn get_text_as(
        &self,
        path: &str,
        accept: &str,
    ) -> Result<Option<String>, KubeError> {
        let policy = self.retry_policy().clone();
        let mut failures = 0u32;
        loop {
            let resp = match self.execute(&Request::get(path, accept)) {
                Ok(r) => r,
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(e),
            };
            // Sized from Content-Length when the server sends one: reading a 7 MiB report into
            // a growing `String` ends at up to twice its size, at the cycle's memory peak.
            let mut text = String::with_capacity(
                resp.body()
                    .content_length()
                    .map_or(0, |n| n.min(self.max_page_bytes()))
                    .try_into()
                    .unwrap_or(0),
            );
            let read = resp
                .into_body()
                .into_with_config()
                .limit(self.max_page_bytes())
                .reader()
                .read_to_string(&mut text);
            match read {
                Ok(_) => return Ok(Some(text)),
                Err(e) => {
                    failures += 1;
                    if failures >= policy.max_attempts || self.is_shut_down() {
                        return Err(KubeError::Body {
                            path: path_only(path),
                            message: e.to_string(),
                        });
                    }
                    self.count_retry();
                    self.pause(policy.backoff(failures - 1))?;
                }
            }
        }
    }

    /// GET of one object decoded as `T`; `Ok(None)` on 404.
    pub fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, KubeError> {
        match self.get_text(path)? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| KubeError::Body {
                    path: path_only(path),
                    message: format!("unexpected JSON: {e}"),
                }),
        }
    }

    /// POST (create) or PUT (replace) of a JSON object, e.g. a `coordination.k8s.io/v1`
    /// Lease for leader election. A 409 comes back as [`KubeError::Api`] with status 409.
    pub fn write_json<T: serde::de::DeserializeOwned>(
        &self,
        method: &'static str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, KubeError> {
        assert!(
            matches!(method, "POST" | "PUT"),
            "write_json is for POST and PUT"
        );
        let bytes = serde_json::to_vec(body).expect("a JSON value serializes");
        let resp = self.execute(&Request {
            method,
            path,
            accept: ACCEPT_JSON,
            body: Some(("application/json", &bytes)),
        })?;
        let mut text = String::new();
        resp.into_body()
            .into_with_config()
            .limit(16 * 1024 * 1024)
            .reader()
            .read_to_string(&mut text)
            .map_err(|e| KubeError::Body {
                path: path_only(path),
                message: e.to_string(),
            })?;
        serde_json::from_str(&text).map_err(|e| KubeError::Body {
            path: path_only(path),
            message: format!("unexpected JSON: {e}"),
        })
    }

    /// Runs one listing per scope (all namespaces, or each given namespace). A restart
    /// signalled inside one namespace voids what the caller holds from the others too, so
    /// those are listed again.
    fn for_each_scope(
        &self,
        kind: ReportKind,
        namespaces: &[String],
        mut list_one: impl FnMut(&Client, String, u64) -> Result<ListStats, KubeError>,
    ) -> Result<ListStats, KubeError> {
        if namespaces.is_empty() {
            return list_one(self, collection_path(kind, None), 0);
        }
        let mut total = ListStats::default();
        if kind.cluster_scoped() {
            return Ok(total);
        }
        let mut done = vec![false; namespaces.len()];
        let mut held = 0u64;
        let mut relists = 0u32;
        while let Some(i) = done.iter().position(|d| !d) {
            let path = collection_path(kind, Some(&namespaces[i]));
            let s = list_one(self, path.clone(), held)?;
            if s.restarts_signalled > 0 {
                relists += 1;
                if relists > self.retry_policy().max_list_restarts {
                    return Err(KubeError::TooManyRestarts {
                        path,
                        restarts: relists - 1,
                    });
                }
                done.iter_mut().for_each(|d| *d = false);
                held = 0;
            }
            done[i] = true;
            held += s.items;
            total.pages += s.pages;
            total.restarts += s.restarts;
            total.restarts_signalled += s.restarts_signalled;
            total.resource_version = s.resource_version;
        }
        total.items = held;
        Ok(total)
    }

    fn count_malformed(&self) {
        if let Some(m) = self.metrics() {
            m.malformed_reports.inc();
        }
    }

    fn note_malformed(&self, m: &Malformed) {
        self.count_malformed();
        log::warn!(kind = m.kind.as_str(), namespace = m.namespace.as_str(), name = m.name.as_str(), reason = m.reason.as_str(); "skipping malformed report");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &str) -> Result<(ListMeta, Vec<String>), serde_json::Error> {
        let mut items = Vec::new();
        let meta = decode_list(s.as_bytes(), &mut |raw| items.push(raw.get().to_owned()))?;
        Ok((meta, items))
    }

    #[test]
    fn list_decoding() {
        let (meta, items) = decode(
            r#"{"apiVersion":"v1","kind":"List","items":[{"a":1},{"b":[2]}],"metadata":{"continue":"abc","resourceVersion":"7","remainingItemCount":3}}"#,
        )
        .unwrap();
        assert_eq!(meta.continue_token.as_deref(), Some("abc"));
        assert_eq!(meta.resource_version.as_deref(), Some("7"));
        assert_eq!(items, vec![r#"{"a":1}"#, r#"{"b":[2]}"#]);

        let (meta, items) = decode(r#"{"metadata":{},"items":null}"#).unwrap();
        assert!(meta.continue_token.is_none());
        assert!(items.is_empty());

        // Truncated mid-item: the items before are delivered, then an error.
        let mut seen = 0;
        let err = decode_list(
            r#"{"metadata":{},"items":[{"a":1},{"b":"#.as_bytes(),
            &mut |_| seen += 1,
        );
        assert!(err.is_err());
        assert_eq!(seen, 1);
        assert!(decode(r#"{"items":[]} garbage"#).is_err());
        assert!(decode(r#"{"kind":"Status","code":500}"#).is_ok());
    }

    #[test]
    fn paths() {
        assert_eq!(
            collection_path(ReportKind::VulnerabilityReport, None),
            "/apis/aquasecurity.github.io/v1alpha1/vulnerabilityreports"
        );
        assert_eq!(
            collection_path(ReportKind::VulnerabilityReport, Some("shop")),
            "/apis/aquasecurity.github.io/v1alpha1/namespaces/shop/vulnerabilityreports"
        );
        assert_eq!(
            collection_path(ReportKind::ClusterVulnerabilityReport, Some("shop")),
            "/apis/aquasecurity.github.io/v1alpha1/clustervulnerabilityreports"
        );
    }
}

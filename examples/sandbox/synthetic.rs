//! `--synthetic WORKLOADS:VULNS[:SEED]`: a reproducible generated cluster shaped like one that
//! Trivy Operator scans: namespaces, Deployments (and some StatefulSets) with their ReplicaSets
//! and pods, one VulnerabilityReport per container named and labelled as Trivy does (hashed
//! names plus the name annotation for long owner names), images shared across workloads, and a
//! few oversize reports of several MiB (labelled `sandbox.kijo.dev/oversize: "true"`).
//! Same arguments, same objects: the PRNG is splitmix64, the clock a fixed base date.

use serde_json::{Value, json};

use crate::load::store_object;
use crate::store::{Store, splitmix64, uuid_from};

pub struct Spec {
    pub workloads: usize,
    pub vulns: usize,
    pub seed: u64,
}

impl Spec {
    pub fn parse(s: &str) -> Result<Spec, String> {
        let bad =
            || format!("--synthetic {s:?}: expected WORKLOADS:VULNS[:SEED], e.g. 3000:150:42");
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() < 2 || parts.len() > 3 {
            return Err(bad());
        }
        Ok(Spec {
            workloads: parts[0].parse().map_err(|_| bad())?,
            vulns: parts[1].parse().map_err(|_| bad())?,
            seed: parts
                .get(2)
                .map(|p| p.parse())
                .transpose()
                .map_err(|_| bad())?
                .unwrap_or(1),
        })
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        splitmix64(&mut self.0)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    fn hex(&mut self, len: usize) -> String {
        let mut s = String::with_capacity(len);
        while s.len() < len {
            s.push_str(&format!("{:016x}", self.next()));
        }
        s.truncate(len);
        s
    }
    /// Kubernetes-style suffix characters (no vowels), as pod-template-hash uses.
    fn suffix(&mut self, len: usize) -> String {
        (0..len).map(|_| *self.pick(SAFE) as char).collect()
    }
}

const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// FNV-32a then the safe alphabet over its decimal digits: the shape of Trivy's `ComputeHash`.
fn trivy_hash(s: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.to_string()
        .bytes()
        .map(|d| SAFE[d as usize % SAFE.len()] as char)
        .collect()
}

fn ts(base: i64, offset_secs: i64) -> String {
    jiff::Timestamp::from_second(base + offset_secs)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

const NAMESPACES: &[&str] = &[
    "shop",
    "payments",
    "data",
    "platform",
    "monitoring",
    "search",
    "identity",
    "media",
    "analytics",
    "ml-serving",
    "edge",
    "batch",
];
const WORDS: &[&str] = &[
    "checkout",
    "cart",
    "catalog",
    "pricing",
    "billing",
    "invoice",
    "ledger",
    "auth",
    "session",
    "profile",
    "search",
    "indexer",
    "recommender",
    "thumbnail",
    "transcoder",
    "notifier",
    "mailer",
    "scheduler",
    "gateway",
    "frontend",
    "backend",
    "worker",
    "exporter",
    "collector",
    "ingest",
    "reporting",
    "audit",
    "inventory",
    "shipping",
    "returns",
    "loyalty",
    "fraud",
];
const LONG_WORDS: &[&str] = &[
    "customer-notification-preferences-synchronisation-worker",
    "warehouse-inventory-reconciliation-and-forecasting-service",
    "legacy-order-management-bridge-for-regional-fulfilment",
];
const REGISTRIES: &[&str] = &[
    "index.docker.io",
    "ghcr.io",
    "quay.io",
    "registry.example.internal",
    "public.ecr.aws",
];
const OS: &[(&str, &str)] = &[
    ("debian", "12.5"),
    ("debian", "11.9"),
    ("alpine", "3.19.1"),
    ("ubuntu", "22.04"),
    ("redhat", "9.3"),
];
const PACKAGES: &[(&str, &str)] = &[
    ("libssl3", "deb"),
    ("openssl", "deb"),
    ("libc6", "deb"),
    ("libexpat1", "deb"),
    ("zlib1g", "deb"),
    ("libcurl4", "deb"),
    ("libxml2", "deb"),
    ("libsqlite3-0", "deb"),
    ("libgnutls30", "deb"),
    ("libkrb5-3", "deb"),
    ("libtiff6", "deb"),
    ("libpq5", "deb"),
    ("perl-base", "deb"),
    ("libsystemd0", "deb"),
    ("libncursesw6", "deb"),
    ("busybox", "apk"),
    ("musl", "apk"),
    ("libcrypto3", "apk"),
    ("stdlib", "golang"),
    ("golang.org/x/net", "golang"),
    ("google.golang.org/grpc", "golang"),
    ("github.com/golang-jwt/jwt/v4", "golang"),
    ("golang.org/x/crypto", "golang"),
    ("org.apache.logging.log4j:log4j-core", "maven"),
    ("com.fasterxml.jackson.core:jackson-databind", "maven"),
    ("org.springframework:spring-web", "maven"),
    ("io.netty:netty-codec-http2", "maven"),
    ("org.yaml:snakeyaml", "maven"),
    ("lodash", "npm"),
    ("axios", "npm"),
    ("express", "npm"),
    ("semver", "npm"),
    ("ws", "npm"),
    ("urllib3", "pypi"),
    ("requests", "pypi"),
    ("cryptography", "pypi"),
    ("jinja2", "pypi"),
    ("setuptools", "pypi"),
];
const TITLE_A: &[&str] = &[
    "heap-based buffer overflow in",
    "denial of service via crafted input to",
    "use-after-free in",
    "integer overflow in",
    "improper certificate validation in",
    "HTTP/2 rapid reset can cause excessive work in",
    "path traversal in",
    "out-of-bounds read in",
    "uncontrolled resource consumption in",
    "NULL pointer dereference in",
    "regular expression denial of service in",
    "request smuggling through malformed headers in",
];
const TITLE_B: &[&str] = &[
    "the ASN.1 parser",
    "the X.509 certificate verification",
    "the HTTP/2 frame handler",
    "the XML entity expansion logic",
    "the session ticket handling",
    "the multipart form parser",
    "the deflate stream decoder",
    "the DNS resolver",
    "the JSON deserializer when polymorphic typing is enabled",
    "the TLS 1.3 key update handling",
    "the archive extraction code",
];
const SEVERITIES: &[(&str, u64)] = &[
    ("CRITICAL", 5),
    ("HIGH", 20),
    ("MEDIUM", 40),
    ("LOW", 25),
    ("UNKNOWN", 10),
];

const VULNS_PLACEHOLDER: &str = "\u{0}sandbox-vulnerabilities\u{0}";

struct Image {
    registry: &'static str,
    repository: String,
    tag: String,
    digest: String,
    os: (&'static str, &'static str),
    vulns: Vec<Value>,
    /// `vulns` serialized once, spliced into every report of this image.
    vulns_json: Vec<u8>,
}

fn severity(rng: &mut Rng) -> &'static str {
    let total: u64 = SEVERITIES.iter().map(|s| s.1).sum();
    let mut x = rng.next() % total;
    for (s, w) in SEVERITIES {
        if x < *w {
            return s;
        }
        x -= w;
    }
    "UNKNOWN"
}

fn version(rng: &mut Rng) -> String {
    format!("{}.{}.{}", rng.below(4), rng.below(30), rng.below(20))
}

/// One finding. `offset` spreads CVE ids so images of the same base share many of them.
fn vulnerability(
    rng: &mut Rng,
    idx: usize,
    offset: usize,
    base: i64,
    with_description: bool,
) -> Value {
    let n = offset + idx;
    let year = 2019 + (n % 7);
    let id = if n.is_multiple_of(17) {
        format!("GHSA-{}-{}-{}", rng.suffix(4), rng.suffix(4), rng.suffix(4))
    } else {
        format!("CVE-{year}-{}", 1000 + n * 7 % 49000)
    };
    let (pkg, kind) = PACKAGES[n % PACKAGES.len()];
    let installed = version(rng);
    let fixed = match rng.below(10) {
        0..=2 => String::new(),
        3 => format!("{}, {}", version(rng), version(rng)),
        _ => version(rng),
    };
    let sev = severity(rng);
    let published = base - 86_400 * (30 + rng.below(1500) as i64);
    let title = format!("{pkg}: {} {}", rng.pick(TITLE_A), rng.pick(TITLE_B));
    let purl = match kind {
        "deb" => format!("pkg:deb/debian/{pkg}@{installed}?arch=amd64&distro=debian-12.5"),
        "apk" => format!("pkg:apk/alpine/{pkg}@{installed}?arch=x86_64&distro=3.19.1"),
        "golang" => format!("pkg:golang/{pkg}@v{installed}"),
        "maven" => format!("pkg:maven/{}@{installed}", pkg.replace(':', "/")),
        _ => format!("pkg:{kind}/{pkg}@{installed}"),
    };
    let mut v = json!({
        "vulnerabilityID": id,
        "resource": pkg,
        "installedVersion": installed,
        "fixedVersion": fixed,
        "severity": sev,
        "title": title,
        "publishedDate": ts(published, 0),
        "lastModifiedDate": ts(published, 86_400 * rng.below(300) as i64),
        "primaryLink": format!("https://avd.aquasec.com/nvd/{}", id.to_lowercase()),
        "links": [],
        "packagePURL": purl,
        "target": "",
    });
    if sev != "UNKNOWN" {
        v["score"] = json!((rng.below(90) as f64 + 10.0) / 10.0);
    }
    if with_description {
        let mut d = String::new();
        while d.len() < 600 {
            d.push_str(&format!("{} {} allows a remote attacker to cause a denial of service or possibly execute code. ", rng.pick(TITLE_A), rng.pick(TITLE_B)));
        }
        v["description"] = Value::String(d);
        v["packagePath"] =
            Value::String(format!("usr/lib/{}/{}.jar", rng.suffix(6), rng.suffix(8)));
    }
    v
}

fn image(rng: &mut Rng, i: usize, vulns: usize, base: i64) -> Image {
    let name = format!("{}-{}", rng.pick(WORDS), rng.pick(WORDS));
    let registry = *rng.pick(REGISTRIES);
    let repository = if registry == "index.docker.io" && i.is_multiple_of(3) {
        format!("library/{}", rng.pick(WORDS))
    } else {
        format!("example-org/{name}")
    };
    let os = *rng.pick(OS);
    let offset = (i % 5) * 40; // five base-image families share findings
    let vulns: Vec<Value> = (0..vulns)
        .map(|k| vulnerability(rng, k, offset, base, false))
        .collect();
    let vulns_json = serde_json::to_vec(&vulns).unwrap_or_default();
    Image {
        registry,
        repository,
        tag: version(rng),
        digest: format!("sha256:{}", rng.hex(64)),
        os,
        vulns,
        vulns_json,
    }
}

fn summary(vulns: &[Value]) -> Value {
    let count = |s: &str| vulns.iter().filter(|v| v["severity"] == s).count();
    json!({"criticalCount": count("CRITICAL"), "highCount": count("HIGH"), "mediumCount": count("MEDIUM"),
        "lowCount": count("LOW"), "unknownCount": count("UNKNOWN")})
}

fn is_label_value(s: &str) -> bool {
    s.len() <= 63
}

struct Owner<'a> {
    kind: &'a str,
    api_version: &'a str,
    name: &'a str,
    uid: &'a str,
}

#[allow(clippy::too_many_arguments)]
fn report(
    rng: &mut Rng,
    ns: &str,
    owner: &Owner,
    container: &str,
    img: &Image,
    vulns: Value,
    summary: Value,
    created: String,
    updated: String,
    oversize: bool,
) -> Value {
    let full = format!("{}-{}-{}", owner.kind.to_lowercase(), owner.name, container);
    let name = if is_label_value(&full) {
        full
    } else {
        format!(
            "{}-{}",
            owner.kind.to_lowercase(),
            trivy_hash(&format!("{}-{}", owner.name, container))
        )
    };
    let mut labels = json!({
        "app.kubernetes.io/managed-by": "trivy-operator",
        "resource-spec-hash": rng.suffix(9),
        "trivy-operator.container.name": container,
        "trivy-operator.resource.kind": owner.kind,
        "trivy-operator.resource.namespace": ns,
    });
    let mut annotations = json!({"trivy-operator.aquasecurity.github.io/report-ttl": "24h0m0s"});
    if is_label_value(owner.name) {
        labels["trivy-operator.resource.name"] = json!(owner.name);
    } else {
        labels["trivy-operator.resource.name-hash"] = json!(trivy_hash(owner.name));
        annotations["trivy-operator.resource.name"] = json!(owner.name);
    }
    if oversize {
        labels["sandbox.kijo.dev/oversize"] = json!("true");
    }
    json!({
        "apiVersion": "aquasecurity.github.io/v1alpha1",
        "kind": "VulnerabilityReport",
        "metadata": {
            "name": name, "namespace": ns, "uid": uuid_from(&mut rng.0), "creationTimestamp": created,
            "labels": labels, "annotations": annotations,
            "ownerReferences": [{"apiVersion": owner.api_version, "kind": owner.kind, "name": owner.name, "uid": owner.uid,
                "controller": true, "blockOwnerDeletion": false}],
        },
        "report": {
            "updateTimestamp": updated,
            "scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "0.58.1"},
            "registry": {"server": img.registry},
            "artifact": {"repository": img.repository, "tag": img.tag, "digest": img.digest,
                "mimeType": "application/vnd.oci.image.index.v1+json"},
            "os": {"family": img.os.0, "name": img.os.1, "eosl": false},
            "summary": summary,
            "vulnerabilities": vulns,
        }
    })
}

fn pod_spec(containers: &[(String, String)]) -> Value {
    let cs: Vec<Value> = containers
        .iter()
        .map(|(n, image)| json!({"name": n, "image": image, "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}))
        .collect();
    json!({"containers": cs})
}

/// Generates the cluster into `store`; returns the number of objects stored.
pub fn generate(store: &Store, spec: &Spec) -> usize {
    let t0 = std::time::Instant::now();
    let mut rng = Rng(spec.seed ^ 0x6b69_6a6f_7362_7831);
    let base = 1_795_000_000; // 2026-11-17, a fixed clock keeps output reproducible
    let n_ns = (3 + spec.workloads / 300).min(NAMESPACES.len());
    let n_images = (spec.workloads / 8).max(4);
    let images: Vec<Image> = (0..n_images)
        .map(|i| image(&mut rng, i, spec.vulns, base))
        .collect();
    let sidecars: Vec<Image> = (0..3)
        .map(|i| image(&mut rng, 100 + i, spec.vulns / 5, base))
        .collect();
    let sidecar_names = ["istio-proxy", "log-shipper", "metrics-exporter"];
    let vr_res =
        crate::resources::find("aquasecurity.github.io", "v1alpha1", "vulnerabilityreports")
            .expect("vulnerabilityreports is served");
    log::debug!(
        "synthetic: {n_images} images generated in {:?}",
        t0.elapsed()
    );
    let n_oversize = if spec.workloads == 0 {
        0
    } else {
        spec.workloads.div_ceil(1000).min(5)
    };
    let mut stored = 0;
    let mut used = std::collections::HashSet::new();
    for w in 0..spec.workloads {
        let ns = NAMESPACES[w % n_ns];
        let mut name = if w % 37 == 5 {
            rng.pick(LONG_WORDS).to_string()
        } else {
            format!("{}-{}", rng.pick(WORDS), rng.pick(WORDS))
        };
        if !used.insert((ns, name.clone())) {
            name = format!("{name}-{w}");
            used.insert((ns, name.clone()));
        }
        let img = &images[rng.below(images.len())];
        let mut containers = vec![(
            "app".to_string(),
            format!("{}/{}:{}", img.registry, img.repository, img.tag),
        )];
        let side = (rng.below(10) < 2).then(|| rng.below(sidecars.len()));
        if let Some(s) = side {
            let si = &sidecars[s];
            containers.push((
                sidecar_names[s].to_string(),
                format!("{}/{}:{}", si.registry, si.repository, si.tag),
            ));
        }
        let created_at = base - 3600 * (1 + rng.below(24 * 60) as i64);
        let created = ts(created_at, 0);
        let updated = ts(created_at, 60 + rng.below(3600) as i64);
        let app_labels = json!({"app.kubernetes.io/name": name});
        let stateful = w % 10 == 9;
        let top_uid = uuid_from(&mut rng.0);
        let oversize = w < n_oversize * 1000 && w % 1000 == 7 % spec.workloads.max(1);
        // One Deployment in twenty was rolled out once: its old ReplicaSet (revision 1, scaled
        // to 0, an older image) keeps its report, as Trivy leaves it until TTL or GC.
        let rolled_out = !stateful && w % 20 == 3;
        let mut old_rs: Option<(String, String)> = None;
        let (owner_kind, owner_api, owner_name, owner_uid) = if stateful {
            let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": name, "namespace": ns, "uid": top_uid, "creationTimestamp": created, "labels": app_labels},
                "spec": {"replicas": 1, "serviceName": name, "selector": {"matchLabels": app_labels},
                    "template": {"metadata": {"labels": app_labels}, "spec": pod_spec(&containers)}}});
            stored += usize::from(store_object(store, sts, "synthetic"));
            ("StatefulSet", "apps/v1", name.clone(), top_uid.clone())
        } else {
            let hash = rng.suffix(10);
            let rs_name = format!("{name}-{hash}");
            let rs_uid = uuid_from(&mut rng.0);
            let mut rs_labels = app_labels.clone();
            rs_labels["pod-template-hash"] = json!(hash);
            let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": ns, "uid": top_uid, "creationTimestamp": created, "labels": app_labels},
                "spec": {"replicas": 1, "selector": {"matchLabels": app_labels},
                    "template": {"metadata": {"labels": app_labels}, "spec": pod_spec(&containers)}}});
            let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": rs_name, "namespace": ns, "uid": rs_uid, "creationTimestamp": created, "labels": rs_labels,
                    "annotations": {"deployment.kubernetes.io/revision": if rolled_out { "2" } else { "1" }},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": top_uid, "controller": true, "blockOwnerDeletion": true}]},
                "spec": {"replicas": 1, "selector": {"matchLabels": rs_labels},
                    "template": {"metadata": {"labels": rs_labels}, "spec": pod_spec(&containers)}}});
            if rolled_out {
                let old_hash = rng.suffix(10);
                let old_name = format!("{name}-{old_hash}");
                let old_uid = uuid_from(&mut rng.0);
                let mut old_labels = app_labels.clone();
                old_labels["pod-template-hash"] = json!(old_hash);
                let old = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {"name": old_name, "namespace": ns, "uid": old_uid, "creationTimestamp": ts(created_at, -86_400),
                        "labels": old_labels, "annotations": {"deployment.kubernetes.io/revision": "1"},
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": top_uid, "controller": true, "blockOwnerDeletion": true}]},
                    "spec": {"replicas": 0, "selector": {"matchLabels": old_labels},
                        "template": {"metadata": {"labels": old_labels}, "spec": pod_spec(&containers)}}});
                stored += usize::from(store_object(store, old, "synthetic"));
                old_rs = Some((old_name, old_uid));
            }
            let pod = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("{rs_name}-{}", rng.suffix(5)), "namespace": ns, "uid": uuid_from(&mut rng.0),
                    "creationTimestamp": created, "labels": rs_labels,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name, "uid": rs_uid, "controller": true, "blockOwnerDeletion": true}]},
                "spec": pod_spec(&containers), "status": {"phase": "Running"}});
            for o in [deploy, rs, pod] {
                stored += usize::from(store_object(store, o, "synthetic"));
            }
            ("ReplicaSet", "apps/v1", rs_name, rs_uid)
        };
        let owner = Owner {
            kind: owner_kind,
            api_version: owner_api,
            name: &owner_name,
            uid: &owner_uid,
        };
        for (ci, (cname, _)) in containers.iter().enumerate() {
            let im = if ci == 0 {
                img
            } else {
                &sidecars[side.unwrap_or(0)]
            };
            let created_r = ts(created_at, 120);
            let stored_ok = if oversize && ci == 0 {
                // ~6000 findings with descriptions: several MiB, beyond what etcd would accept.
                let vulns: Vec<Value> = (0..6000)
                    .map(|k| vulnerability(&mut rng, k, 0, base, true))
                    .collect();
                let sum = summary(&vulns);
                let r = report(
                    &mut rng,
                    ns,
                    &owner,
                    cname,
                    im,
                    Value::Array(vulns),
                    sum,
                    created_r,
                    updated.clone(),
                    true,
                );
                store_object(store, r, "synthetic")
            } else {
                let r = report(
                    &mut rng,
                    ns,
                    &owner,
                    cname,
                    im,
                    json!(VULNS_PLACEHOLDER),
                    summary(&im.vulns),
                    created_r,
                    updated.clone(),
                    false,
                );
                store
                    .insert_spliced(vr_res, ns, r, Some((VULNS_PLACEHOLDER, &im.vulns_json)))
                    .is_ok()
            };
            stored += usize::from(stored_ok);
        }
        if let Some((old_name, old_uid)) = &old_rs {
            let old_owner = Owner {
                kind: "ReplicaSet",
                api_version: "apps/v1",
                name: old_name,
                uid: old_uid,
            };
            let older = &images[(w * 7 + 1) % images.len()];
            let created_r = ts(created_at, -86_000);
            let r = report(
                &mut rng,
                ns,
                &old_owner,
                "app",
                older,
                json!(VULNS_PLACEHOLDER),
                summary(&older.vulns),
                created_r.clone(),
                created_r,
                false,
            );
            stored += usize::from(
                store
                    .insert_spliced(vr_res, ns, r, Some((VULNS_PLACEHOLDER, &older.vulns_json)))
                    .is_ok(),
            );
        }
    }
    stored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_and_rejects() {
        let s = Spec::parse("3000:150").unwrap();
        assert_eq!((s.workloads, s.vulns, s.seed), (3000, 150, 1));
        assert_eq!(Spec::parse("1:2:3").unwrap().seed, 3);
        for bad in ["", "3000", "a:b", "1:2:3:4"] {
            assert!(Spec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hashes_use_the_safe_alphabet_and_are_stable() {
        let h = trivy_hash("web-7c9d8f6b5d-nginx");
        assert_eq!(h, trivy_hash("web-7c9d8f6b5d-nginx"));
        assert_ne!(h, trivy_hash("web-7c9d8f6b5d-sidecar"));
        assert!(!h.is_empty() && h.bytes().all(|b| SAFE.contains(&b)));
    }
}

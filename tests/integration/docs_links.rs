//! Every relative link and `#anchor` in README.md and docs/**/*.md resolves, as GitHub renders
//! them: a newcomer who follows one lands on a file that exists and a heading that is there.
//!
//! Markdown is parsed with pulldown-cmark (CommonMark, as GitHub's renderer), so links inside
//! code blocks and code spans are not links, and reference-style links count like inline ones.
//! Heading anchors follow GitHub's rule (the heading's text, lower-cased, every character that is
//! not a letter, digit, `_`, `-` or space removed, spaces turned into `-`; a repeated anchor gets
//! `-1`, `-2`, … in order).

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use pulldown_cmark::{Event, LinkType, Options, Parser, Tag, TagEnd};

/// One Markdown file: its anchors in order, and every link destination it has.
#[derive(Debug, Default)]
struct Doc {
    anchors: Vec<String>,
    links: Vec<String>,
}

/// GitHub's anchor for a heading's text, before de-duplication.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn parse(text: &str) -> Doc {
    let mut doc = Doc::default();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut heading: Option<String> = None;
    // A `[text][ref]` whose reference is never defined renders as plain text on GitHub: a dead
    // link as far as the reader can tell. Shortcut forms (`[x]`) are ordinary text too often
    // (`[0, 10 min)`), so only the full form is reported.
    let mut undefined = Vec::new();
    let mut broken = |b: pulldown_cmark::BrokenLink<'_>| {
        if b.link_type == LinkType::Reference {
            undefined.push(format!("[…][{}]", b.reference));
        }
        None
    };
    let options =
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    for event in Parser::new_with_broken_link_callback(text, options, Some(&mut broken)) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::End(TagEnd::Heading(_)) => {
                let base = slug(&heading.take().unwrap_or_default());
                let n = seen.entry(base.clone()).or_insert(0);
                doc.anchors.push(if *n == 0 {
                    base.clone()
                } else {
                    format!("{base}-{n}")
                });
                *n += 1;
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                doc.links.push(dest_url.into_string());
            }
            _ => {}
        }
    }
    doc.links.extend(undefined);
    doc
}

/// `base/../x` → `x`, without touching the file system; `None` when it climbs above the root.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Every problem, one line each: the file, the link and why it does not resolve. `docs` maps a
/// repository-relative path to its parsed Markdown; `exists` answers for any other path.
fn problems(docs: &BTreeMap<PathBuf, Doc>, exists: &dyn Fn(&Path) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    for (file, doc) in docs {
        let here = file.display();
        for link in &doc.links {
            if link.starts_with("[…]") {
                out.push(format!("{here}: {link}: the reference is never defined"));
                continue;
            }
            if link.contains("://") || link.starts_with("mailto:") {
                continue; // external: not checked offline
            }
            let (path, anchor) = match link.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (link.as_str(), None),
            };
            if path.starts_with('/') {
                out.push(format!(
                    "{here}: link `{link}`: absolute path; GitHub resolves links relative to the file, write it relative"
                ));
                continue;
            }
            let target = if path.is_empty() {
                Some(file.clone())
            } else {
                normalize(&file.parent().unwrap_or(Path::new("")).join(path))
            };
            let Some(target) = target else {
                out.push(format!(
                    "{here}: link `{link}`: climbs out of the repository"
                ));
                continue;
            };
            let target_doc = docs.get(&target);
            if target_doc.is_none() && !exists(&target) {
                out.push(format!(
                    "{here}: link `{link}`: {} does not exist",
                    target.display()
                ));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            match target_doc {
                Some(d) if d.anchors.iter().any(|a| a == anchor) => {}
                Some(_) => out.push(format!(
                    "{here}: link `{link}`: {} has no heading with anchor #{anchor}",
                    target.display()
                )),
                // GitHub's line anchors on source files.
                None if anchor.strip_prefix('L').is_some_and(|n| {
                    n.split("-L").all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                }) => {}
                None => out.push(format!(
                    "{here}: link `{link}`: {} is not Markdown, so #{anchor} cannot be checked; link the file or a line (#L10)",
                    target.display()
                )),
            }
        }
    }
    out
}

fn markdown_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(root.join(dir))
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", root.join(dir).display()));
    for entry in entries {
        let entry = entry.expect("directory entry");
        let rel = dir.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            markdown_files(root, &rel, out);
        } else if rel.extension().is_some_and(|e| e == "md") {
            out.push(rel);
        }
    }
}

#[test]
fn readme_and_docs_links_and_anchors_resolve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![PathBuf::from("README.md")];
    markdown_files(root, Path::new("docs"), &mut files);
    assert!(files.len() > 1, "docs/ holds no Markdown: {files:?}");
    let docs: BTreeMap<PathBuf, Doc> = files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(root.join(&f))
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", f.display()));
            (f, parse(&text))
        })
        .collect();
    let links: usize = docs.values().map(|d| d.links.len()).sum();
    assert!(
        links > 20,
        "only {links} links found: is the parser seeing the files?"
    );
    let bad = problems(&docs, &|p| root.join(p).exists());
    assert!(
        bad.is_empty(),
        "{} broken links:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn anchors_follow_githubs_slug_rule() {
    let doc = parse(
        "# Database URL (`KIJO_DATABASE_URL`)\n\
         ## What the agent knows: `kijo-agent history`\n\
         ## High availability (leader election)\n\
         ## Exec credential plugins (EKS, GKE, AKS)\n\
         ## Delivery, retries and dead letters\n\
         ## Metrics\n## Metrics\n## Metrics\n\
         ```sh\n# not a heading\n```\n",
    );
    assert_eq!(
        doc.anchors,
        [
            "database-url-kijo_database_url",
            "what-the-agent-knows-kijo-agent-history",
            "high-availability-leader-election",
            "exec-credential-plugins-eks-gke-aks",
            "delivery-retries-and-dead-letters",
            "metrics",
            "metrics-1",
            "metrics-2",
        ]
    );
}

#[test]
fn broken_links_are_reported_with_file_link_and_reason() {
    let readme = parse(
        "# Top\n\
         [ok](docs/a.md#part-two) [ok](#top) [ok](src/lib.rs#L3-L9) [ext](https://example.com/#x)\n\
         `[in code](nowhere.md)`\n\
         [gone](docs/missing.md) [anchor](docs/a.md#part-three) [self](#nope)\n\
         [abs](/docs/a.md) [up](../outside.md) [src](src/lib.rs#intro) [ref][undefined]\n",
    );
    let a = parse("# A\n## Part two\n[back](../README.md#top) [bad](../README.md#bottom)\n");
    let docs = BTreeMap::from([
        (PathBuf::from("README.md"), readme),
        (PathBuf::from("docs/a.md"), a),
    ]);
    let bad = problems(&docs, &|p| p == Path::new("src/lib.rs"));
    assert_eq!(
        bad,
        [
            "README.md: link `docs/missing.md`: docs/missing.md does not exist",
            "README.md: link `docs/a.md#part-three`: docs/a.md has no heading with anchor #part-three",
            "README.md: link `#nope`: README.md has no heading with anchor #nope",
            "README.md: link `/docs/a.md`: absolute path; GitHub resolves links relative to the file, write it relative",
            "README.md: link `../outside.md`: climbs out of the repository",
            "README.md: link `src/lib.rs#intro`: src/lib.rs is not Markdown, so #intro cannot be checked; link the file or a line (#L10)",
            "README.md: […][undefined]: the reference is never defined",
            "docs/a.md: link `../README.md#bottom`: README.md has no heading with anchor #bottom",
        ]
    );
}

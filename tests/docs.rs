//! The documentation holds together (issue 24): every relative link and
//! image in `README.md`, `BENCHMARKS.md` and `docs/**/*.md` points at a file
//! that exists, and every `#anchor` at a heading of its page (GitHub's slug
//! rule); every page and image under `docs/` is reachable from `README.md`
//! by links; `README.md` stays short; and the configuration reference
//! (`docs/reference/config.md`) documents exactly the keys the config schema
//! accepts (read from the `deny_unknown_fields` structs of `src/config.rs`
//! and `src/policy.rs` as text).
//!
//! Pure file reading: no sockets, no processes, no network. External links
//! (`https://…`) are not fetched.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Component, Path, PathBuf};

/// README.md must stay a front page: a few screens.
const README_MAX_LINES: usize = 250;

/// Keys the reference documents that another branch adds to the schema at
/// the same time (the lead merges both). A key here may be missing from
/// `src/`; once it is there this list is only a no-op, and can be emptied.
const PENDING_KEYS: &[&str] = &["body_min_bytes_per_sec"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file under `dir`, recursively, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn is_markdown(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "md")
}

/// The Markdown files whose links are checked.
fn markdown_files() -> Vec<PathBuf> {
    let root = repo();
    let mut files = vec![root.join("README.md"), root.join("BENCHMARKS.md")];
    files.extend(
        files_under(&root.join("docs"))
            .into_iter()
            .filter(|p| is_markdown(p)),
    );
    files
}

/// The lines of `text` outside fenced code blocks, with their 1-based
/// numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match fence {
            Some(f) => {
                if trimmed.starts_with(f) {
                    fence = None;
                }
            }
            None if trimmed.starts_with("```") => fence = Some("```"),
            None if trimmed.starts_with("~~~") => fence = Some("~~~"),
            None => out.push((i + 1, line)),
        }
    }
    out
}

/// `line` with its inline code spans blanked out (a link written inside
/// backticks is an example, not a link).
fn without_code_spans(line: &str) -> String {
    line.split('`')
        .enumerate()
        .map(|(i, part)| if i % 2 == 0 { part } else { "" })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The targets of the inline links and images on one line of prose:
/// `[text](target)`, `![alt](target "title")`.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code_spans(line);
    let mut out = Vec::new();
    let mut rest = line.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let end = after.find([')', ' ']).unwrap_or(after.len());
        let target = after[..end].trim_start_matches('<').trim_end_matches('>');
        if !target.is_empty() {
            out.push(target.to_string());
        }
        rest = &after[end..];
    }
    out
}

/// GitHub's anchor for a heading: the text lower-cased, links reduced to
/// their text, every character but letters, digits, spaces, `-` and `_`
/// dropped, spaces turned into `-`.
fn slug(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    // [text](target) → text
    while let Some(open) = rest.find('[') {
        let Some(mid) = rest[open..].find("](") else {
            break;
        };
        let Some(close) = rest[open + mid..].find(')') else {
            break;
        };
        text.push_str(&rest[..open]);
        text.push_str(&rest[open + 1..open + mid]);
        rest = &rest[open + mid + close + 1..];
    }
    text.push_str(rest);
    text.trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a page's headings, duplicates numbered as GitHub does
/// (`name`, `name-1`, `name-2`).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if hashes == 0 || hashes > 6 || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(line[hashes..].trim().trim_end_matches('#'));
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:")
}

/// `base/rel` with `.` and `..` resolved, without touching the disk.
fn join_normalized(base: &Path, rel: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in base.join(rel).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// One relative link of a page, resolved.
struct Link {
    from: PathBuf,
    line: usize,
    target: String,
    path: PathBuf,
    anchor: Option<String>,
}

fn relative_links(page: &Path) -> Vec<Link> {
    let text = read(page);
    let dir = page.parent().unwrap();
    let mut out = Vec::new();
    for (n, line) in prose_lines(&text) {
        for target in link_targets(line) {
            if is_external(&target) {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a.to_string())),
                None => (target.as_str(), None),
            };
            let path = if file.is_empty() {
                page.to_path_buf()
            } else {
                join_normalized(dir, file)
            };
            out.push(Link {
                from: page.to_path_buf(),
                line: n,
                target: target.clone(),
                path,
                anchor,
            });
        }
    }
    out
}

fn shown(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The problems of a set of pages' links: targets that do not exist and
/// anchors that name no heading.
fn broken_links(pages: &[PathBuf]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut anchor_cache: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    for page in pages {
        for link in relative_links(page) {
            let at = format!("{}:{}: ({})", shown(&link.from), link.line, link.target);
            if !link.path.exists() {
                problems.push(format!("{at}: {} does not exist", shown(&link.path)));
                continue;
            }
            let Some(anchor) = &link.anchor else { continue };
            if !is_markdown(&link.path) {
                continue;
            }
            let known = anchor_cache
                .entry(link.path.clone())
                .or_insert_with(|| anchors(&read(&link.path)));
            if !known.contains(anchor) {
                problems.push(format!(
                    "{at}: {} has no heading #{anchor}",
                    shown(&link.path)
                ));
            }
        }
    }
    problems
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let problems = broken_links(&markdown_files());
    assert!(
        problems.is_empty(),
        "broken links:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn every_page_and_image_under_docs_is_reachable_from_the_readme() {
    let root = repo();
    let mut reached = BTreeSet::new();
    let mut todo = VecDeque::from([root.join("README.md")]);
    while let Some(page) = todo.pop_front() {
        if !reached.insert(page.clone()) || !is_markdown(&page) || !page.exists() {
            continue;
        }
        for link in relative_links(&page) {
            if link.path.is_file() && !reached.contains(&link.path) {
                todo.push_back(link.path);
            }
        }
    }
    let unreached: Vec<String> = files_under(&root.join("docs"))
        .into_iter()
        .filter(|p| !reached.contains(p))
        .map(|p| shown(&p))
        .collect();
    assert!(
        unreached.is_empty(),
        "not reachable by links from README.md: {unreached:?}"
    );
}

#[test]
fn the_readme_fits_on_a_few_screens() {
    let lines = read(&repo().join("README.md")).lines().count();
    assert!(
        lines < README_MAX_LINES,
        "README.md has {lines} lines; keep it under {README_MAX_LINES} and move detail to docs/"
    );
}

#[test]
fn the_readme_opens_with_the_two_commands() {
    let readme = read(&repo().join("README.md"));
    let first_block: String = readme
        .split("```")
        .nth(1)
        .expect("README.md has a code block")
        .to_string();
    assert!(
        first_block.contains("./dev run") && first_block.contains("./dev test"),
        "README.md's first code block is not `./dev run` and `./dev test`: {first_block}"
    );
    let dev = read(&repo().join("dev"));
    assert!(
        dev.contains("run)") && dev.contains("test)"),
        "./dev has run and test"
    );
}

/// The identifiers in the backticked spans of the key column of every
/// `| key | … |` table on a page: `[server] listen` gives `server` and
/// `listen`, `[[sites.slots.match]]` gives `sites`, `slots`, `match`.
fn documented_keys(page: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut in_key_table = false;
    for (_, line) in prose_lines(page) {
        let line = line.trim();
        if !line.starts_with('|') {
            in_key_table = false;
            continue;
        }
        let first_cell = line[1..].split('|').next().unwrap_or("").trim();
        if first_cell == "key" {
            in_key_table = true;
            continue;
        }
        if !in_key_table || first_cell.starts_with("---") {
            continue;
        }
        for (i, span) in first_cell.split('`').enumerate() {
            if i % 2 == 0 {
                continue;
            }
            for word in span.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with(|c: char| c.is_ascii_lowercase()) {
                    keys.insert(word.to_string());
                }
            }
        }
    }
    keys
}

/// The field names serde accepts in the `deny_unknown_fields` structs of a
/// source file, with `rename = "…"` applied.
fn schema_keys(source: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut attrs = String::new();
    let mut in_struct = false;
    for line in source.lines() {
        let t = line.trim();
        if !in_struct {
            if t.starts_with("#[") {
                attrs.push_str(t);
            } else if t.starts_with("pub struct ") && t.ends_with('{') {
                in_struct = attrs.contains("deny_unknown_fields");
                attrs.clear();
            } else if !t.starts_with("//") {
                attrs.clear();
            }
            continue;
        }
        if line.starts_with('}') {
            in_struct = false;
            attrs.clear();
            continue;
        }
        if t.starts_with("#[") {
            attrs.push_str(t);
        } else if let Some(rest) = t.strip_prefix("pub ") {
            if let Some((name, _)) = rest.split_once(':') {
                let renamed = attrs
                    .split_once("rename = \"")
                    .and_then(|(_, r)| r.split_once('"'))
                    .map(|(r, _)| r.to_string());
                keys.insert(renamed.unwrap_or_else(|| name.trim().to_string()));
            }
            attrs.clear();
        } else if !t.starts_with("//") {
            attrs.clear();
        }
    }
    keys
}

#[test]
fn the_config_reference_documents_exactly_the_keys_the_schema_accepts() {
    let root = repo();
    let documented = documented_keys(&read(&root.join("docs/reference/config.md")));
    let mut schema = schema_keys(&read(&root.join("src/config.rs")));
    schema.extend(schema_keys(&read(&root.join("src/policy.rs"))));
    assert!(
        schema.len() > 60,
        "the schema parse found only {} keys: {schema:?}",
        schema.len()
    );
    let undocumented: Vec<&String> = schema.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "config keys the schema accepts but docs/reference/config.md does not list: {undocumented:?}"
    );
    let unknown: Vec<&String> = documented
        .difference(&schema)
        .filter(|k| !PENDING_KEYS.contains(&k.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/reference/config.md lists keys the schema does not accept: {unknown:?}"
    );
}

// The checker's own rules, on made-up text.

#[test]
fn slugs_follow_githubs_rule() {
    assert_eq!(
        slug("Soak (`benches/load/soak.sh`)"),
        "soak-benchesloadsoaksh"
    );
    assert_eq!(
        slug("Ramp: slot vs bucket assignment (`examples/ramp_sim.rs`)"),
        "ramp-slot-vs-bucket-assignment-examplesramp_simrs"
    );
    assert_eq!(
        slug("Traffic policy: request matches and outlier ejection"),
        "traffic-policy-request-matches-and-outlier-ejection"
    );
    assert_eq!(slug("See [Swaps](swaps.md) – now"), "see-swaps--now");
    let a = anchors("# A\n```\n# not a heading\n```\n## A\n#nope\n");
    assert_eq!(a, BTreeSet::from(["a".to_string(), "a-1".to_string()]));
}

#[test]
fn links_are_found_outside_code_only() {
    assert_eq!(
        link_targets("see [x](a.md#b), ![img](p.png \"t\") and `[no](c.md)`"),
        vec!["a.md#b", "p.png"]
    );
    let text = "[a](a.md)\n```sh\n[b](b.md)\n```\n[c](c.md)\n";
    let found: Vec<String> = prose_lines(text)
        .into_iter()
        .flat_map(|(_, l)| link_targets(l))
        .collect();
    assert_eq!(found, vec!["a.md", "c.md"]);
}

#[test]
fn a_broken_link_and_a_missing_anchor_are_reported() {
    let dir = std::env::temp_dir().join(format!("slotproxy-docs-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("page.md");
    std::fs::write(
        &page,
        "# Title\n\n[ok](#title) [gone](missing.md) [no heading](#nowhere) [self](page.md#title)\n",
    )
    .unwrap();
    let problems = broken_links(std::slice::from_ref(&page));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("missing.md does not exist"),
        "{problems:?}"
    );
    assert!(problems[1].contains("no heading #nowhere"), "{problems:?}");
}

#[test]
fn schema_keys_read_renames_and_skip_open_structs() {
    let src = "#[derive(Deserialize)]\n#[serde(deny_unknown_fields)]\npub struct A {\n    pub one: u8,\n    /// doc\n    #[serde(default, rename = \"match\")]\n    pub matches: Vec<u8>,\n}\n\n#[derive(Deserialize)]\npub struct Open {\n    pub free: u8,\n}\n";
    assert_eq!(
        schema_keys(src),
        BTreeSet::from(["one".to_string(), "match".to_string()])
    );
}

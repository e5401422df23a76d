//! The documentation holds together (issue 24): every relative link and
//! image in `README.md`, `BENCHMARKS.md` and `docs/**/*.md` points at a file
//! that exists, and every `#anchor` at a heading of its page (GitHub's slug
//! rule); every page and image under `docs/` is reachable from `README.md`
//! by links, and every page is in the contents (`docs/README.md`); `README.md` stays short; and the configuration reference
//! (`docs/reference/config.md`) documents exactly the keys the config schema
//! accepts, each under the section that holds it (the schema read as text
//! from the `deny_unknown_fields` structs of `src/config.rs` and
//! `src/policy.rs`, from `Config` down).
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
const PENDING_KEYS: &[&str] = &[];

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
fn the_contents_page_lists_every_page_under_docs() {
    let root = repo();
    let contents = root.join("docs/README.md");
    let listed: BTreeSet<PathBuf> = relative_links(&contents)
        .into_iter()
        .map(|l| l.path)
        .collect();
    let missing: Vec<String> = files_under(&root.join("docs"))
        .into_iter()
        .filter(|p| is_markdown(p) && *p != contents && !listed.contains(p))
        .map(|p| shown(&p))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/README.md (the contents) does not link: {missing:?}"
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

/// A struct of the config schema: its fields as serde names them, each
/// with the schema struct its value is (if it is one).
#[derive(Debug, Default)]
struct SchemaStruct {
    deny_unknown: bool,
    fields: BTreeMap<String, Option<String>>,
}

/// The structs of a source file, read as text: `pub struct X {` blocks,
/// their `pub` fields with `rename = "…"` applied, and the type of each
/// field reduced to the struct names it mentions (`Vec<crate::policy::
/// MatchEntry>` → `MatchEntry`), resolved once every file is read.
fn schema_structs(source: &str, into: &mut BTreeMap<String, SchemaStruct>) {
    let mut attrs = String::new();
    let mut current: Option<String> = None;
    for line in source.lines() {
        let t = line.trim();
        let Some(name) = current.clone() else {
            if t.starts_with("#[") {
                attrs.push_str(t);
            } else if let Some(rest) = t.strip_prefix("pub struct ") {
                if let Some(name) = rest.strip_suffix('{') {
                    let name = name.trim().to_string();
                    into.entry(name.clone()).or_default().deny_unknown =
                        attrs.contains("deny_unknown_fields");
                    current = Some(name);
                }
                attrs.clear();
            } else if !t.starts_with("//") {
                attrs.clear();
            }
            continue;
        };
        if line.starts_with('}') {
            current = None;
            attrs.clear();
            continue;
        }
        if t.starts_with("#[") {
            attrs.push_str(t);
        } else if let Some(rest) = t.strip_prefix("pub ") {
            if let Some((field, ty)) = rest.split_once(':') {
                let renamed = attrs
                    .split_once("rename = \"")
                    .and_then(|(_, r)| r.split_once('"'))
                    .map(|(r, _)| r.to_string());
                let field = renamed.unwrap_or_else(|| field.trim().to_string());
                // the type's last CamelCase identifier; kept only if it
                // names a struct (checked in `resolve_types`)
                let ty = ty
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .rfind(|w| w.starts_with(|c: char| c.is_ascii_uppercase()))
                    .map(str::to_string);
                into.get_mut(&name).unwrap().fields.insert(field, ty);
            }
            attrs.clear();
        } else if !t.starts_with("//") {
            attrs.clear();
        }
    }
}

/// Field types that are not schema structs (`String`, `PathBuf`, enums) are
/// plain values.
fn resolve_types(structs: &mut BTreeMap<String, SchemaStruct>) {
    let names: BTreeSet<String> = structs.keys().cloned().collect();
    for s in structs.values_mut() {
        for ty in s.fields.values_mut() {
            if ty.as_ref().is_some_and(|t| !names.contains(t)) {
                *ty = None;
            }
        }
    }
}

/// The schema: `Config` and every struct reachable from it.
fn config_schema() -> BTreeMap<String, SchemaStruct> {
    let root = repo();
    let mut structs = BTreeMap::new();
    for module in ["config", "policy", "shadow"] {
        // `src/config.rs`, or the files of `src/config/` if it moves there
        let mut files: Vec<PathBuf> = vec![root.join(format!("src/{module}.rs"))];
        let dir = root.join("src").join(module);
        if dir.is_dir() {
            files.extend(files_under(&dir));
        }
        files.retain(|f| f.is_file() && f.extension().is_some_and(|e| e == "rs"));
        assert!(!files.is_empty(), "no source for the `{module}` module");
        for file in files {
            schema_structs(&read(&file), &mut structs);
        }
    }
    resolve_types(&mut structs);
    let mut reachable = BTreeSet::from(["Config".to_string()]);
    let mut todo = vec!["Config".to_string()];
    while let Some(name) = todo.pop() {
        for ty in structs[&name].fields.values().flatten() {
            if reachable.insert(ty.clone()) {
                todo.push(ty.clone());
            }
        }
    }
    structs.retain(|name, _| reachable.contains(name));
    structs
}

fn identifiers(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with(|c: char| c.is_ascii_lowercase()))
}

/// Reads the key column of every `| key | … |` table of a page against the
/// schema. A span `[server] listen` or `[[sites.slots]] name` names a
/// section (a path of fields from `Config`) and keys of it; a bare span
/// (`token`, `hostnames`) is a key of the section last named, in that row or
/// a row above. Returns the (struct, field) pairs documented and the
/// problems: a section path or a key the schema does not have there.
fn check_key_tables(
    page: &str,
    schema: &BTreeMap<String, SchemaStruct>,
    pending: &[&str],
) -> (BTreeSet<(String, String)>, Vec<String>) {
    let mut documented = BTreeSet::new();
    let mut problems = Vec::new();
    let mut in_key_table = false;
    let mut section: Option<String> = None;
    for (n, line) in prose_lines(page) {
        let line = line.trim();
        if !line.starts_with('|') {
            in_key_table = false;
            continue;
        }
        let first_cell = line[1..].split('|').next().unwrap_or("").trim();
        if first_cell == "key" {
            in_key_table = true;
            section = None;
            continue;
        }
        if !in_key_table || first_cell.starts_with("---") {
            continue;
        }
        for (i, span) in first_cell.split('`').enumerate() {
            if i % 2 == 0 {
                continue;
            }
            let mut keys = span;
            if span.starts_with('[') {
                let close = span.rfind(']').unwrap_or(span.len() - 1);
                let path = span[..close].trim_matches(|c| c == '[' || c == ']');
                keys = &span[close + 1..];
                // walk the path from Config
                let mut at = "Config".to_string();
                for part in path.split('.') {
                    let Some(field) = schema[&at].fields.get(part) else {
                        problems.push(format!("line {n}: [{path}]: {at} has no `{part}`"));
                        break;
                    };
                    documented.insert((at.clone(), part.to_string()));
                    match field {
                        Some(ty) => at = ty.clone(),
                        None => break,
                    }
                }
                section = Some(at);
            }
            for key in identifiers(keys) {
                let Some(s) = &section else {
                    problems.push(format!("line {n}: `{key}` before any [section]"));
                    continue;
                };
                if schema[s].fields.contains_key(key) {
                    documented.insert((s.clone(), key.to_string()));
                } else if !pending.contains(&key) {
                    problems.push(format!("line {n}: `{key}` is not a key of {s}"));
                }
            }
        }
    }
    (documented, problems)
}

#[test]
fn the_config_reference_documents_exactly_the_keys_the_schema_accepts() {
    let schema = config_schema();
    let keys: usize = schema.values().map(|s| s.fields.len()).sum();
    assert!(
        schema.len() >= 14 && keys > 70,
        "the schema parse found {} structs and {keys} keys: {schema:?}",
        schema.len()
    );
    let loose: Vec<&String> = schema
        .iter()
        .filter(|(_, s)| !s.deny_unknown)
        .map(|(n, _)| n)
        .collect();
    assert!(
        loose.is_empty(),
        "config structs without deny_unknown_fields (the check assumes it): {loose:?}"
    );
    let page = read(&repo().join("docs/reference/config.md"));
    let (documented, problems) = check_key_tables(&page, &schema, PENDING_KEYS);
    assert!(
        problems.is_empty(),
        "docs/reference/config.md lists keys the schema does not accept there:\n  {}",
        problems.join("\n  ")
    );
    let mut undocumented = Vec::new();
    for (name, s) in &schema {
        for (field, ty) in &s.fields {
            if documented.contains(&(name.clone(), field.clone())) {
                continue;
            }
            // `all = [{…}]`: a list of conditions whose keys are the
            // entry's own, documented with it
            let inherited = ty.is_none()
                && schema.iter().any(|(parent, p)| {
                    p.fields.values().flatten().any(|t| t == name)
                        && documented.contains(&(parent.clone(), field.clone()))
                });
            if !inherited {
                undocumented.push(format!("{name}.{field}"));
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "config keys the schema accepts but docs/reference/config.md does not list: {undocumented:?}"
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
fn key_tables_are_read_against_the_schema_by_section() {
    let src = "#[derive(Deserialize)]\n#[serde(deny_unknown_fields)]\npub struct Config {\n    #[serde(default)]\n    pub server: Server,\n    pub sites: Vec<Site>,\n}\n\n#[serde(deny_unknown_fields, default)]\npub struct Server {\n    pub listen: Vec<String>,\n    /// doc\n    #[serde(default, rename = \"match\")]\n    pub matches: Option<crate::x::Thing>,\n}\n\n#[serde(deny_unknown_fields)]\npub struct Site {\n    pub name: String,\n}\n";
    let mut schema = BTreeMap::new();
    schema_structs(src, &mut schema);
    resolve_types(&mut schema);
    assert_eq!(
        schema["Config"].fields["server"],
        Some("Server".to_string())
    );
    assert_eq!(schema["Server"].fields["match"], None, "{schema:?}");
    let page = "| key | default |\n| --- | --- |\n| `[server] listen`, `match` | x |\n| `[[sites]] name` | x |\n| `[server] lisen` | x |\n| `[sites] nope`, `new_key` | x |\n";
    let (documented, problems) = check_key_tables(page, &schema, &["new_key"]);
    assert!(documented.contains(&("Server".to_string(), "match".to_string())));
    assert!(documented.contains(&("Site".to_string(), "name".to_string())));
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("`lisen` is not a key of Server"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("`nope` is not a key of Site"),
        "{problems:?}"
    );
}

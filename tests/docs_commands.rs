//! Every `slotproxy …` command the documentation shows is one the real
//! binary accepts (issue 24): each command line of a shell block in
//! `README.md` and `docs/**/*.md` (and each `$ slotproxy …` line of a
//! transcript) is run as `slotproxy <its arguments> --help`, which makes
//! clap check every subcommand, flag and value up to the `--help` and then
//! print help instead of acting. A renamed flag, a removed verb or a value
//! the CLI no longer takes fails here, naming the page and line.
//!
//! Synopsis lines with placeholders (`[--site shop]`, `(a | b)`, `...`) and
//! lines with shell expansions (`$VAR`) are left out: they are not commands.
//! No sockets; one short-lived process per command.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn markdown_files() -> Vec<PathBuf> {
    let root = repo();
    let mut out = vec![root.join("README.md")];
    let mut todo = vec![root.join("docs")];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The command lines of a page's code blocks, with their 1-based line
/// numbers: every line of a `sh`/`bash`/`console` block and every `$ `
/// line of any block, continuation lines (`\`) joined.
fn command_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            block = match block {
                Some(_) => None,
                None => Some(info.trim().to_string()),
            };
            pending = None;
            continue;
        }
        let Some(info) = &block else { continue };
        let shell = matches!(info.as_str(), "sh" | "bash" | "console" | "shell");
        let (start, text) = match pending.take() {
            Some((n, so_far)) => (n, format!("{so_far} {}", line.trim())),
            None => {
                let Some(cmd) = trimmed.strip_prefix("$ ").or(shell.then_some(trimmed)) else {
                    continue;
                };
                (i + 1, cmd.to_string())
            }
        };
        match text.strip_suffix('\\') {
            Some(head) => pending = Some((start, head.trim_end().to_string())),
            None => out.push((start, text)),
        }
    }
    out
}

/// A command line split as a shell would (quotes, backslashes), up to an
/// unquoted `#` comment, `&`, `;` or `|`. `None` if it holds what is not a
/// command: a placeholder or an expansion outside quotes.
fn shell_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    word.push(q);
                }
            }
            '"' => {
                in_word = true;
                while let Some(q) = chars.next() {
                    match q {
                        '"' => break,
                        '$' | '`' => return None,
                        '\\' => word.extend(chars.next()),
                        _ => word.push(q),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            '&' | ';' | '|' if !in_word || word.is_empty() => break,
            '[' | ']' | '(' | ')' | '<' | '>' | '$' | '`' | '|' => return None,
            _ => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    if words.iter().any(|w| w.contains("...") || w.contains('…')) {
        return None;
    }
    Some(words)
}

/// A synopsis line (`slot list [--site shop]`, `(--a x | --disable)`,
/// `--action swap|preview`, `--header n=v ...`) as one command it allows:
/// optional parts taken, the first of each set of alternatives, no `...`.
fn synopsis_form(line: &str) -> String {
    let mut out = String::new();
    let mut in_alternatives = false;
    let mut skipping = false;
    for c in line.chars() {
        match c {
            '#' => break,
            '[' | ']' => {}
            '(' => in_alternatives = true,
            ')' => {
                in_alternatives = false;
                skipping = false;
            }
            '|' if in_alternatives => skipping = true,
            _ if skipping => {}
            _ => out.push(c),
        }
    }
    out.split_whitespace()
        .filter(|w| *w != "..." && *w != "…")
        .map(|w| w.split('|').next().unwrap())
        .collect::<Vec<_>>()
        .join(" ")
}

struct DocCommand {
    page: PathBuf,
    line: usize,
    args: Vec<String>,
}

fn doc_commands() -> Vec<DocCommand> {
    let mut out = Vec::new();
    for page in markdown_files() {
        let text = std::fs::read_to_string(&page).unwrap();
        for (line, cmd) in command_lines(&text) {
            let Some(words) = shell_words(&cmd).or_else(|| shell_words(&synopsis_form(&cmd)))
            else {
                continue;
            };
            if words.first().map(String::as_str) != Some("slotproxy") || words.len() < 2 {
                continue;
            }
            out.push(DocCommand {
                page: page.clone(),
                line,
                args: words[1..].to_vec(),
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

#[test]
fn every_slotproxy_command_in_the_docs_is_one_the_cli_accepts() {
    let commands = doc_commands();
    assert!(
        commands.len() >= 40,
        "found only {} slotproxy commands in the docs; is the block parser broken?",
        commands.len()
    );
    let mut failures = Vec::new();
    for c in &commands {
        let out = Command::new(env!("CARGO_BIN_EXE_slotproxy"))
            .args(&c.args)
            .arg("--help")
            .env_remove("SLOTPROXY_ADMIN_URL")
            .env_remove("SLOTPROXY_ADMIN_TOKEN")
            .output()
            .expect("run slotproxy");
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            failures.push(format!(
                "{}:{}: slotproxy {}\n    {}",
                shown(&c.page),
                c.line,
                c.args.join(" "),
                err.lines().take(3).collect::<Vec<_>>().join("\n    ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "commands in the docs that the CLI refuses:\n  {}",
        failures.join("\n  ")
    );
}

// The parser's own rules, on made-up text.

#[test]
fn command_lines_join_continuations_and_read_only_shell_blocks() {
    let text = "```sh\nslotproxy a \\\n    --b c\n# comment\n```\n```\n$ slotproxy d\nslotproxy not-a-command\n```\n```toml\nslotproxy = 1\n```\n";
    let lines: Vec<String> = command_lines(text).into_iter().map(|(_, l)| l).collect();
    assert_eq!(lines, vec!["slotproxy a --b c", "# comment", "slotproxy d"]);
}

#[test]
fn shell_words_split_quotes_and_leave_out_placeholders() {
    assert_eq!(
        shell_words("slotproxy x --h 'user-agent=^Internal/\\d+' \"a b\" &  # bg"),
        Some(vec![
            "slotproxy".to_string(),
            "x".to_string(),
            "--h".to_string(),
            "user-agent=^Internal/\\d+".to_string(),
            "a b".to_string(),
        ])
    );
    assert_eq!(shell_words("slotproxy slot list [--site shop]"), None);
    assert_eq!(shell_words("slotproxy x --a $(cat f)"), None);
    assert_eq!(shell_words("slotproxy x --action swap|preview"), None);
    assert_eq!(shell_words("slotproxy x --header a=b ..."), None);
    assert_eq!(
        synopsis_form("slotproxy s [--site shop] (--on x | --disable) [--action swap|preview] [--h n=v ...]  # c"),
        "slotproxy s --site shop --on x --action swap --h n=v"
    );
}

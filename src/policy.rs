//! Traffic policy of a slot as plain data (SPEC §16): its request `match`
//! entries and its outlier-ejection settings, with the checks every change
//! must pass. What `config.toml`, the state and the admin API hold; the
//! routing table compiles the matches (`routing::matches`) and the proxy
//! keeps the ejection state (`outlier`).

use serde::{Deserialize, Serialize};

/// Most match entries one slot may have, and conditions one entry may have.
pub const MAX_MATCHES: usize = 32;
pub const MAX_CONDITIONS: usize = 8;
/// Longest value or regex a condition may give.
pub const MAX_PATTERN_LEN: usize = 1024;
/// A compiled regex may take at most this much memory (the `regex`
/// crate's size limit): a pattern is compiled once per table, but a huge
/// one would still cost every request.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One condition on a request: a header's or a cookie's value, exactly or
/// by regex.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// A header name (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A cookie name (case-sensitive, as cookies are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// The exact value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A regular expression (the `regex` crate's syntax) the value must
    /// contain a match of; anchor it with `^…$` for the whole value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// One `match` entry: a single condition written inline
/// (`{"header": "x-beta", "value": "true"}`), or several under `all`, every
/// one of which must fit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub all: Vec<Condition>,
}

/// How a condition tests the value it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test<'a> {
    Exact(&'a str),
    Regex(&'a str),
}

/// Where a condition reads its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    Header(&'a str),
    Cookie(&'a str),
}

impl Condition {
    /// The condition's source and test, or why it has none.
    pub fn parts(&self) -> Result<(Source<'_>, Test<'_>), String> {
        let source = match (&self.header, &self.cookie) {
            (Some(h), None) => {
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    return Err(format!("header {h:?} is not a valid header name"));
                }
                Source::Header(h)
            }
            (None, Some(c)) => {
                let ok = !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_graphic() && !b"=;,\"".contains(&b));
                if !ok {
                    return Err(format!("cookie {c:?} is not a valid cookie name"));
                }
                Source::Cookie(c)
            }
            (Some(_), Some(_)) => {
                return Err("give either header or cookie, not both".into());
            }
            (None, None) => return Err("needs a header or a cookie to look at".into()),
        };
        let test = match (&self.value, &self.regex) {
            (Some(v), None) => Test::Exact(v),
            (None, Some(r)) => Test::Regex(r),
            (Some(_), Some(_)) => return Err("give either value or regex, not both".into()),
            (None, None) => return Err("needs a value or a regex to compare with".into()),
        };
        let pattern = match test {
            Test::Exact(v) | Test::Regex(v) => v,
        };
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(format!("is longer than {MAX_PATTERN_LEN} bytes"));
        }
        if let Test::Regex(r) = test {
            compile_regex(r)?;
        }
        Ok((source, test))
    }
}

/// Compile a condition's regex as the routing table does.
pub fn compile_regex(r: &str) -> Result<regex::bytes::Regex, String> {
    regex::bytes::RegexBuilder::new(r)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("regex {r:?} is invalid: {e}"))
}

impl MatchEntry {
    /// The entry's conditions, inline or under `all`.
    pub fn conditions(&self) -> Vec<Condition> {
        let inline = Condition {
            header: self.header.clone(),
            cookie: self.cookie.clone(),
            value: self.value.clone(),
            regex: self.regex.clone(),
        };
        if self.all.is_empty() {
            vec![inline]
        } else {
            self.all.clone()
        }
    }

    fn has_inline(&self) -> bool {
        self.header.is_some()
            || self.cookie.is_some()
            || self.value.is_some()
            || self.regex.is_some()
    }

    /// One line saying what the entry asks for (CLI and logs).
    pub fn describe(&self) -> String {
        self.conditions()
            .iter()
            .map(|c| {
                let what = match (&c.header, &c.cookie) {
                    (Some(h), _) => format!("header {h}"),
                    (_, Some(c)) => format!("cookie {c}"),
                    _ => "?".into(),
                };
                match (&c.value, &c.regex) {
                    (Some(v), _) => format!("{what} = {v:?}"),
                    (_, Some(r)) => format!("{what} ~ /{r}/"),
                    _ => what,
                }
            })
            .collect::<Vec<_>>()
            .join(" and ")
    }
}

/// Check a slot's match entries; problems name the entry (`{key}.match[1]`
/// or `{key}.match[1].all[0]`).
pub fn check_matches(key: &str, entries: &[MatchEntry]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if entries.len() > MAX_MATCHES {
        out.push((
            format!("{key}.match"),
            format!("{} entries; at most {MAX_MATCHES}", entries.len()),
        ));
    }
    for (i, e) in entries.iter().enumerate() {
        let ek = format!("{key}.match[{i}]");
        if !e.all.is_empty() {
            if e.has_inline() {
                out.push((
                    ek.clone(),
                    "give the conditions either inline or under all, not both".into(),
                ));
            }
            if e.all.len() > MAX_CONDITIONS {
                out.push((
                    format!("{ek}.all"),
                    format!("{} conditions; at most {MAX_CONDITIONS}", e.all.len()),
                ));
            }
            for (j, c) in e.all.iter().enumerate() {
                if let Err(why) = c.parts() {
                    out.push((format!("{ek}.all[{j}]"), why));
                }
            }
        } else if let Err(why) = e.conditions()[0].parts() {
            out.push((ek, why));
        }
    }
    out
}

/// `[sites.slots.outlier]`: passive outlier ejection of the slot's
/// instances (SPEC §16). Absent: off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outlier {
    /// 5xx answers in a row that eject an instance (0: never for 5xx).
    #[serde(default = "default_5xx")]
    pub consecutive_5xx: u32,
    /// Failed connections (refused, timed out) in a row that eject it (0: never).
    #[serde(default = "default_connect")]
    pub consecutive_connect_errors: u32,
    /// First ejection's length; the n-th lasts n × this (up to
    /// [`MAX_EJECTION_MULTIPLIER`] ×).
    #[serde(default = "default_base")]
    pub base_ejection_secs: u64,
    /// At most this share of the slot's instances out at once; at least one
    /// instance always stays in.
    #[serde(default = "default_max_percent")]
    pub max_ejection_percent: u32,
}

/// The n-th ejection lasts at most this many times `base_ejection_secs`.
pub const MAX_EJECTION_MULTIPLIER: u32 = 10;
pub const MAX_BASE_EJECTION_SECS: u64 = 86_400;

fn default_5xx() -> u32 {
    5
}
fn default_connect() -> u32 {
    3
}
fn default_base() -> u64 {
    30
}
fn default_max_percent() -> u32 {
    50
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            consecutive_5xx: default_5xx(),
            consecutive_connect_errors: default_connect(),
            base_ejection_secs: default_base(),
            max_ejection_percent: default_max_percent(),
        }
    }
}

impl Outlier {
    /// Problems of the settings under `key` (`…slots[staging].outlier`).
    pub fn check(&self, key: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.base_ejection_secs == 0 || self.base_ejection_secs > MAX_BASE_EJECTION_SECS {
            out.push((
                format!("{key}.base_ejection_secs"),
                format!(
                    "{} is out of range 1-{MAX_BASE_EJECTION_SECS}",
                    self.base_ejection_secs
                ),
            ));
        }
        if self.max_ejection_percent > 100 {
            out.push((
                format!("{key}.max_ejection_percent"),
                format!("{} is out of range 0-100", self.max_ejection_percent),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(h: &str, v: &str) -> MatchEntry {
        MatchEntry {
            header: Some(h.into()),
            value: Some(v.into()),
            ..Default::default()
        }
    }

    #[test]
    fn problems_name_the_entry() {
        let bad_regex = MatchEntry {
            header: Some("user-agent".into()),
            regex: Some("(unclosed".into()),
            ..Default::default()
        };
        let both = MatchEntry {
            all: vec![Condition {
                cookie: Some("plan".into()),
                ..Default::default()
            }],
            ..header("x-beta", "true")
        };
        let p = check_matches("s", &[header("x-beta", "true"), bad_regex, both]);
        assert_eq!(p.len(), 3, "{p:?}");
        assert_eq!(p[0].0, "s.match[1]");
        assert!(p[0].1.contains("(unclosed"), "{}", p[0].1);
        assert_eq!(p[1].0, "s.match[2]");
        assert_eq!(p[2].0, "s.match[2].all[0]");
        assert!(p[2].1.contains("value or a regex"), "{}", p[2].1);
        let p = check_matches("s", &[header("bad header", "x")]);
        assert!(p[0].1.contains("not a valid header name"), "{p:?}");
    }

    #[test]
    fn outlier_defaults_are_the_specs() {
        let o: Outlier = toml::from_str("").unwrap();
        assert_eq!(o, Outlier::default());
        assert_eq!(
            (
                o.consecutive_5xx,
                o.consecutive_connect_errors,
                o.base_ejection_secs,
                o.max_ejection_percent
            ),
            (5, 3, 30, 50)
        );
        let bad = Outlier {
            base_ejection_secs: 0,
            max_ejection_percent: 101,
            ..o
        };
        assert_eq!(bad.check("k").len(), 2);
    }

    #[test]
    fn describe_reads_as_the_conditions() {
        let e = MatchEntry {
            all: vec![
                Condition {
                    header: Some("x-team".into()),
                    value: Some("qa".into()),
                    ..Default::default()
                },
                Condition {
                    cookie: Some("plan".into()),
                    regex: Some("^ent".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            e.describe(),
            "header x-team = \"qa\" and cookie plan ~ /^ent/"
        );
    }
}

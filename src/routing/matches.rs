//! A site's request matches (SPEC §16), compiled: each slot's `match`
//! entries with their regexes built once, when the table is, and the
//! lookup a request on a production host name goes through after the query
//! link and before the pin cookie.
//!
//! The lookup is allocation-free and costs a site without matches one
//! length check. With matches, one pass over the request's fields notes
//! which of the names the conditions read it has (a bit each); an entry
//! that needs a field the request lacks is skipped without looking at any
//! value, so entries that do not fit cost a few comparisons, not a header
//! lookup each.

use super::decide::cookie_raw;
use super::request::RequestView;
use crate::policy::{compile_regex, MatchEntry, Source, Test};

/// The compiled matches of one site, in slot order, each slot's entries
/// in the order given: the first entry that fits wins.
#[derive(Debug, Default)]
pub struct SiteMatches {
    /// Lower-case field names the conditions read (`cookie` for cookie
    /// conditions); name `i` is bit `i` of [`Entry::needs`] (the first 64).
    names: Vec<Box<[u8]>>,
    /// Bit `n` (`n` < 63; 63 for longer) is set when some name in `names`
    /// is `n` bytes long: most of a request's fields are passed over on
    /// their length alone, without a comparison.
    lengths: u64,
    entries: Vec<Entry>,
}

fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

#[derive(Debug)]
struct Entry {
    slot: u16,
    /// Bits of the field names the entry needs present.
    needs: u64,
    conditions: Vec<Condition>,
}

#[derive(Debug)]
enum Condition {
    /// A lower-case header name; any of its values may fit.
    Header(Box<str>, Pattern),
    /// The cookie's value (absent when missing or repeated).
    Cookie(Box<memchr::memmem::Finder<'static>>, Pattern),
}

#[derive(Debug)]
enum Pattern {
    Exact(Box<[u8]>),
    Regex(regex::bytes::Regex),
}

impl Pattern {
    fn fits(&self, v: &[u8]) -> bool {
        match self {
            Pattern::Exact(want) => **want == *v,
            Pattern::Regex(re) => re.is_match(v),
        }
    }
}

impl SiteMatches {
    /// Compile the entries of each slot (`(slot index, entries)`). An entry
    /// that does not compile is left out: `State::validate` has refused it
    /// already, so this happens only to a state nobody validated.
    pub fn compile<'a>(slots: impl IntoIterator<Item = (u16, &'a [MatchEntry])>) -> Self {
        let mut out = SiteMatches::default();
        for (slot, entries) in slots {
            for e in entries {
                if let Some(entry) = out.entry(slot, e) {
                    out.entries.push(entry);
                }
            }
        }
        out
    }

    fn entry(&mut self, slot: u16, e: &MatchEntry) -> Option<Entry> {
        let mut needs = 0u64;
        let mut conditions = Vec::new();
        for c in e.conditions() {
            let (source, test) = c.parts().ok()?;
            let pattern = match test {
                Test::Exact(v) => Pattern::Exact(v.as_bytes().into()),
                Test::Regex(r) => Pattern::Regex(compile_regex(r).ok()?),
            };
            let field = match source {
                Source::Header(h) => h.to_ascii_lowercase(),
                Source::Cookie(_) => "cookie".to_string(),
            };
            needs |= self.bit(field.as_bytes());
            conditions.push(match source {
                Source::Header(_) => Condition::Header(field.into(), pattern),
                Source::Cookie(name) => Condition::Cookie(
                    Box::new(memchr::memmem::Finder::new(name.as_bytes()).into_owned()),
                    pattern,
                ),
            });
        }
        Some(Entry {
            slot,
            needs,
            conditions,
        })
    }

    /// The bit of field `name`, added if new; 0 past the 64th name (such an
    /// entry is always looked at).
    fn bit(&mut self, name: &[u8]) -> u64 {
        let i = match self.names.iter().position(|n| **n == *name) {
            Some(i) => i,
            None => {
                self.lengths |= length_bit(name.len());
                self.names.push(name.into());
                self.names.len() - 1
            }
        };
        if i < 64 {
            1 << i
        } else {
            0
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The slot of the first entry `req` fits, if any.
    pub fn first_fit(&self, req: &impl RequestView) -> Option<u16> {
        if self.entries.is_empty() {
            return None;
        }
        let mut present = 0u64;
        for (name, _) in req.fields() {
            if self.lengths & length_bit(name.len()) == 0 {
                continue;
            }
            for (i, n) in self.names.iter().take(64).enumerate() {
                if n.len() == name.len() && n.eq_ignore_ascii_case(name) {
                    present |= 1 << i;
                }
            }
        }
        self.entries
            .iter()
            .filter(|e| e.needs & !present == 0)
            .find(|e| e.conditions.iter().all(|c| c.fits(req)))
            .map(|e| e.slot)
    }
}

impl Condition {
    fn fits(&self, req: &impl RequestView) -> bool {
        match self {
            Condition::Header(name, p) => req.values(name).any(|v| p.fits(v)),
            Condition::Cookie(finder, p) => {
                cookie_raw(req.values("cookie"), finder).is_some_and(|v| p.fits(v))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Condition as Cond;

    fn req(fields: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().uri("/");
        for (n, v) in fields {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn cond(
        header: Option<&str>,
        cookie: Option<&str>,
        value: Option<&str>,
        regex: Option<&str>,
    ) -> Cond {
        Cond {
            header: header.map(Into::into),
            cookie: cookie.map(Into::into),
            value: value.map(Into::into),
            regex: regex.map(Into::into),
        }
    }

    fn one(c: Cond) -> MatchEntry {
        MatchEntry {
            all: vec![c],
            ..Default::default()
        }
    }

    fn sample() -> SiteMatches {
        let beta = [
            one(cond(Some("X-Beta"), None, Some("true"), None)),
            one(cond(Some("user-agent"), None, None, Some("^Internal/\\d+"))),
        ];
        let qa = [MatchEntry {
            all: vec![
                cond(None, Some("plan"), Some("enterprise"), None),
                cond(Some("x-team"), None, Some("qa"), None),
            ],
            ..Default::default()
        }];
        SiteMatches::compile([(1, &beta[..]), (2, &qa[..])])
    }

    #[test]
    fn header_names_are_case_insensitive_values_exact() {
        let m = sample();
        assert_eq!(m.first_fit(&req(&[("x-beta", "true")])), Some(1));
        assert_eq!(m.first_fit(&req(&[("X-BETA", "true")])), Some(1));
        assert_eq!(m.first_fit(&req(&[("x-beta", "TRUE")])), None);
        assert_eq!(m.first_fit(&req(&[("x-beta", "true1")])), None);
        // any of a repeated header's values
        assert_eq!(
            m.first_fit(&req(&[("x-beta", "no"), ("x-beta", "true")])),
            Some(1)
        );
        assert_eq!(m.first_fit(&req(&[])), None);
    }

    #[test]
    fn regex_conditions() {
        let m = sample();
        assert_eq!(
            m.first_fit(&req(&[("user-agent", "Internal/42 (ci)")])),
            Some(1)
        );
        assert_eq!(
            m.first_fit(&req(&[("user-agent", "Mozilla Internal/42")])),
            None
        );
    }

    #[test]
    fn every_condition_of_an_entry_must_fit() {
        let m = sample();
        let both = req(&[("cookie", "a=1; plan=enterprise"), ("x-team", "qa")]);
        assert_eq!(m.first_fit(&both), Some(2));
        let cookie_only = req(&[("cookie", "plan=enterprise")]);
        assert_eq!(m.first_fit(&cookie_only), None);
        let header_only = req(&[("x-team", "qa")]);
        assert_eq!(m.first_fit(&header_only), None);
        // a repeated cookie is no cookie, as for the pin
        let repeated = req(&[
            ("cookie", "plan=enterprise; plan=enterprise"),
            ("x-team", "qa"),
        ]);
        assert_eq!(m.first_fit(&repeated), None);
        let other_name = req(&[("cookie", "myplan=enterprise"), ("x-team", "qa")]);
        assert_eq!(m.first_fit(&other_name), None);
    }

    #[test]
    fn first_fitting_entry_wins_in_slot_order() {
        let m = sample();
        let all = req(&[
            ("cookie", "plan=enterprise"),
            ("x-team", "qa"),
            ("x-beta", "true"),
        ]);
        assert_eq!(m.first_fit(&all), Some(1));
    }

    #[test]
    fn no_entries_fit_nothing() {
        let m = SiteMatches::compile(std::iter::empty());
        assert!(m.is_empty());
        assert_eq!(m.first_fit(&req(&[("x-beta", "true")])), None);
    }
}

//! `slotproxy slot match add|list|remove`: a slot's request matches
//! (SPEC §16) through `PUT …/slots/{slot}/match`. `add` and `remove` read
//! the slot's list, change it and put the whole list back (a change made
//! by someone else in between is overwritten, as with `traffic-routing set`).

use super::{table, Api};
use crate::api::{self, Revised, SetMatches, SiteView, SlotView};
use crate::policy::{Condition, MatchEntry};
use anyhow::{bail, Context};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum MatchCmd {
    /// Add an entry: requests that fit every condition given go to the
    /// slot (after the query link, before the pin cookie and the split),
    /// and are not pinned.
    Add {
        #[arg(long)]
        site: String,
        #[arg(long)]
        slot: String,
        /// `name=value`: the header has exactly this value (the name is
        /// case-insensitive). Repeatable.
        #[arg(long, value_parser = name_value)]
        header: Vec<(String, String)>,
        /// `name=regex`: the header's value contains a match of the regex
        /// (anchor it with ^…$ for the whole value). Repeatable.
        #[arg(long, value_parser = name_value)]
        header_regex: Vec<(String, String)>,
        /// `name=value`: the cookie has exactly this value. Repeatable.
        #[arg(long, value_parser = name_value)]
        cookie: Vec<(String, String)>,
    },
    /// List the slot's entries with their numbers.
    List {
        #[arg(long)]
        site: String,
        #[arg(long)]
        slot: String,
    },
    /// Remove entry number --index (as `list` shows it).
    Remove {
        #[arg(long)]
        site: String,
        #[arg(long)]
        slot: String,
        #[arg(long)]
        index: usize,
    },
}

fn name_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((n, v)) if !n.is_empty() => Ok((n.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not name=value")),
    }
}

/// The entry `add`'s flags describe: one condition inline, several under `all`.
pub fn entry(
    header: Vec<(String, String)>,
    header_regex: Vec<(String, String)>,
    cookie: Vec<(String, String)>,
) -> anyhow::Result<MatchEntry> {
    let mut all: Vec<Condition> = Vec::new();
    for (h, v) in header {
        all.push(Condition {
            header: Some(h),
            value: Some(v),
            ..Default::default()
        });
    }
    for (h, r) in header_regex {
        all.push(Condition {
            header: Some(h),
            regex: Some(r),
            ..Default::default()
        });
    }
    for (c, v) in cookie {
        all.push(Condition {
            cookie: Some(c),
            value: Some(v),
            ..Default::default()
        });
    }
    Ok(match all.len() {
        0 => bail!("give at least one of --header, --header-regex, --cookie"),
        1 => {
            let c = all.remove(0);
            MatchEntry {
                header: c.header,
                cookie: c.cookie,
                value: c.value,
                regex: c.regex,
                all: Vec::new(),
            }
        }
        _ => MatchEntry {
            all,
            ..Default::default()
        },
    })
}

fn current(api: &Api, site: &str, slot: &str) -> anyhow::Result<Vec<MatchEntry>> {
    let (_, v): (_, Revised<SiteView>) =
        api.call::<(), _>("GET", &api::path(api::SITE, &[site]), None)?;
    let s = v
        .body
        .slots
        .into_iter()
        .find(|s| s.name == slot)
        .with_context(|| format!("site {site:?} has no slot {slot:?}"))?;
    Ok(s.matches)
}

fn matches_table(site: &str, slot: &str, entries: &[MatchEntry]) -> String {
    if entries.is_empty() {
        return format!("{site}/{slot} has no match entries\n");
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| vec![i.to_string(), e.describe()])
        .collect();
    table(&["INDEX", "REQUESTS THAT FIT (ALL OF)"], &rows)
}

pub fn run(api: &Api, cmd: MatchCmd) -> anyhow::Result<()> {
    let (site, slot, entries) = match cmd {
        MatchCmd::List { site, slot } => {
            let entries = current(api, &site, &slot)?;
            let raw = serde_json::to_string(&SetMatches {
                matches: entries.clone(),
            })?;
            return api.print(&raw, || matches_table(&site, &slot, &entries));
        }
        MatchCmd::Add {
            site,
            slot,
            header,
            header_regex,
            cookie,
        } => {
            let new = entry(header, header_regex, cookie)?;
            let mut entries = current(api, &site, &slot)?;
            entries.push(new);
            (site, slot, entries)
        }
        MatchCmd::Remove { site, slot, index } => {
            let mut entries = current(api, &site, &slot)?;
            if index >= entries.len() {
                bail!(
                    "{site}/{slot} has {} match entries; there is no number {index}",
                    entries.len()
                );
            }
            entries.remove(index);
            (site, slot, entries)
        }
    };
    let body = SetMatches { matches: entries };
    let path = api::path(api::MATCH, &[&site, &slot]);
    let (raw, v): (_, Revised<SlotView>) = api.call("PUT", &path, Some(&body))?;
    api.print(&raw, || matches_table(&site, &slot, &v.body.matches))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_make_one_entry() {
        let one = entry(vec![("x-beta".into(), "true".into())], vec![], vec![]).unwrap();
        assert_eq!(one.header.as_deref(), Some("x-beta"));
        assert!(one.all.is_empty());
        let two = entry(
            vec![("x-team".into(), "qa".into())],
            vec![],
            vec![("plan".into(), "enterprise".into())],
        )
        .unwrap();
        assert_eq!(two.all.len(), 2);
        assert!(entry(vec![], vec![], vec![]).is_err());
        assert_eq!(name_value("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(name_value("=x").is_err());
    }
}

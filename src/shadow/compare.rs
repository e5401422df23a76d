//! The comparison of production's answer with the slot's (SPEC §15),
//! pure: status first, then the fields not ignored, then the body — JSON
//! (by `Content-Type`, both bodies within `max_body_bytes`, both parsing)
//! as values with `ignore_json_paths` removed, so key order and spacing do
//! not count; any other body by length and digest. The first difference
//! found is described for the list of last differences.

use super::observe::Answer;
use serde_json::Value;

/// What a comparison found; each is a `result` of
/// `slotproxy_shadow_requests_total`.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Match,
    StatusDiffers(String),
    HeadersDiffer(String),
    BodyDiffers(String),
}

impl Verdict {
    pub fn result(&self) -> &'static str {
        match self {
            Verdict::Match => "match",
            Verdict::StatusDiffers(_) => "status_differs",
            Verdict::HeadersDiffer(_) => "headers_differ",
            Verdict::BodyDiffers(_) => "body_differs",
        }
    }

    /// The first difference, in words.
    pub fn detail(&self) -> &str {
        match self {
            Verdict::Match => "",
            Verdict::StatusDiffers(d) | Verdict::HeadersDiffer(d) | Verdict::BodyDiffers(d) => d,
        }
    }
}

/// The comparison's settings, compiled from `compare`.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Lower-case names of the fields not compared.
    pub ignore_headers: Vec<String>,
    pub ignore_json_paths: Vec<JsonPath>,
}

impl Rules {
    pub fn new(ignore_headers: &[String], ignore_json_paths: Vec<JsonPath>) -> Rules {
        Rules {
            ignore_headers: ignore_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            ignore_json_paths,
        }
    }
}

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Key(String),
    Index(usize),
    /// `*` / `[*]`: every member or element.
    Any,
}

/// A JSON path of the subset `ignore_json_paths` takes: `$` then `.name`,
/// `['name']`, `[N]`, `.*` or `[*]`, any number of times.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath(pub Vec<Step>);

impl JsonPath {
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let bad = |why: &str| Err(format!("{text:?}: {why} (e.g. \"$.requestId\")"));
        let Some(mut rest) = text.strip_prefix('$') else {
            return bad("a path starts with $");
        };
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('.') {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                let name = &r[..end];
                if name.is_empty() {
                    return bad("a name is missing after '.'");
                }
                steps.push(if name == "*" {
                    Step::Any
                } else {
                    Step::Key(name.to_string())
                });
                rest = &r[end..];
            } else if let Some(r) = rest.strip_prefix('[') {
                let Some(end) = r.find(']') else {
                    return bad("'[' is not closed");
                };
                let inner = &r[..end];
                let quoted =
                    |q: char| inner.len() >= 2 && inner.starts_with(q) && inner.ends_with(q);
                steps.push(if inner == "*" {
                    Step::Any
                } else if quoted('\'') || quoted('"') {
                    Step::Key(inner[1..inner.len() - 1].to_string())
                } else if let Ok(i) = inner.parse::<usize>() {
                    Step::Index(i)
                } else {
                    return bad("inside [] goes a number, * or a quoted name");
                });
                rest = &r[end + 1..];
            } else {
                return bad("expected '.' or '['");
            }
        }
        if steps.is_empty() {
            return bad("the whole document cannot be ignored");
        }
        Ok(JsonPath(steps))
    }

    /// Take what the path names out of `v`.
    pub fn remove(&self, v: &mut Value) {
        remove(v, &self.0);
    }
}

fn remove(v: &mut Value, steps: &[Step]) {
    let Some((first, rest)) = steps.split_first() else {
        return;
    };
    let last = rest.is_empty();
    match (first, v) {
        (Step::Key(k), Value::Object(m)) => {
            if last {
                m.remove(k);
            } else if let Some(c) = m.get_mut(k) {
                remove(c, rest);
            }
        }
        (Step::Index(i), Value::Array(a)) => {
            if last {
                // a removed element would shift the rest: it becomes null
                if let Some(c) = a.get_mut(*i) {
                    *c = Value::Null;
                }
            } else if let Some(c) = a.get_mut(*i) {
                remove(c, rest);
            }
        }
        (Step::Any, Value::Object(m)) => {
            if last {
                m.clear();
            } else {
                m.values_mut().for_each(|c| remove(c, rest));
            }
        }
        (Step::Any, Value::Array(a)) => {
            if last {
                a.iter_mut().for_each(|c| *c = Value::Null);
            } else {
                a.iter_mut().for_each(|c| remove(c, rest));
            }
        }
        _ => {}
    }
}

/// Compare production's answer with the slot's.
pub fn compare(production: &Answer, slot: &Answer, rules: &Rules) -> Verdict {
    if production.status != slot.status {
        return Verdict::StatusDiffers(format!("status {} vs {}", production.status, slot.status));
    }
    if let Some(d) = fields_differ(production, slot, rules) {
        return Verdict::HeadersDiffer(d);
    }
    match body_differs(production, slot, rules) {
        Some(d) => Verdict::BodyDiffers(d),
        None => Verdict::Match,
    }
}

/// The first field (by name, in production's order then the slot's) whose
/// values differ.
fn fields_differ(p: &Answer, s: &Answer, rules: &Rules) -> Option<String> {
    let kept = |a: &Answer| -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (n, _) in &a.fields {
            if !rules.ignore_headers.contains(n) && !names.contains(n) {
                names.push(n.clone());
            }
        }
        names
    };
    let mut names = kept(p);
    for n in kept(s) {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let values = |a: &Answer, name: &str| -> Vec<String> {
        a.fields
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    };
    names.into_iter().find_map(|n| {
        let (a, b) = (values(p, &n), values(s, &n));
        let show = |v: &[String]| match v {
            [] => "(none)".to_string(),
            [one] => format!("{one:?}"),
            many => format!("{many:?}"),
        };
        (a != b).then(|| format!("header {n}: {} vs {}", show(&a), show(&b)))
    })
}

fn body_differs(p: &Answer, s: &Answer, rules: &Rules) -> Option<String> {
    if let (Some(a), Some(b)) = (&p.body.kept, &s.body.kept) {
        if p.is_json() && s.is_json() {
            if let (Ok(mut x), Ok(mut y)) = (
                serde_json::from_slice::<Value>(a),
                serde_json::from_slice::<Value>(b),
            ) {
                for path in &rules.ignore_json_paths {
                    path.remove(&mut x);
                    path.remove(&mut y);
                }
                return json_differs(&x, &y, &mut "$".to_string());
            }
        }
        if a == b {
            return None;
        }
        let at = a.iter().zip(b.iter()).take_while(|(x, y)| x == y).count();
        let near = |v: &[u8]| {
            let end = (at + 24).min(v.len());
            format!("{:?}", String::from_utf8_lossy(&v[at..end]))
        };
        return Some(format!(
            "body from byte {at}: {} vs {} ({} vs {} bytes)",
            near(a),
            near(b),
            a.len(),
            b.len()
        ));
    }
    (p.body.len != s.body.len || p.body.digest != s.body.digest).then(|| {
        format!(
            "body digest {:016x} vs {:016x} ({} vs {} bytes)",
            p.body.digest, s.body.digest, p.body.len, s.body.len
        )
    })
}

/// The first place two JSON values differ, as `$.path: a vs b`.
fn json_differs(a: &Value, b: &Value, at: &mut String) -> Option<String> {
    let short = |v: &Value| {
        let mut t = v.to_string();
        if t.len() > 60 {
            t.truncate(57);
            t.push_str("...");
        }
        t
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let len = at.len();
                at.push('.');
                at.push_str(k);
                let d = match (x.get(k), y.get(k)) {
                    (Some(v), Some(w)) => json_differs(v, w, at),
                    (Some(v), None) => Some(format!("body {at}: {} vs (absent)", short(v))),
                    (None, Some(w)) => Some(format!("body {at}: (absent) vs {}", short(w))),
                    (None, None) => None,
                };
                at.truncate(len);
                if d.is_some() {
                    return d;
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) => {
            for (i, (v, w)) in x.iter().zip(y.iter()).enumerate() {
                let len = at.len();
                at.push_str(&format!("[{i}]"));
                let d = json_differs(v, w, at);
                at.truncate(len);
                if d.is_some() {
                    return d;
                }
            }
            (x.len() != y.len()).then(|| format!("body {at}: {} vs {} elements", x.len(), y.len()))
        }
        _ => (a != b).then(|| format!("body {at}: {} vs {}", short(a), short(b))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::observe::BodyReader;
    use super::*;

    fn answer(status: u16, fields: &[(&str, &str)], body: &str) -> Answer {
        let mut r = BodyReader::new(1024);
        r.push(body.as_bytes());
        Answer {
            status,
            fields: fields
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            body: r.finish(),
            secs: 0.01,
        }
    }

    fn json(body: &str) -> Answer {
        answer(200, &[("content-type", "application/json")], body)
    }

    fn rules(headers: &[&str], paths: &[&str]) -> Rules {
        Rules::new(
            &headers.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
            paths.iter().map(|p| JsonPath::parse(p).unwrap()).collect(),
        )
    }

    #[test]
    fn status_then_fields_then_body() {
        let r = rules(&["date"], &[]);
        let a = answer(200, &[("date", "1"), ("x-v", "1")], "hi");
        assert_eq!(compare(&a, &a.clone(), &r), Verdict::Match);
        let b = answer(500, &[("x-v", "2")], "no");
        assert_eq!(
            compare(&a, &b, &r),
            Verdict::StatusDiffers("status 200 vs 500".into())
        );
        let c = answer(200, &[("date", "2"), ("x-v", "2")], "no");
        assert_eq!(
            compare(&a, &c, &r),
            Verdict::HeadersDiffer("header x-v: \"1\" vs \"2\"".into())
        );
        let d = answer(200, &[("date", "3"), ("x-v", "1")], "ho");
        let v = compare(&a, &d, &r);
        assert_eq!(v.result(), "body_differs");
        assert!(v.detail().contains("from byte 1"), "{v:?}");
        let e = answer(200, &[("x-v", "1"), ("x-new", "1")], "hi");
        assert_eq!(
            compare(&a, &e, &r),
            Verdict::HeadersDiffer("header x-new: (none) vs \"1\"".into())
        );
    }

    #[test]
    fn json_compares_as_values_and_ignored_paths_go() {
        let r = rules(&[], &[]);
        let a = json(r#"{"a": 1, "b": [1, 2], "requestId": "x"}"#);
        let b = json(r#"{"requestId":"x","b":[1,2],"a":1}"#);
        assert_eq!(compare(&a, &b, &r), Verdict::Match);
        let c = json(r#"{"requestId":"y","b":[1,3],"a":1}"#);
        assert_eq!(
            compare(&a, &c, &r),
            Verdict::BodyDiffers("body $.b[1]: 2 vs 3".into())
        );
        let r = rules(&[], &["$.requestId", "$.b[*]"]);
        assert_eq!(compare(&a, &c, &r), Verdict::Match);
        let r = rules(&[], &["$.requestId"]);
        let d = json(r#"{"requestId":"z","b":[1,2],"a":1}"#);
        assert_eq!(compare(&a, &d, &r), Verdict::Match);
    }

    #[test]
    fn paths_parse_or_say_why() {
        use Step::*;
        assert_eq!(
            JsonPath::parse("$.items[*].id").unwrap().0,
            [Key("items".into()), Any, Key("id".into())]
        );
        assert_eq!(
            JsonPath::parse("$['a b'][2]").unwrap().0,
            [Key("a b".into()), Index(2)]
        );
        for bad in ["requestId", "$", "$.", "$[x]", "$[1"] {
            assert!(JsonPath::parse(bad).is_err(), "{bad}");
        }
        let mut v: Value =
            serde_json::from_str(r#"{"x": {"id": 1, "k": 2}, "l": [{"id": 3}]}"#).unwrap();
        JsonPath::parse("$.*.id").unwrap().remove(&mut v);
        JsonPath::parse("$.l[0].id").unwrap().remove(&mut v);
        assert_eq!(v, serde_json::json!({"x": {"k": 2}, "l": [{}]}));
    }

    #[test]
    fn large_or_non_json_bodies_compare_by_digest() {
        let r = rules(&[], &[]);
        let big = |s: &str| {
            let mut r = BodyReader::new(2);
            r.push(s.as_bytes());
            Answer {
                body: r.finish(),
                ..json("")
            }
        };
        assert_eq!(compare(&big("abcd"), &big("abcd"), &r), Verdict::Match);
        assert!(compare(&big("abcd"), &big("abce"), &r)
            .detail()
            .starts_with("body digest"));
        // a body that says JSON but is not compares as bytes
        assert_eq!(compare(&json("{x"), &json("{x"), &r), Verdict::Match);
    }
}

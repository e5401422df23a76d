//! What the randomised tests (`tests/*_fuzz.rs`) share: the case count and
//! seed (`SLOTPROXY_FUZZ_CASES`, `SLOTPROXY_FUZZ_SEED`), random byte strings
//! from small alphabets, and structure-aware mutations of JSON and TOML
//! values (a valid document with one thing changed reaches deeper than
//! random bytes, which mostly fail at the first character).
#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Cases per property: `SLOTPROXY_FUZZ_CASES` scaled by `weight` (a target
/// that is slower per case runs fewer), else `default`.
pub fn cases(default: usize) -> usize {
    std::env::var("SLOTPROXY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn rng() -> StdRng {
    let seed = std::env::var("SLOTPROXY_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(14);
    StdRng::seed_from_u64(seed)
}

pub fn bytes(rng: &mut StdRng, alphabet: &[u8], max_len: usize) -> Vec<u8> {
    let len = rng.random_range(0..=max_len);
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())])
        .collect()
}

/// Byte-level edits of `text`: insert, delete, duplicate or overwrite a
/// short run, with bytes from `alphabet`.
pub fn mutate_bytes(rng: &mut StdRng, text: &[u8], alphabet: &[u8]) -> Vec<u8> {
    let mut out = text.to_vec();
    for _ in 0..rng.random_range(1..4) {
        let at = rng.random_range(0..=out.len());
        let len = rng.random_range(0..8).min(out.len() - at);
        match rng.random_range(0..4) {
            0 => {
                let ins = bytes(rng, alphabet, 6);
                out.splice(at..at, ins);
            }
            1 => {
                out.drain(at..at + len);
            }
            2 => {
                let dup = out[at..at + len].to_vec();
                out.splice(at..at, dup);
            }
            _ => {
                for b in &mut out[at..at + len] {
                    *b = alphabet[rng.random_range(0..alphabet.len())];
                }
            }
        }
    }
    out
}

/// Line-level edits: delete, duplicate or swap lines.
pub fn mutate_lines(rng: &mut StdRng, text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    let i = rng.random_range(0..lines.len());
    let j = rng.random_range(0..lines.len());
    match rng.random_range(0..3) {
        0 => {
            lines.remove(i);
        }
        1 => lines.insert(j, lines[i]),
        _ => lines.swap(i, j),
    }
    lines.join("\n")
}

/// A JSON value of some other shape, often an edge of its type.
pub fn odd_json(rng: &mut StdRng) -> serde_json::Value {
    use serde_json::json;
    let long = "x".repeat(rng.random_range(65..5000));
    let choices = [
        json!(null),
        json!(true),
        json!(0),
        json!(-1),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1e308),
        json!(-0.0),
        json!(0.5),
        json!(""),
        json!(" "),
        json!("x"),
        json!("production"),
        json!("staging"),
        json!("127.0.0.1:1"),
        json!("999.1.1.1:99999"),
        json!("\u{0}\u{7f}é\u{202e}"),
        json!(long),
        json!([]),
        json!(["a", 1, null]),
        json!({}),
        json!({"a": 1}),
    ];
    choices[rng.random_range(0..choices.len())].clone()
}

/// One structure-aware edit somewhere in `v`: a value replaced by an odd
/// one, a key removed or added, an array element repeated or removed.
/// Returns the key (or index) path it edited.
pub fn mutate_json(rng: &mut StdRng, v: &mut serde_json::Value) -> Vec<String> {
    use serde_json::Value;
    let mut path = Vec::new();
    let mut here = v;
    loop {
        // descend into a child now and then, while there are children
        let descend = rng.random_bool(0.6);
        let next: Option<String> = match here {
            Value::Object(m) if descend && !m.is_empty() => {
                let k = m.keys().nth(rng.random_range(0..m.len())).unwrap().clone();
                Some(k)
            }
            Value::Array(a) if descend && !a.is_empty() => {
                Some(rng.random_range(0..a.len()).to_string())
            }
            _ => None,
        };
        match next {
            Some(k) => {
                path.push(k.clone());
                here = match here {
                    Value::Object(m) => m.get_mut(&k).unwrap(),
                    Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
                    _ => unreachable!(),
                };
            }
            None => break,
        }
    }
    match here {
        Value::Object(m) if rng.random_bool(0.5) => {
            if !m.is_empty() && rng.random_bool(0.5) {
                let k = m.keys().nth(rng.random_range(0..m.len())).unwrap().clone();
                m.remove(&k);
                path.push(k);
            } else {
                let k = ["x", "", "name", "unknown_field", "é"][rng.random_range(0..5)];
                m.insert(k.to_string(), odd_json(rng));
                path.push(k.to_string());
            }
        }
        Value::Array(a) if !a.is_empty() && rng.random_bool(0.5) => {
            let i = rng.random_range(0..a.len());
            if rng.random_bool(0.5) {
                let dup = a[i].clone();
                a.push(dup);
            } else {
                a.remove(i);
            }
        }
        _ => *here = odd_json(rng),
    }
    path
}

/// The JSON kind of a value, to tell a type change from a value change.
pub fn kind(v: Option<&serde_json::Value>) -> &'static str {
    use serde_json::Value::*;
    match v {
        None => "absent",
        Some(Null) => "null",
        Some(Bool(_)) => "bool",
        Some(Number(_)) => "number",
        Some(String(_)) => "string",
        Some(Array(_)) => "array",
        Some(Object(_)) => "object",
    }
}

pub fn value_at<'a>(v: &'a serde_json::Value, path: &[String]) -> Option<&'a serde_json::Value> {
    path.iter().try_fold(v, |v, k| match v {
        serde_json::Value::Array(a) => a.get(k.parse::<usize>().ok()?),
        _ => v.get(k),
    })
}

/// The key (not an array index) whose scalar value `mutate_json` turned into
/// a scalar of another type at `path`, if that is what it did.
pub fn retyped_key<'a>(
    before: &serde_json::Value,
    after: &serde_json::Value,
    path: &'a [String],
) -> Option<&'a str> {
    let (was, now) = (kind(value_at(before, path)), kind(value_at(after, path)));
    let scalar = |k| matches!(k, "bool" | "number" | "string");
    let key = path.last().filter(|k| k.parse::<usize>().is_err())?;
    (scalar(was) && scalar(now) && was != now).then_some(key.as_str())
}

//! Query strings and schedule targets, as the admin API reads them from URLs and bodies.

use std::collections::HashMap;

use courseway_content::{AreaName, NodeName, Target};

/// `a=1&b=%E5%86%9C+x` into a map (percent-decoded, `+` as space; a malformed escape is kept
/// as written, bytes that are not UTF-8 become U+FFFD). The last of repeated keys wins.
pub fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+`.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `all`, `district:NAME`, `town:NAME`, `station:NAME` or `group:NAME`.
pub fn parse_target(s: &str) -> Result<Target, String> {
    let bad = |e: &dyn std::fmt::Display| format!("target {s:?}: {e}");
    if s == "all" {
        return Ok(Target::All);
    }
    let (kind, name) = s
        .split_once(':')
        .ok_or_else(|| format!("target {s:?} is not all, district:NAME, town:NAME, station:NAME or group:NAME"))?;
    match kind {
        "district" => AreaName::new(name).map(Target::District).map_err(|e| bad(&e)),
        "town" => AreaName::new(name).map(Target::Town).map_err(|e| bad(&e)),
        "group" => AreaName::new(name).map(Target::Group).map_err(|e| bad(&e)),
        "station" => NodeName::new(name).map(Target::Station).map_err(|e| bad(&e)),
        _ => Err(format!("target kind {kind:?} is not district, town, station or group")),
    }
}

/// The text of a target, as [`parse_target`] reads it.
pub fn target_str(t: &Target) -> String {
    match t {
        Target::All => "all".into(),
        Target::District(n) => format!("district:{}", n.as_str()),
        Target::Town(n) => format!("town:{}", n.as_str()),
        Target::Station(n) => format!("station:{}", n.as_str()),
        Target::Group(n) => format!("group:{}", n.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_decoded() {
        let q = parse_query("q=%E5%86%9C%E4%B8%9A+x&state=draft&empty=&flag");
        assert_eq!(q["q"], "农业 x");
        assert_eq!(q["state"], "draft");
        assert_eq!(q["empty"], "");
        assert_eq!(q["flag"], "");
        assert_eq!(parse_query("a=%zz%4")["a"], "%zz%4");
        assert_eq!(percent_decode("%41%"), "A%");
    }

    #[test]
    fn schedule_targets_parse_and_print() {
        for t in [
            "all",
            "district:d-07",
            "town:town-3",
            "station:village-0001",
            "group:coop",
        ] {
            assert_eq!(target_str(&parse_target(t).unwrap()), t);
        }
        assert!(parse_target("city:x").is_err());
        assert!(parse_target("town").is_err());
        assert!(parse_target("town:a b").is_err());
    }
}

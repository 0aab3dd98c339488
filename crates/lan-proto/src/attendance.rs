//! The attendance form a station's page sends: how many people came to a scheduled showing,
//! optionally their names. Only the JSON is read here; whether the showing is in the station's
//! schedule is the station's check.

use courseway_content::{LessonId, UnixTime};
use serde_json::Value;

/// Most people one showing may count.
pub const MAX_PRESENT: u64 = 10_000;
/// Most names on one form.
pub const MAX_NAMES: usize = 500;
/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 32;
/// Longest PIN, in characters.
pub const MAX_PIN_CHARS: usize = 32;

/// A valid form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttendanceForm {
    pub lesson: LessonId,
    pub show_at: UnixTime,
    pub present: u32,
    pub names: Vec<String>,
    /// The attendance PIN typed on the form, if any (a station may ask for one).
    pub pin: Option<String>,
}

/// A refused form: which field, and why (a sentence for the person at the page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormError {
    pub field: &'static str,
    pub message: String,
    /// 404: no such showing; else 400.
    pub not_found: bool,
}

impl FormError {
    /// A field that is wrong (400).
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        FormError {
            field,
            message: message.into(),
            not_found: false,
        }
    }
}

fn bad(field: &'static str, message: impl Into<String>) -> FormError {
    FormError::invalid(field, message)
}

/// Reads the form's JSON: `{"lesson": id, "show_at": unix seconds, "present": n, "names":
/// ["…", …], "pin": "…"}` (`names` and `pin` optional).
pub fn parse(body: &Value) -> Result<AttendanceForm, FormError> {
    let Value::Object(map) = body else {
        return Err(bad(
            "body",
            "send a JSON object: {\"lesson\", \"show_at\", \"present\", \"names\"}",
        ));
    };
    if let Some(unknown) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "lesson" | "show_at" | "present" | "names" | "pin"))
    {
        return Err(bad(
            "body",
            format!("unknown field {unknown:?}; the fields are lesson, show_at, present, names and pin"),
        ));
    }
    let lesson = match map.get("lesson") {
        Some(Value::String(s)) => LessonId::new(s.as_str()).map_err(|e| bad("lesson", e.to_string()))?,
        Some(_) => return Err(bad("lesson", "lesson must be the lesson's id as a string")),
        None => return Err(bad("lesson", "lesson is missing: which lesson was shown?")),
    };
    let show_at = match map.get("show_at") {
        Some(v) => v
            .as_u64()
            .map(UnixTime)
            .ok_or_else(|| bad("show_at", "show_at must be the showing's start as Unix seconds"))?,
        None => return Err(bad("show_at", "show_at is missing: which showing (its start time)?")),
    };
    let present = match map.get("present") {
        Some(v) => match v.as_u64() {
            Some(n) if n <= MAX_PRESENT => n as u32,
            Some(n) => {
                return Err(bad(
                    "present",
                    format!("{n} people is more than one showing can hold (at most {MAX_PRESENT}); check the number"),
                ))
            }
            None => return Err(bad("present", "present must be a whole number of people, 0 or more")),
        },
        None => return Err(bad("present", "present is missing: how many people came?")),
    };
    let names = match map.get("names") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut names = Vec::new();
            for item in items {
                let Value::String(s) = item else {
                    return Err(bad("names", "names must be a list of names (text)"));
                };
                let name = s.trim();
                if name.is_empty() {
                    continue;
                }
                if name.chars().count() > MAX_NAME_CHARS {
                    return Err(bad(
                        "names",
                        format!(
                            "the name {:?}… is longer than {MAX_NAME_CHARS} characters",
                            name.chars().take(12).collect::<String>()
                        ),
                    ));
                }
                if name.chars().any(char::is_control) {
                    return Err(bad("names", "a name contains a control character; one name per line"));
                }
                names.push(name.to_string());
            }
            if names.len() > MAX_NAMES {
                return Err(bad(
                    "names",
                    format!("{} names; at most {MAX_NAMES} per form", names.len()),
                ));
            }
            names
        }
        Some(_) => return Err(bad("names", "names must be a list of names (text)")),
    };
    if names.len() > present as usize {
        return Err(bad(
            "names",
            format!(
                "{} names but {present} present: the count must include everyone named",
                names.len()
            ),
        ));
    }
    let pin = match map.get("pin") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if p.chars().count() <= MAX_PIN_CHARS => Some(p.trim().to_string()),
        Some(Value::String(_)) => return Err(bad("pin", format!("the PIN is longer than {MAX_PIN_CHARS} characters"))),
        Some(_) => return Err(bad("pin", "pin must be text, e.g. \"2468\"")),
    };
    Ok(AttendanceForm {
        lesson,
        show_at,
        present,
        names,
        pin,
    })
}

/// Whether `given` is the station's attendance PIN `expected`, compared in time that does not
/// depend on where they differ.
pub fn pin_matches(expected: &str, given: Option<&str>) -> bool {
    let Some(given) = given else { return false };
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_good_form_parses_and_trims_names() {
        let form =
            parse(&json!({"lesson": "l1", "show_at": 100000, "present": 12, "names": [" 张三 ", "", "李四"]})).unwrap();
        assert_eq!(
            form,
            AttendanceForm {
                lesson: LessonId::new("l1").unwrap(),
                show_at: UnixTime(100_000),
                present: 12,
                names: vec!["张三".into(), "李四".into()],
                pin: None,
            }
        );
        let with_pin = parse(&json!({"lesson": "l1", "show_at": 1, "present": 1, "pin": " 2468 "})).unwrap();
        assert_eq!(with_pin.pin.as_deref(), Some("2468"));
    }

    #[test]
    fn a_pin_matches_only_itself() {
        assert!(pin_matches("2468", Some("2468")));
        for wrong in [None, Some(""), Some("2469"), Some("246"), Some("24680")] {
            assert!(!pin_matches("2468", wrong), "{wrong:?}");
        }
    }

    #[test]
    fn bad_forms_name_the_field() {
        let cases = [
            (json!([1, 2]), "body"),
            (json!({"lesson": "l1", "show_at": 1, "present": 1, "extra": 1}), "body"),
            (json!({"show_at": 1, "present": 1}), "lesson"),
            (json!({"lesson": "../etc", "show_at": 1, "present": 1}), "lesson"),
            (json!({"lesson": 7, "show_at": 1, "present": 1}), "lesson"),
            (json!({"lesson": "l1", "present": 1}), "show_at"),
            (json!({"lesson": "l1", "show_at": "19:30", "present": 1}), "show_at"),
            (json!({"lesson": "l1", "show_at": 1}), "present"),
            (json!({"lesson": "l1", "show_at": 1, "present": -1}), "present"),
            (json!({"lesson": "l1", "show_at": 1, "present": 2.5}), "present"),
            (json!({"lesson": "l1", "show_at": 1, "present": "12"}), "present"),
            (json!({"lesson": "l1", "show_at": 1, "present": 10_001}), "present"),
            (
                json!({"lesson": "l1", "show_at": 1, "present": 1, "names": "张三"}),
                "names",
            ),
            (
                json!({"lesson": "l1", "show_at": 1, "present": 1, "names": [1]}),
                "names",
            ),
            (
                json!({"lesson": "l1", "show_at": 1, "present": 1, "names": ["a", "b"]}),
                "names",
            ),
            (
                json!({"lesson": "l1", "show_at": 1, "present": 5, "names": ["a\u{7}b"]}),
                "names",
            ),
            (
                json!({"lesson": "l1", "show_at": 1, "present": 5, "names": ["x".repeat(33)]}),
                "names",
            ),
            (json!({"lesson": "l1", "show_at": 1, "present": 5, "pin": 2468}), "pin"),
            (
                json!({"lesson": "l1", "show_at": 1, "present": 5, "pin": "9".repeat(33)}),
                "pin",
            ),
        ];
        for (body, field) in cases {
            let e = parse(&body).unwrap_err();
            assert_eq!(e.field, field, "{body}: {}", e.message);
            assert!(!e.message.is_empty());
        }
    }
}

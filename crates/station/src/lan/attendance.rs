//! The attendance form: how many people came to a scheduled showing, optionally their names.
//! Pure: the form's JSON is read by `courseway_lan_proto::attendance` and the schedule is
//! checked here; the register and the record are written by the routes.
//!
//! A form is taken for a showing in this station's verified schedule (lesson and start time,
//! with a target that includes this station), from [`EARLIEST_BEFORE_SECS`] before its start
//! on, once: a second form for the same showing is refused (the count already went upstream).

use std::net::IpAddr;

use courseway_content::schedule::Place;
use courseway_content::{LessonId, Schedule, UnixTime};
use courseway_proto::Viewing;

pub use courseway_lan_proto::attendance::{parse, AttendanceForm, FormError, MAX_NAMES, MAX_NAME_CHARS, MAX_PRESENT};

/// A form may be entered from this long before the showing starts.
pub const EARLIEST_BEFORE_SECS: u64 = 30 * 60;

fn bad(field: &'static str, message: impl Into<String>) -> FormError {
    FormError::invalid(field, message)
}

/// Checks that the form is for a showing of `schedule` at this station that has started or
/// starts within [`EARLIEST_BEFORE_SECS`].
pub fn check_showing(
    schedule: Option<&Schedule>,
    place: &Place,
    form: &AttendanceForm,
    now: UnixTime,
) -> Result<(), FormError> {
    let scheduled = schedule.is_some_and(|s| {
        s.entries
            .iter()
            .any(|e| e.lesson == form.lesson && e.show_at == form.show_at && e.target.includes(place))
    });
    if !scheduled {
        return Err(FormError {
            field: "show_at",
            message: format!(
                "there is no showing of {} at {} for this station in its schedule",
                form.lesson, form.show_at.0
            ),
            not_found: true,
        });
    }
    if form.show_at.0 > now.0 + EARLIEST_BEFORE_SECS {
        return Err(bad(
            "show_at",
            format!(
                "this showing has not started; attendance can be entered from {} minutes before it",
                EARLIEST_BEFORE_SECS / 60
            ),
        ));
    }
    Ok(())
}

/// The viewing record of a form entered from `client`.
pub fn viewing(form: &AttendanceForm, client: IpAddr) -> Viewing {
    Viewing {
        lesson: form.lesson.clone(),
        rendition: String::new(),
        started_at: form.show_at,
        seconds_watched: 0,
        device: format!("attendance-form {client}"),
        attendance: Some(form.present),
    }
}

/// The register key of a showing in the station's `meta`.
pub fn register_key(lesson: &LessonId, show_at: UnixTime) -> Vec<u8> {
    format!("lan/attendance/{lesson}/{}", show_at.0).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use courseway_content::{AreaName, ScheduleEntry, Target};
    use serde_json::json;

    fn schedule() -> Schedule {
        Schedule {
            live: Vec::new(),
            version: 1,
            issued_at: UnixTime(0),
            expires_at: UnixTime(10_000_000),
            entries: vec![
                ScheduleEntry {
                    lesson: LessonId::new("l1").unwrap(),
                    show_at: UnixTime(100_000),
                    target: Target::Town(AreaName::new("shiqiao").unwrap()),
                },
                ScheduleEntry {
                    lesson: LessonId::new("l2").unwrap(),
                    show_at: UnixTime(100_000),
                    target: Target::Town(AreaName::new("elsewhere").unwrap()),
                },
            ],
        }
    }

    fn place() -> Place {
        Place {
            town: Some(AreaName::new("shiqiao").unwrap()),
            ..Place::default()
        }
    }

    #[test]
    fn a_form_for_a_showing_here_is_taken() {
        let form =
            parse(&json!({"lesson": "l1", "show_at": 100000, "present": 12, "names": [" 张三 ", "", "李四"]})).unwrap();
        assert_eq!(
            form,
            AttendanceForm {
                lesson: LessonId::new("l1").unwrap(),
                show_at: UnixTime(100_000),
                present: 12,
                names: vec!["张三".into(), "李四".into()],
            }
        );
        assert!(check_showing(Some(&schedule()), &place(), &form, UnixTime(100_500)).is_ok());
        assert!(check_showing(Some(&schedule()), &place(), &form, UnixTime(100_000 - 1800)).is_ok());
        let v = viewing(&form, "192.168.1.9".parse().unwrap());
        assert_eq!(v.attendance, Some(12));
        assert_eq!(v.started_at, UnixTime(100_000));
        assert_eq!(v.device, "attendance-form 192.168.1.9");
    }

    #[test]
    fn only_this_stations_showings_that_have_begun() {
        let form = |lesson: &str, at: u64| AttendanceForm {
            lesson: LessonId::new(lesson).unwrap(),
            show_at: UnixTime(at),
            present: 3,
            names: vec![],
        };
        let now = UnixTime(100_000);
        // Another town's showing, an unknown time, no schedule at all.
        for (f, s) in [
            (form("l2", 100_000), Some(schedule())),
            (form("l1", 100_001), Some(schedule())),
            (form("l1", 100_000), None),
        ] {
            let e = check_showing(s.as_ref(), &place(), &f, now).unwrap_err();
            assert!(e.not_found, "{}", e.message);
        }
        let early = check_showing(
            Some(&schedule()),
            &place(),
            &form("l1", 100_000),
            UnixTime(100_000 - 1801),
        )
        .unwrap_err();
        assert!(!early.not_found);
        assert_eq!(early.field, "show_at");
    }
}

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

pub use courseway_lan_proto::attendance::{
    parse, pin_matches, AttendanceForm, FormError, MAX_NAMES, MAX_NAME_CHARS, MAX_PRESENT,
};

/// A form may be entered from this long before the showing starts.
pub const EARLIEST_BEFORE_SECS: u64 = 30 * 60;
/// Wrong attendance PINs in a row before the form is locked for [`PIN_LOCKOUT_SECS`].
pub const PIN_TRIES: u32 = 5;
/// How long the form stays locked after [`PIN_TRIES`] wrong PINs.
pub const PIN_LOCKOUT_SECS: u64 = 60;

/// Keeps a device on the LAN from guessing the attendance PIN: after [`PIN_TRIES`] wrong ones in
/// a row, every form is refused for [`PIN_LOCKOUT_SECS`] (a 4-digit PIN then takes days to
/// guess, and the admin sees the refusals in the log). One per LAN server: the attempts of
/// all devices count together.
#[derive(Debug, Default)]
pub struct PinGuard {
    wrong_in_a_row: u32,
    locked_until: Option<UnixTime>,
}

impl PinGuard {
    /// `Err(seconds to wait)` while locked.
    pub fn check(&self, now: UnixTime) -> Result<(), u64> {
        match self.locked_until {
            Some(until) if now < until => Err(until.0 - now.0),
            _ => Ok(()),
        }
    }

    /// A wrong PIN at `now`.
    pub fn wrong(&mut self, now: UnixTime) {
        self.wrong_in_a_row += 1;
        if self.wrong_in_a_row >= PIN_TRIES {
            self.wrong_in_a_row = 0;
            self.locked_until = Some(UnixTime(now.0 + PIN_LOCKOUT_SECS));
        }
    }

    /// The right PIN.
    pub fn right(&mut self) {
        self.wrong_in_a_row = 0;
    }
}

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
        let form = parse(&json!({"lesson": "l1", "show_at": 100000, "present": 12})).unwrap();
        assert!(check_showing(Some(&schedule()), &place(), &form, UnixTime(100_500)).is_ok());
        assert!(check_showing(Some(&schedule()), &place(), &form, UnixTime(100_000 - 1800)).is_ok());
        let v = viewing(&form, "192.168.1.9".parse().unwrap());
        assert_eq!(v.attendance, Some(12));
        assert_eq!(v.started_at, UnixTime(100_000));
        assert_eq!(v.device, "attendance-form 192.168.1.9");
    }

    #[test]
    fn five_wrong_pins_lock_the_form_for_a_minute() {
        let mut guard = PinGuard::default();
        let t = |s: u64| UnixTime(1_000 + s);
        for _ in 0..PIN_TRIES - 1 {
            guard.wrong(t(0));
        }
        guard.right();
        for _ in 0..PIN_TRIES - 1 {
            guard.wrong(t(1));
            assert_eq!(guard.check(t(1)), Ok(()), "the right PIN reset the count");
        }
        guard.wrong(t(1));
        assert_eq!(guard.check(t(1)), Err(PIN_LOCKOUT_SECS));
        assert_eq!(guard.check(t(60)), Err(1));
        assert_eq!(guard.check(t(61)), Ok(()));
    }

    #[test]
    fn only_this_stations_showings_that_have_begun() {
        let form = |lesson: &str, at: u64| AttendanceForm {
            lesson: LessonId::new(lesson).unwrap(),
            show_at: UnixTime(at),
            present: 3,
            names: vec![],
            pin: None,
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

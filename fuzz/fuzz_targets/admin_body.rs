//! What the origin's admin API parses from a client: JSON request bodies, query strings,
//! schedule targets and enrolment tokens. Never panics; what parses prints back to itself.
#![no_main]
use courseway_admin_proto::body::{self, MetadataBody, NewLesson, NewShowing, NewUpload, RevokeBody, StepBody};
use courseway_admin_proto::enrol::{EnrolRequest, EnrolToken};
use courseway_admin_proto::query::{parse_query, parse_target, target_str};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    match selector % 10 {
        0 => drop(body::parse::<NewUpload>(rest)),
        1 => drop(body::parse::<NewLesson>(rest)),
        2 => drop(body::parse::<MetadataBody>(rest)),
        3 => drop(body::parse::<StepBody>(rest)),
        4 => drop(body::parse::<NewShowing>(rest)),
        5 => drop(body::parse::<RevokeBody>(rest)),
        6 => drop(EnrolRequest::parse(rest)),
        7 => {
            let text = String::from_utf8_lossy(rest);
            let q = parse_query(&text);
            assert!(q.len() <= text.len() + 1);
        }
        8 => {
            let text = String::from_utf8_lossy(rest);
            if let Ok(target) = parse_target(&text) {
                assert_eq!(target_str(&target), text, "a target prints back to its text");
            }
        }
        _ => {
            let text = String::from_utf8_lossy(rest);
            if let Ok(token) = text.parse::<EnrolToken>() {
                assert_eq!(token.to_string().parse::<EnrolToken>().unwrap(), token);
            }
        }
    }
});

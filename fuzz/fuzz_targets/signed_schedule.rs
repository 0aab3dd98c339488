//! Signed<Schedule> decoding: never panics; whatever decodes re-encodes to the same bytes.
#![no_main]
use courseway_content::encoding::{Decode, Encode};
use courseway_content::{Schedule, Signed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = <Signed<Schedule>>::from_bytes(data) {
        assert_eq!(value.to_bytes(), data, "decoding is not canonical");
    }
});

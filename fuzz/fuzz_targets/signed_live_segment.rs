//! Signed<LiveSegment> decoding: never panics; whatever decodes re-encodes to the same bytes.
#![no_main]
use courseway_content::encoding::{Decode, Encode};
use courseway_content::{LiveSegment, Signed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = <Signed<LiveSegment>>::from_bytes(data) {
        assert_eq!(value.to_bytes(), data, "decoding is not canonical");
    }
});

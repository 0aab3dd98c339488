//! Request frames: never panic; whatever decodes re-encodes to the same bytes.
#![no_main]
use courseway_proto::{encode_request, try_decode_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((request, used))) = try_decode_request(data) {
        let mut again = Vec::new();
        encode_request(&request, &mut again).expect("a decoded request re-encodes");
        assert_eq!(&again[..], &data[..used], "decoding is not canonical");
    }
});

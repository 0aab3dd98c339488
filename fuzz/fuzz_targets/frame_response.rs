//! Response frames: never panic; whatever decodes re-encodes to the same bytes.
#![no_main]
use courseway_proto::{encode_response, try_decode_response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((response, used))) = try_decode_response(data) {
        let mut again = Vec::new();
        encode_response(&response, &mut again).expect("a decoded response re-encodes");
        assert_eq!(&again[..], &data[..used], "decoding is not canonical");
    }
});

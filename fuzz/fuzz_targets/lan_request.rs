//! What a station's LAN server parses from devices on the village LAN: the attendance form's
//! JSON, `Range` headers and `User-Agent`s. Never panics; what parses keeps its promises.
#![no_main]
use courseway_lan_proto::attendance::{self, MAX_NAMES, MAX_NAME_CHARS, MAX_PRESENT};
use courseway_lan_proto::device::device_class;
use courseway_lan_proto::range::{parse_range, ByteRange};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    match selector % 3 {
        0 => {
            let Ok(body) = serde_json::from_slice::<serde_json::Value>(rest) else { return };
            if let Ok(form) = attendance::parse(&body) {
                assert!(u64::from(form.present) <= MAX_PRESENT);
                assert!(form.names.len() <= MAX_NAMES && form.names.len() <= form.present as usize);
                for name in &form.names {
                    assert!(!name.is_empty() && name.trim() == name);
                    assert!(name.chars().count() <= MAX_NAME_CHARS && !name.chars().any(char::is_control));
                }
            }
        }
        1 => {
            let Some((len, header)) = rest.split_first_chunk::<8>() else { return };
            let len = u64::from_le_bytes(*len);
            let header = String::from_utf8_lossy(header);
            match parse_range(Some(&header), len) {
                ByteRange::Part { start, end } => assert!(start <= end && end < len, "{header:?} of {len}"),
                ByteRange::Unsatisfiable | ByteRange::Whole => {}
            }
        }
        _ => {
            let class = device_class(&String::from_utf8_lossy(rest));
            assert!(["tv", "set-top-box", "phone", "tablet", "player", "pc", "other"].contains(&class));
        }
    }
});

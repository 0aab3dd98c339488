//! Chunk id parsing from text (URLs, CLI arguments): never panics; round-trips.
#![no_main]
use courseway_content::ChunkId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(id) = s.parse::<ChunkId>() {
            assert_eq!(id.to_string(), s.to_ascii_lowercase());
        }
    }
});

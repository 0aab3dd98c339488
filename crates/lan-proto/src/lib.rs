//! What a station's LAN server parses from the devices on its LAN: the attendance form's JSON
//! ([`attendance`]), `Range` headers ([`range`]) and `User-Agent` classes ([`device`]). Anyone on
//! the village LAN can send these, so they are untrusted input: plain functions with no IO,
//! kept out of `courseway-station` so that the `lan_request` fuzz target builds without RocksDB.

pub mod attendance;
pub mod device;
pub mod range;

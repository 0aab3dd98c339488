//! Column family names and the byte layout of keys and values.

use courseway_content::ChunkId;

use crate::policy::{EntryState, Queue};

pub const CF_CHUNKS: &str = "chunks";
pub const CF_ENTRIES: &str = "entries";
pub const CF_GHOSTS: &str = "ghosts";
pub const CF_PINS: &str = "pins";
pub const CF_META: &str = "meta";

/// Entry value: size (4), queue (1), seq (8), freq (1).
pub fn encode_entry(e: &EntryState) -> [u8; 14] {
    let mut out = [0u8; 14];
    out[..4].copy_from_slice(&e.size.to_be_bytes());
    out[4] = match e.queue {
        Queue::Small => 1,
        Queue::Main => 2,
    };
    out[5..13].copy_from_slice(&e.seq.to_be_bytes());
    out[13] = e.freq;
    out
}

pub fn decode_entry(bytes: &[u8]) -> Option<EntryState> {
    let bytes: &[u8; 14] = bytes.try_into().ok()?;
    Some(EntryState {
        size: u32::from_be_bytes(bytes[..4].try_into().ok()?),
        queue: match bytes[4] {
            1 => Queue::Small,
            2 => Queue::Main,
            _ => return None,
        },
        seq: u64::from_be_bytes(bytes[5..13].try_into().ok()?),
        freq: bytes[13],
    })
}

/// Ghost value: seq (8), size (4).
pub fn encode_ghost(seq: u64, size: u32) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(&seq.to_be_bytes());
    out[8..].copy_from_slice(&size.to_be_bytes());
    out
}

pub fn decode_ghost(bytes: &[u8]) -> Option<(u64, u32)> {
    let bytes: &[u8; 12] = bytes.try_into().ok()?;
    Some((
        u64::from_be_bytes(bytes[..8].try_into().ok()?),
        u32::from_be_bytes(bytes[8..].try_into().ok()?),
    ))
}

pub fn chunk_id(key: &[u8]) -> Option<ChunkId> {
    Some(ChunkId::from_bytes(key.try_into().ok()?))
}

/// Pin key: reason (1), holder length (1), holder, chunk id (32). Keys of one holder are
/// contiguous, so a holder's pins are dropped with one range scan.
pub fn pin_key(reason: u8, holder: &str, id: &ChunkId) -> Vec<u8> {
    let mut key = pin_prefix(reason, holder);
    key.extend_from_slice(id.as_bytes());
    key
}

pub fn pin_prefix(reason: u8, holder: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + holder.len() + 32);
    key.push(reason);
    key.push(holder.len() as u8);
    key.extend_from_slice(holder.as_bytes());
    key
}

/// The chunk id at the end of a pin key.
pub fn pin_key_chunk(key: &[u8]) -> Option<ChunkId> {
    let start = key.len().checked_sub(32)?;
    chunk_id(&key[start..])
}

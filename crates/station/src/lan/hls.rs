//! HLS and attachments from the store: playlists made by `courseway-hls` (the code `courseway
//! media transcode` writes them with), and bodies streamed chunk by chunk.
//!
//! A segment or attachment is a list of chunks. Its body is read from the store one chunk at a
//! time, in order, as the client takes it (at most [`READ_AHEAD`] chunks ahead): the store hashes
//! each chunk before returning it, so no unverified byte is sent. A chunk that fails its check
//! (or vanished) ends the body early with an error, and the client sees a body shorter than its
//! `Content-Length`, never wrong bytes.
//!
//! Byte ranges: one `bytes=` range per request (`a-b`, `a-`, `-n`); several ranges, or a header
//! that does not parse, get the whole body (RFC 9110 lets a server ignore `Range`); a range that
//! starts past the end gets 416.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use courseway_content::{ChunkId, ChunkRef, LessonManifest, Rendition};
use courseway_node::http::StreamingBody;
use courseway_node::store_io;
use courseway_store::Store;
use http_body_util::BodyExt;
use hyper::body::{Body, Bytes, Frame};
use tokio::sync::mpsc;

/// Chunks read ahead of the client.
pub const READ_AHEAD: usize = 2;

/// URI of a rendition's media playlist, relative to the master playlist.
pub fn media_playlist_uri(rendition: &Rendition) -> String {
    format!("{}/index.m3u8", rendition.name)
}

/// URI of a segment, relative to its media playlist.
pub fn segment_uri(index: usize) -> String {
    format!("{index}.ts")
}

/// The lesson's master playlist, as served at `/hls/{lesson}/master.m3u8`.
pub fn master(manifest: &LessonManifest) -> String {
    courseway_hls::master_playlist(manifest, media_playlist_uri)
}

/// A rendition's media playlist, as served at `/hls/{lesson}/{rendition}/index.m3u8`.
pub fn media(rendition: &Rendition) -> String {
    courseway_hls::media_playlist(rendition, |i, _| segment_uri(i))
}

pub use courseway_lan_proto::range::{parse_range, ByteRange};

/// One read of the store: `len` bytes of chunk `id` from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRead {
    pub id: ChunkId,
    pub offset: u32,
    pub len: u32,
}

/// The store reads that make bytes `start..end` of the body made of `chunks` in order.
pub fn reads(chunks: &[ChunkRef], start: u64, end: u64) -> Vec<ChunkRead> {
    let mut out = Vec::new();
    let mut at = 0u64;
    for c in chunks {
        let (from, to) = (at, at + u64::from(c.size));
        at = to;
        let (lo, hi) = (start.max(from), end.min(to));
        if lo < hi {
            out.push(ChunkRead {
                id: c.id,
                offset: (lo - from) as u32,
                len: (hi - lo) as u32,
            });
        }
    }
    out
}

/// A body fed by a channel.
#[derive(Debug)]
struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

/// A body made of `reads`, read from the store (verified) one chunk at a time as the client
/// takes it. The reading task ends when the body is dropped (client gone).
pub fn stream(store: Arc<Store>, reads: Vec<ChunkRead>) -> StreamingBody {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    tokio::spawn(async move {
        for r in reads {
            let got = store_io(&store, move |s| s.get(&r.id, r.offset)).await;
            let next = match got {
                Ok(Some(mut bytes)) if bytes.len() >= r.len as usize => {
                    bytes.truncate(r.len as usize);
                    Ok(Bytes::from(bytes))
                }
                Ok(_) => Err(std::io::Error::other(format!(
                    "chunk {} is no longer held; the body ends early",
                    r.id
                ))),
                Err(e) => Err(std::io::Error::other(format!("chunk {}: {e}", r.id))),
            };
            let failed = next.is_err();
            if let Err(e) = &next {
                tracing::error!(error = %e, "LAN: a chunk could not be read for a client");
            }
            if tx.send(next).await.is_err() || failed {
                return;
            }
        }
    });
    ChannelBody { rx }.boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunk(n: u8, size: u32) -> ChunkRef {
        ChunkRef {
            id: ChunkId::of(&[n]),
            size,
        }
    }

    proptest! {
        /// The reads cover exactly the asked bytes, in order, each within its chunk.
        #[test]
        fn reads_cover_the_range(sizes in proptest::collection::vec(1u32..5000, 1..10), a in 0u64..60_000, b in 0u64..60_000) {
            let chunks: Vec<_> = sizes.iter().enumerate().map(|(i, s)| chunk(i as u8, *s)).collect();
            let total: u64 = sizes.iter().map(|s| u64::from(*s)).sum();
            let (start, end) = (a.min(b).min(total), a.max(b).min(total));
            let got = reads(&chunks, start, end);
            prop_assert_eq!(got.iter().map(|r| u64::from(r.len)).sum::<u64>(), end - start);
            // Rebuild the byte positions the reads name and compare with the range.
            let mut offsets = Vec::new();
            let mut at = 0u64;
            for c in &chunks {
                offsets.push((c.id, at, c.size));
                at += u64::from(c.size);
            }
            let mut expect = start;
            for r in &got {
                prop_assert!(r.len > 0);
                let (_, base, size) = offsets.iter().find(|(id, _, _)| *id == r.id).copied().unwrap();
                prop_assert!(r.offset + r.len <= size);
                prop_assert_eq!(base + u64::from(r.offset), expect);
                expect += u64::from(r.len);
            }
            prop_assert_eq!(expect, end);
        }
    }
}

//! Following live channels: one subscription upstream per channel; each announced segment is
//! verified end to end (a refusal is counted in `courseway_upstream_rejected_total{object="live"}`
//! and the segment dropped), kept in the window (pinned), and its chunks fetched at once. A
//! segment that cannot be fetched stays a gap: the LAN playlist skips it and goes on.

use std::sync::Arc;
use std::time::Duration;

use courseway_content::{ChannelId, LiveSegment, Signed};
use courseway_net::read_response;
use courseway_node::live::{self, keep};
use courseway_node::{clock, store_io, SignedKind};
use courseway_proto::{Announcement, Request, Response, Subscribe, Topic};
use tokio::task::JoinSet;

use crate::State;

/// Follows `channel` for the station's lifetime, subscribing again (elsewhere if need be) when
/// a subscription ends.
pub(crate) async fn follow(state: Arc<State>, channel: ChannelId) {
    let mut attempt = 0u32;
    // Segments being fetched; dropped (aborted) with this task.
    let mut taking = JoinSet::new();
    loop {
        let subscribe = Request::Subscribe(Subscribe {
            topics: vec![Topic::Live(channel.clone())],
        });
        let (_, first, mut recv) = match state.upstream.request(&subscribe).await {
            Ok(opened) => opened,
            Err(e) => {
                attempt += 1;
                tracing::warn!(station = %state.name, %channel, error = %e, "no live subscription; will retry");
                tokio::time::sleep(Duration::from_millis(200 << attempt.min(5))).await;
                continue;
            }
        };
        attempt = 0;
        let mut next = Some(first);
        while let Some(response) = next.take() {
            if let Response::Announce(Announcement::Live(segment)) = response {
                let (state, channel) = (state.clone(), channel.clone());
                taking.spawn(async move { take(&state, &channel, *segment).await });
            }
            while taking.try_join_next().is_some() {}
            match read_response(&mut recv).await {
                Ok(r) => next = Some(r),
                Err(e) => {
                    tracing::debug!(station = %state.name, %channel, error = %e, "live subscription ended; subscribing again")
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Verifies, keeps and fetches one announced segment.
async fn take(state: &Arc<State>, channel: &ChannelId, segment: Signed<LiveSegment>) {
    if segment.body.channel != *channel {
        tracing::warn!(station = %state.name, %channel, got = %segment.body.channel, "a parent sent a segment of another channel; dropped");
        return;
    }
    let verified = state.trust.lock().verify_live_segment(&segment, clock::now());
    if let Err(e) = verified {
        state.upstream.stats().rejections.signed(SignedKind::Live, &e);
        tracing::warn!(station = %state.name, %channel, sequence = segment.body.sequence, error = %e, "refused a live segment");
        return;
    }
    let segment = Arc::new(segment);
    match keep(&state.live, &state.store, segment.clone()).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::error!(station = %state.name, error = %e, "could not pin a live segment");
            return;
        }
    }
    for chunk in segment.body.chunks.iter().copied() {
        if state.store.has(&chunk.id) {
            continue;
        }
        // Live segments are not held back by the lesson download windows: they are wanted now.
        let fetched = state.upstream.fetch_chunk(chunk, None).await;
        let bytes = match fetched {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(station = %state.name, %channel, sequence = segment.body.sequence, error = %e, "could not fetch a live segment; the playlist skips it");
                return;
            }
        };
        if let Err(e) = store_io(&state.store, move |s| s.put(chunk.id, &bytes)).await {
            tracing::warn!(station = %state.name, error = %e, "could not store a live segment; the playlist skips it");
            return;
        }
    }
    state.live.mark_complete(&segment.body, live::now_ms());
}

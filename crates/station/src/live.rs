//! Following live channels: one subscription upstream per channel. Each announced segment (of
//! every rendition; announcements are small) is verified end to end (a refusal is counted in
//! `courseway_upstream_rejected_total{object="live"}` and the segment dropped) and kept in the
//! window (pinned). A fetcher per channel then takes one segment at a time, of the rendition
//! the station's line can sustain ([`crate::abr`]): it never fetches every rendition over a weak
//! line.
//!
//! - **Live edge**: the fetcher never works more than [`LiveFetchConfig::catch_up`] segments
//!   behind the newest announced one; after an outage it skips to the edge instead of filling
//!   the outage.
//! - **Gaps**: a segment that cannot be fetched (an error, or no last byte within
//!   [`LiveFetchConfig::fetch_timeout_segments`] segment durations) is tried once more if it is
//!   still near the edge, else skipped; the LAN playlist marks it as a gap and goes on.
//! - The audio-only rung is not fetched beside the chosen one: it is the ladder's cheapest rung
//!   and the station steps down to it when nothing else fits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use courseway_content::{ChannelId, LiveSegment, Signed};
use courseway_net::read_response;
use courseway_node::live::{self, keep, LiveWindow};
use courseway_node::{clock, store_io, SignedKind};
use courseway_proto::{Announcement, Request, Response, Subscribe, Topic};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::abr::{Abr, AbrConfig, Decision, Fetched};
use crate::State;

/// How a station fetches live segments.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveFetchConfig {
    /// The rendition choice.
    pub abr: AbrConfig,
    /// The fetcher works at most this many segments behind the newest announced one (2).
    pub catch_up: u64,
    /// A segment fetch is given up after this many segment durations (3).
    pub fetch_timeout_segments: u32,
}

impl Default for LiveFetchConfig {
    fn default() -> Self {
        Self {
            abr: AbrConfig::default(),
            catch_up: 2,
            fetch_timeout_segments: 3,
        }
    }
}

/// The rendition a station fetches for one channel, for metrics, the LAN playlists and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveChoice {
    /// Rung in the channel's ladder (0 = best).
    pub rung: usize,
    pub rendition: String,
    /// Rendition switches since the station started.
    pub switches: u64,
    /// Segments given up (not fetched after a retry) and skipped to stay at the live edge.
    pub lost: u64,
    pub skipped: u64,
}

/// The live state of a station beside its windows: the choice per channel.
#[derive(Debug, Default)]
pub(crate) struct Following {
    choices: Mutex<BTreeMap<ChannelId, LiveChoice>>,
}

impl Following {
    pub(crate) fn choice(&self, channel: &ChannelId) -> Option<LiveChoice> {
        self.choices.lock().get(channel).cloned()
    }

    pub(crate) fn all(&self) -> BTreeMap<ChannelId, LiveChoice> {
        self.choices.lock().clone()
    }

    fn update(&self, channel: &ChannelId, f: impl FnOnce(&mut LiveChoice)) {
        let mut choices = self.choices.lock();
        f(choices.entry(channel.clone()).or_insert_with(|| LiveChoice {
            rung: 0,
            rendition: String::new(),
            switches: 0,
            lost: 0,
            skipped: 0,
        }))
    }
}

/// Follows `channel` for the station's lifetime, subscribing again (elsewhere if need be) when
/// a subscription ends.
pub(crate) async fn follow(state: Arc<State>, channel: ChannelId) {
    let announced = Arc::new(Notify::new());
    // The fetcher, dropped (aborted) with this task.
    let mut fetcher = JoinSet::new();
    fetcher.spawn(fetch_loop(state.clone(), channel.clone(), announced.clone()));
    let mut attempt = 0u32;
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
                if take(&state, &channel, *segment).await {
                    announced.notify_one();
                }
            }
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

/// Verifies and keeps (pins) one announced segment; `true` if it is new.
async fn take(state: &Arc<State>, channel: &ChannelId, segment: Signed<LiveSegment>) -> bool {
    if segment.body.channel != *channel {
        tracing::warn!(station = %state.name, %channel, got = %segment.body.channel, "a parent sent a segment of another channel; dropped");
        return false;
    }
    let verified = state.trust.lock().verify_live_segment(&segment, clock::now());
    if let Err(e) = verified {
        state.upstream.stats().rejections.signed(SignedKind::Live, &e);
        tracing::warn!(station = %state.name, %channel, sequence = segment.body.sequence, error = %e, "refused a live segment");
        return false;
    }
    match keep(&state.live, &state.store, Arc::new(segment)).await {
        Ok(new) => new,
        Err(e) => {
            tracing::error!(station = %state.name, error = %e, "could not pin a live segment");
            false
        }
    }
}

/// One rung of a channel's ladder as seen in the window.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rung {
    pub rendition: String,
    /// Bit rate measured from the window's segment sizes (the announced one if none).
    pub bps: u64,
}

/// The channel's renditions in the window, best first (by announced rung, then bit rate).
pub(crate) fn ladder(window: &[Arc<Signed<LiveSegment>>]) -> Vec<Rung> {
    let mut by: BTreeMap<&str, (u8, u64, u64, u64)> = BTreeMap::new();
    for s in window {
        let e =
            by.entry(s.body.rendition.as_str())
                .or_insert((s.body.info.rung, 0, 0, u64::from(s.body.info.bandwidth)));
        e.1 += s.body.size();
        e.2 += u64::from(s.body.duration_ms);
    }
    let mut rungs: Vec<(u8, Rung)> = by
        .into_iter()
        .map(|(name, (rung, bytes, ms, nominal))| {
            let bps = (bytes * 8000).checked_div(ms).unwrap_or(nominal);
            (
                rung,
                Rung {
                    rendition: name.to_owned(),
                    bps,
                },
            )
        })
        .collect();
    rungs.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.bps.cmp(&a.1.bps)));
    rungs.into_iter().map(|(_, r)| r).collect()
}

/// The master playlist's variants: the renditions with a segment held whole here, best first,
/// with the peak and mean bit rates of their segments in the window (at least the announced
/// one), picture size and codecs as announced.
pub(crate) fn held_variants(
    live: &LiveWindow,
    channel: &ChannelId,
    window: &[Arc<Signed<LiveSegment>>],
) -> Vec<courseway_hls::LiveVariant> {
    ladder(window)
        .into_iter()
        .filter_map(|rung| {
            let segments: Vec<_> = window.iter().filter(|s| s.body.rendition == rung.rendition).collect();
            if !segments.iter().any(|s| live.is_complete(&s.body)) {
                return None;
            }
            let info = &segments.last()?.body.info;
            let peak = segments
                .iter()
                .filter_map(|s| (s.body.size() * 8000).checked_div(u64::from(s.body.duration_ms)))
                .max()
                .unwrap_or(0);
            Some(courseway_hls::LiveVariant {
                uri: format!("{channel}/{}.m3u8", rung.rendition),
                bandwidth: peak.max(u64::from(info.bandwidth)).max(1),
                average_bandwidth: Some(rung.bps),
                resolution: (info.width > 0).then_some((u32::from(info.width), u32::from(info.height))),
                codecs: info.codecs.clone(),
            })
        })
        .collect()
}

/// Fetches the channel's segments one at a time, in the rendition the ABR picks.
async fn fetch_loop(state: Arc<State>, channel: ChannelId, announced: Arc<Notify>) {
    let config = state.live_fetch.clone();
    let mut abr = Abr::new(config.abr.clone(), 0);
    let mut next: Option<u64> = None;
    let mut waited_for: Option<u64> = None;
    loop {
        let window = state.live.window(&channel);
        let Some(edge) = window.iter().map(|s| s.body.sequence).max() else {
            announced.notified().await;
            continue;
        };
        let seq = match next {
            None => edge,
            Some(n) => {
                let floor = edge.saturating_sub(config.catch_up);
                if n < floor {
                    let skipped = floor - n;
                    state.live_following.update(&channel, |c| c.skipped += skipped);
                    tracing::info!(station = %state.name, %channel, from = n, to = floor, "behind the live edge; skipping to it");
                }
                n.max(floor)
            }
        };
        if seq > edge {
            announced.notified().await;
            continue;
        }
        let rungs = ladder(&window);
        let bitrates: Vec<u64> = rungs.iter().map(|r| r.bps).collect();
        let rung = abr.current(rungs.len());
        let rendition = rungs[rung].rendition.clone();
        state.live_following.update(&channel, |c| {
            c.rung = rung;
            c.rendition.clone_from(&rendition);
        });
        let Some(segment) = window
            .iter()
            .find(|s| s.body.rendition == rendition && s.body.sequence == seq)
            .cloned()
        else {
            // Not announced in this rendition (yet): wait once for up to a segment, then skip.
            let duration = window.last().map(|s| s.body.duration_ms).unwrap_or(2000);
            if waited_for != Some(seq) {
                waited_for = Some(seq);
                let _ = tokio::time::timeout(Duration::from_millis(u64::from(duration)), announced.notified()).await;
            } else {
                tracing::debug!(station = %state.name, %channel, seq, %rendition, "segment never announced in this rendition; skipped");
                state.live_following.update(&channel, |c| c.skipped += 1);
                next = Some(seq + 1);
            }
            continue;
        };
        next = Some(seq + 1);
        if state.live.is_complete(&segment.body) {
            continue;
        }
        let timeout =
            Duration::from_millis(u64::from(segment.body.duration_ms.max(500))) * config.fetch_timeout_segments.max(1);
        let started = Instant::now();
        let mut fetched = fetch_segment(&state, &segment.body, timeout).await;
        if let Err(e) = &fetched {
            let edge = state
                .live
                .window(&channel)
                .iter()
                .map(|s| s.body.sequence)
                .max()
                .unwrap_or(edge);
            if seq + config.catch_up >= edge {
                tracing::info!(station = %state.name, %channel, seq, error = %e, "a live segment could not be fetched; trying once more");
                fetched = fetch_segment(&state, &segment.body, timeout).await;
            }
        }
        let took = started.elapsed();
        match fetched {
            Ok(bytes) => {
                state.live.mark_complete(&segment.body, live::now_ms());
                let edge = newest(&state.live, &channel).unwrap_or(edge);
                let f = Fetched {
                    bytes,
                    took_ms: took.as_millis() as u64,
                    duration_ms: segment.body.duration_ms,
                    lag: edge.saturating_sub(seq),
                };
                if let Decision::Switch { from, to, reason } = abr.fetched(&f, &bitrates) {
                    let to_name = rungs[to].rendition.clone();
                    tracing::info!(
                        station = %state.name, %channel, seq, from = %rungs[from].rendition, to = %to_name,
                        ?reason, goodput_bps = f.goodput_bps() as u64, lag = f.lag, "live rendition switched"
                    );
                    state.live_following.update(&channel, |c| {
                        c.rung = to;
                        c.rendition = to_name;
                        c.switches += 1;
                    });
                }
            }
            Err(e) => {
                state.live_following.update(&channel, |c| c.lost += 1);
                tracing::warn!(station = %state.name, %channel, seq, %rendition, error = %e, "could not fetch a live segment; the playlist skips it");
            }
        }
    }
}

fn newest(window: &LiveWindow, channel: &ChannelId) -> Option<u64> {
    window.window(channel).iter().map(|s| s.body.sequence).max()
}

/// Why a live segment was not fetched.
#[derive(Debug, thiserror::Error)]
enum SegmentFetchError {
    #[error("no last byte within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Upstream(#[from] courseway_node::UpstreamError),
    #[error("the store refused it: {0}")]
    Store(String),
}

/// Fetches and stores the chunks of `segment` the store lacks; the bytes fetched.
async fn fetch_segment(state: &Arc<State>, segment: &LiveSegment, timeout: Duration) -> Result<u64, SegmentFetchError> {
    let work = async {
        let mut bytes = 0u64;
        for chunk in segment.chunks.iter().copied() {
            if state.store.has(&chunk.id) {
                continue;
            }
            // Live segments are not held back by the lesson download windows: they are wanted now.
            let data = state.upstream.fetch_chunk(chunk, None).await?;
            bytes += data.len() as u64;
            store_io(&state.store, move |s| s.put(chunk.id, &data))
                .await
                .map_err(|e| SegmentFetchError::Store(e.to_string()))?;
        }
        Ok(bytes)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| SegmentFetchError::Timeout(timeout))?
}

//! QUIC transport settings, sized for rural links.
//!
//! A village station sits on a telecom broadband line of a few Mbit/s, shared with other
//! services, lossy, with round trips of 50 to 300 ms and frequent short cuts, often behind a
//! carrier-grade NAT. The defaults follow from that:
//!
//! - **Keep-alive every 10 s.** NATs drop idle UDP mappings after as little as 30 s; a ping every
//!   10 s keeps the mapping (so the parent can still push announcements) for a few bytes a
//!   second.
//! - **Idle timeout 60 s.** Several keep-alives in a row may be lost on a bad line before the
//!   connection is declared dead, yet a dead parent is noticed within a minute so a station can
//!   fail over. (QUIC uses the smaller of the two peers' values.)
//! - **Stream window 1.25 MiB.** A whole chunk (≤ 1 MiB) and its header fit in one stream's
//!   window, so a chunk is never stalled waiting for a flow-control update.
//! - **Connection window 8 MiB, send window 8 MiB.** Room for several chunks in flight at once;
//!   well above a rural link's bandwidth-delay product (4 Mbit/s × 300 ms ≈ 150 KB) and modest
//!   on a relay serving hundreds of children.
//! - **On a line of known rate, windows of one second of it.** A station that knows its line
//!   (its rate cap) lets its parent have at most [`LINE_WINDOW`] of the line's bytes in flight
//!   toward it ([`TransportConfig::for_line`]): on a 2 Mbit/s line, 250 kB. Whatever the
//!   sender's congestion controller does, the queue in front of the village line then holds at
//!   most the window less one round trip: a line whose buffer is at least that deep is never
//!   overrun into tail drops, and the village's other traffic waits behind at most a second of
//!   lesson. Never below [`MIN_LINE_WINDOW`] (64 KiB, a second of 512 kbit/s): on slower lines
//!   a smaller window made transfers hang on single lost credit updates. The fleet benchmark
//!   (`docs/benchmarks.md`, 16 and 64 kbit/s lines, 16 KiB queues) tried a 12 KiB floor: the
//!   parent's queue drops fell 7-fold and it sent 1.07 bytes per lesson byte instead of
//!   1.32-1.38, but the parent then sends only as quinn returns credit (an eighth of the window
//!   at a time). Under the full fleet's load 101 chunk transfers then went 30 s without a byte
//!   and were abandoned, and the slowest stations came in at 1.20 of the bound (most likely:
//!   a lost credit update that no later one replaces waits for a probe timeout, which a
//!   queue-inflated round trip of seconds stretches; not traced per connection).
//! - **64 concurrent bidirectional streams per connection, no unidirectional ones.** Every
//!   request is one bidirectional stream; the cap bounds what one peer can make a server hold.
//! - **Congestion control: BBR.** Random loss is the rural line's normal state, not a sign of
//!   congestion. On the emulated village link (2 Mbit/s, 100 ms one way, 1 % random loss, a
//!   one-BDP queue; `docs/benchmarks.md`) a station received a 20 MB lesson at 0.86-0.87 of line
//!   rate with BBR, 0.32 with Cubic and 0.29 with NewReno (TCP from nginx, same link: Cubic 0.32,
//!   BBR 0.91-0.93). Loss-based controllers shrink their window at every loss, which at 1 % comes
//!   every few round trips, so they keep the line a third busy; BBR follows its bandwidth and RTT
//!   estimates. The price: quinn 0.11's BBR overshoots a shallow bottleneck (its pacing follows
//!   the window, which BBR keeps at twice the bandwidth-delay product), so the queue in front of
//!   the line drops more than it forwards. The controller acts on the sending side, so this
//!   default governs what a relay or origin sends to stations (and to other relays). Cubic, fair
//!   to TCP on a shared line, and NewReno are one setting away.

use std::sync::Arc;
use std::time::Duration;

use quinn::congestion::{BbrConfig, CubicConfig, NewRenoConfig};
use quinn::{IdleTimeout, VarInt};

use crate::error::NetError;

/// How much of a line's time a line-sized receive window holds ([`TransportConfig::for_line`]).
pub const LINE_WINDOW: Duration = Duration::from_secs(1);

/// The smallest line-sized receive window (see the module doc for why not smaller).
pub const MIN_LINE_WINDOW: u32 = 64 * 1024;

/// Which congestion controller a connection uses (it governs what this endpoint sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CongestionControl {
    /// CUBIC (RFC 9438): fair to TCP sharing the line, but random loss keeps it far below the
    /// line rate (0.32 at 1 % loss in docs/benchmarks.md).
    Cubic,
    /// BBR: models bandwidth and RTT instead of reacting to loss; the default, for lossy rural
    /// links (see the module doc).
    #[default]
    Bbr,
    /// NewReno (RFC 9002's reference): simple and conservative.
    NewReno,
}

/// The QUIC transport settings of an endpoint. See the module doc for why the defaults are what
/// they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    pub congestion: CongestionControl,
    /// How often to send a keep-alive when nothing else is sent. Must be below `idle_timeout`.
    pub keep_alive_interval: Duration,
    /// How long a silent connection lives.
    pub idle_timeout: Duration,
    /// Bytes a peer may send on one stream ahead of what we have read.
    pub stream_receive_window: u32,
    /// Bytes a peer may send on all streams of a connection ahead of what we have read.
    pub receive_window: u32,
    /// Bytes we buffer for sending on all streams of a connection.
    pub send_window: u64,
    /// Most bidirectional streams (requests) a peer may have open at once.
    pub max_concurrent_bidi_streams: u32,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            congestion: CongestionControl::Bbr,
            keep_alive_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            stream_receive_window: 1280 * 1024,
            receive_window: 8 << 20,
            send_window: 8 << 20,
            max_concurrent_bidi_streams: 64,
        }
    }
}

impl TransportConfig {
    /// These settings with receive windows sized to a line of `bytes_per_sec` (see the module
    /// doc): one connection window of [`LINE_WINDOW`] of the line, at least [`MIN_LINE_WINDOW`]
    /// and at most the configured windows, and each stream may use all of it.
    pub fn for_line(&self, bytes_per_sec: u64) -> Self {
        let line = bytes_per_sec.saturating_mul(LINE_WINDOW.as_millis() as u64) / 1000;
        let window = line.max(u64::from(MIN_LINE_WINDOW)).min(u64::from(self.receive_window)) as u32;
        Self {
            stream_receive_window: window.min(self.stream_receive_window),
            receive_window: window,
            ..self.clone()
        }
    }

    /// Checks the values and builds quinn's transport configuration.
    pub fn to_quinn(&self) -> Result<quinn::TransportConfig, NetError> {
        if self.keep_alive_interval.is_zero() || self.keep_alive_interval >= self.idle_timeout {
            return Err(NetError::config(
                "transport keep-alive interval",
                format!(
                    "{:?} must be above zero and below the idle timeout ({:?}), or the connection times out between keep-alives",
                    self.keep_alive_interval, self.idle_timeout
                ),
            ));
        }
        let idle = IdleTimeout::try_from(self.idle_timeout).map_err(|_| {
            NetError::config(
                "transport idle timeout",
                format!("{:?} is too long for QUIC; use minutes, not years", self.idle_timeout),
            )
        })?;
        if self.stream_receive_window < MIN_LINE_WINDOW || self.receive_window < self.stream_receive_window {
            return Err(NetError::config(
                "transport windows",
                format!(
                    "the stream window must be at least {} KiB and the connection window at least the stream window",
                    MIN_LINE_WINDOW / 1024
                ),
            ));
        }
        if self.max_concurrent_bidi_streams == 0 {
            return Err(NetError::config(
                "transport stream limit",
                "at least one concurrent stream is needed to make any request",
            ));
        }
        let mut t = quinn::TransportConfig::default();
        t.keep_alive_interval(Some(self.keep_alive_interval))
            .max_idle_timeout(Some(idle))
            .stream_receive_window(VarInt::from_u32(self.stream_receive_window))
            .receive_window(VarInt::from_u32(self.receive_window))
            .send_window(self.send_window)
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_concurrent_bidi_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(0));
        match self.congestion {
            CongestionControl::Cubic => t.congestion_controller_factory(Arc::new(CubicConfig::default())),
            CongestionControl::Bbr => t.congestion_controller_factory(Arc::new(BbrConfig::default())),
            CongestionControl::NewReno => t.congestion_controller_factory(Arc::new(NewRenoConfig::default())),
        };
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_every_controller_build() {
        for congestion in [
            CongestionControl::Cubic,
            CongestionControl::Bbr,
            CongestionControl::NewReno,
        ] {
            let c = TransportConfig {
                congestion,
                ..TransportConfig::default()
            };
            assert!(c.to_quinn().is_ok());
        }
    }

    #[test]
    fn nonsense_is_refused() {
        let bad = [
            TransportConfig {
                keep_alive_interval: Duration::from_secs(60),
                ..Default::default()
            },
            TransportConfig {
                keep_alive_interval: Duration::ZERO,
                ..Default::default()
            },
            TransportConfig {
                idle_timeout: Duration::from_secs(u64::MAX / 4),
                ..Default::default()
            },
            TransportConfig {
                receive_window: 1024,
                ..Default::default()
            },
            TransportConfig {
                max_concurrent_bidi_streams: 0,
                ..Default::default()
            },
        ];
        for c in bad {
            assert!(c.to_quinn().is_err(), "{c:?}");
        }
    }

    #[test]
    fn line_windows_hold_a_second_of_the_line_within_bounds() {
        let d = TransportConfig::default();
        // 2 Mbit/s: 250,000 bytes; the stream window is capped by the configured one.
        let two_mbit = d.for_line(250_000);
        assert_eq!(two_mbit.receive_window, 250_000);
        assert_eq!(two_mbit.stream_receive_window, 250_000);
        // 64 kbit/s: a second is 8,000 bytes, below the floor.
        let slow = d.for_line(8_000);
        assert_eq!(
            (slow.receive_window, slow.stream_receive_window),
            (MIN_LINE_WINDOW, MIN_LINE_WINDOW)
        );
        // 1 Gbit/s: never above the configured windows.
        let fast = d.for_line(125_000_000);
        assert_eq!(fast.receive_window, d.receive_window);
        assert_eq!(fast.stream_receive_window, d.stream_receive_window);
        for c in [two_mbit, slow, fast] {
            assert!(c.to_quinn().is_ok(), "{c:?}");
            assert_eq!(c.congestion, d.congestion);
        }
    }
}

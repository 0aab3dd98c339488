//! What a link is like: [`LinkConfig`] for one direction, [`DuplexConfig`] for both, and the
//! limits [`LinkConfig::validate`] enforces.

use std::time::Duration;

use thiserror::Error;

/// The slowest rate accepted: one byte per second.
pub const MIN_RATE_BPS: u64 = 8;
/// The longest propagation delay, and the widest jitter, accepted.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// The smallest bottleneck buffer: one full-size Ethernet frame, so that a link with a rate
/// can always carry a QUIC packet.
pub const MIN_QUEUE_BYTES: usize = 1500;
/// The largest bottleneck buffer.
pub const MAX_QUEUE_BYTES: usize = 64 * 1024 * 1024;
/// The default bottleneck buffer: 64 KiB, about 260 ms at 2 Mbit/s.
pub const DEFAULT_QUEUE_BYTES: usize = 64 * 1024;
/// The most outage windows one schedule may hold.
pub const MAX_OUTAGES: usize = 1024;

/// A configuration value out of range. The message names the field, the value and what is
/// allowed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid link config: `{field}` is {value}; {allowed}")]
pub struct ConfigError {
    /// The field, e.g. `loss` or `outages[2]`.
    pub field: String,
    /// The value that was refused, as text.
    pub value: String,
    /// What would have been accepted.
    pub allowed: &'static str,
}

impl ConfigError {
    fn new(field: impl Into<String>, value: impl Into<String>, allowed: &'static str) -> Self {
        Self {
            field: field.into(),
            value: value.into(),
            allowed,
        }
    }
}

/// One direction of an emulated link.
///
/// A packet offered to the link is dropped if the link is down (a scheduled outage or a manual
/// cut), lost at random with probability `loss`, or tail-dropped when the bottleneck buffer
/// (`queue_bytes`) is full. Otherwise it is serialised at `rate_bps` after the packets ahead of
/// it, then takes `delay` plus a uniform extra in `[0, jitter]` to arrive. Unless `reorder` is
/// set, a packet never arrives before the one offered before it (jitter then bunches packets
/// instead of swapping them).
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Bits per second, `None` for no limit (no serialisation delay, no queueing).
    pub rate_bps: Option<u64>,
    /// One-way propagation delay.
    pub delay: Duration,
    /// The most extra delay added to `delay`, drawn uniformly per packet.
    pub jitter: Duration,
    /// Probability that a packet is lost, in `0..=1`.
    pub loss: f64,
    /// The bottleneck buffer in bytes: packets waiting for or in serialisation. Only matters
    /// with a rate.
    pub queue_bytes: usize,
    /// `[start, end)` windows, relative to the link's start, during which the link is down.
    /// Overlapping windows are merged; the order does not matter.
    pub outages: Vec<(Duration, Duration)>,
    /// Seed of the loss and jitter draws: the same seed and the same packets give the same
    /// decisions.
    pub seed: u64,
    /// Let jitter reorder packets (a later packet with less jitter arrives first).
    pub reorder: bool,
}

impl Default for LinkConfig {
    /// A perfect link: no rate limit, no delay, no loss, no outage.
    fn default() -> Self {
        Self {
            rate_bps: None,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            outages: Vec::new(),
            seed: 0,
            reorder: false,
        }
    }
}

impl LinkConfig {
    /// A typical village link: 2 Mbit/s, 150 ms one way, up to 20 ms jitter, 1 % loss.
    pub fn village() -> Self {
        Self {
            rate_bps: Some(2_000_000),
            delay: Duration::from_millis(150),
            jitter: Duration::from_millis(20),
            loss: 0.01,
            ..Self::default()
        }
    }

    /// Checks every field against its limits. The first bad field is reported.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(rate) = self.rate_bps {
            if rate < MIN_RATE_BPS {
                return Err(ConfigError::new(
                    "rate_bps",
                    format!("Some({rate})"),
                    "a rate must be at least 8 bit/s (use None for no limit)",
                ));
            }
        }
        if self.delay > MAX_DELAY {
            return Err(ConfigError::new(
                "delay",
                format!("{:?}", self.delay),
                "the delay must be at most 60 s",
            ));
        }
        if self.jitter > MAX_DELAY {
            return Err(ConfigError::new(
                "jitter",
                format!("{:?}", self.jitter),
                "the jitter must be at most 60 s",
            ));
        }
        if !(self.loss.is_finite() && (0.0..=1.0).contains(&self.loss)) {
            return Err(ConfigError::new(
                "loss",
                format!("{}", self.loss),
                "the loss must be a probability from 0 (no loss) to 1 (everything lost)",
            ));
        }
        if !(MIN_QUEUE_BYTES..=MAX_QUEUE_BYTES).contains(&self.queue_bytes) {
            return Err(ConfigError::new(
                "queue_bytes",
                self.queue_bytes.to_string(),
                "the queue must hold from 1500 bytes (one full-size packet) to 64 MiB",
            ));
        }
        validate_outages(&self.outages)
    }
}

/// Checks outage windows: at most [`MAX_OUTAGES`], each with `start < end`.
pub(crate) fn validate_outages(outages: &[(Duration, Duration)]) -> Result<(), ConfigError> {
    if outages.len() > MAX_OUTAGES {
        return Err(ConfigError::new(
            "outages",
            format!("{} windows", outages.len()),
            "at most 1024 outage windows are allowed",
        ));
    }
    for (i, (start, end)) in outages.iter().enumerate() {
        if start >= end {
            return Err(ConfigError::new(
                format!("outages[{i}]"),
                format!("{start:?}..{end:?}"),
                "an outage window [start, end) must end after it starts",
            ));
        }
    }
    Ok(())
}

/// Which way a packet goes through the emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client (a station) to the upstream (a relay or origin).
    Uplink,
    /// From the upstream back to the client.
    Downlink,
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Uplink => "uplink",
            Self::Downlink => "downlink",
        })
    }
}

/// Both directions of a link.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DuplexConfig {
    /// Client → upstream.
    pub uplink: LinkConfig,
    /// Upstream → client.
    pub downlink: LinkConfig,
}

impl DuplexConfig {
    /// The same link both ways. The downlink keeps `config.seed`; the uplink gets a seed
    /// derived from it, so the two directions lose different packets.
    pub fn symmetric(config: LinkConfig) -> Self {
        let uplink = LinkConfig {
            seed: derive_seed(config.seed),
            ..config.clone()
        };
        Self {
            uplink,
            downlink: config,
        }
    }

    /// Checks both directions; the error says which one is wrong.
    pub fn validate(&self) -> Result<(), (Direction, ConfigError)> {
        self.uplink.validate().map_err(|e| (Direction::Uplink, e))?;
        self.downlink.validate().map_err(|e| (Direction::Downlink, e))
    }
}

/// SplitMix64's finaliser: a fixed, well-mixed function of the seed.
fn derive_seed(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn defaults_and_village_are_valid() {
        LinkConfig::default().validate().unwrap();
        LinkConfig::village().validate().unwrap();
        DuplexConfig::symmetric(LinkConfig::village()).validate().unwrap();
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(LinkConfig, &str)> = vec![
            (
                LinkConfig {
                    rate_bps: Some(0),
                    ..LinkConfig::default()
                },
                "rate_bps",
            ),
            (
                LinkConfig {
                    delay: Duration::from_secs(61),
                    ..LinkConfig::default()
                },
                "delay",
            ),
            (
                LinkConfig {
                    jitter: Duration::from_secs(61),
                    ..LinkConfig::default()
                },
                "jitter",
            ),
            (
                LinkConfig {
                    loss: 1.5,
                    ..LinkConfig::default()
                },
                "loss",
            ),
            (
                LinkConfig {
                    loss: -0.1,
                    ..LinkConfig::default()
                },
                "loss",
            ),
            (
                LinkConfig {
                    loss: f64::NAN,
                    ..LinkConfig::default()
                },
                "loss",
            ),
            (
                LinkConfig {
                    queue_bytes: 100,
                    ..LinkConfig::default()
                },
                "queue_bytes",
            ),
            (
                LinkConfig {
                    queue_bytes: MAX_QUEUE_BYTES + 1,
                    ..LinkConfig::default()
                },
                "queue_bytes",
            ),
            (
                LinkConfig {
                    outages: vec![(ms(10), ms(20)), (ms(30), ms(30))],
                    ..LinkConfig::default()
                },
                "outages[1]",
            ),
            (
                LinkConfig {
                    outages: vec![(ms(1), ms(2)); MAX_OUTAGES + 1],
                    ..LinkConfig::default()
                },
                "outages",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err();
            assert_eq!(err.field, field, "{config:?}");
            let message = err.to_string();
            assert!(message.contains(&format!("`{field}`")), "{message}");
            assert!(message.contains(err.allowed), "{message}");
        }
    }

    #[test]
    fn loss_message_says_what_is_allowed() {
        let err = LinkConfig {
            loss: 2.0,
            ..LinkConfig::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid link config: `loss` is 2; the loss must be a probability from 0 (no loss) to 1 (everything lost)"
        );
    }

    #[test]
    fn duplex_validation_names_the_direction() {
        let config = DuplexConfig {
            uplink: LinkConfig::default(),
            downlink: LinkConfig {
                loss: 7.0,
                ..LinkConfig::default()
            },
        };
        let (direction, err) = config.validate().unwrap_err();
        assert_eq!(direction, Direction::Downlink);
        assert_eq!(err.field, "loss");
    }

    #[test]
    fn symmetric_links_differ_only_in_seed() {
        let duplex = DuplexConfig::symmetric(LinkConfig {
            seed: 42,
            ..LinkConfig::village()
        });
        assert_eq!(duplex.downlink.seed, 42);
        assert_ne!(duplex.uplink.seed, 42);
        assert_eq!(
            LinkConfig {
                seed: 42,
                ..duplex.uplink.clone()
            },
            duplex.downlink
        );
        // Fixed for a seed.
        assert_eq!(DuplexConfig::symmetric(duplex.downlink.clone()), duplex);
    }
}

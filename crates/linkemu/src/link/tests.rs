use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn link(config: LinkConfig) -> Link {
    Link::new(config).unwrap()
}

fn deliver(decision: Decision) -> Scheduled {
    match decision {
        Decision::Deliver(s) => s,
        Decision::Drop(reason) => panic!("expected delivery, got a drop ({reason:?})"),
    }
}

#[test]
fn perfect_link_delivers_at_once() {
    let mut l = link(LinkConfig::default());
    let s = deliver(l.offer(ms(7), 1200));
    assert_eq!(s.at(), ms(7));
    assert_eq!(s.len(), 1200);
    assert!(l.confirm(&s));
    let stats = l.stats();
    assert_eq!((stats.offered, stats.accepted, stats.delivered_packets), (1, 1, 1));
    assert_eq!(stats.delivered_bytes, 1200);
}

#[test]
fn delay_is_added() {
    let mut l = link(LinkConfig {
        delay: ms(150),
        ..LinkConfig::default()
    });
    assert_eq!(deliver(l.offer(ms(10), 100)).at(), ms(160));
}

#[test]
fn packets_are_serialised_one_after_another() {
    // 1000 bytes at 8000 bit/s take one second each.
    let mut l = link(LinkConfig {
        rate_bps: Some(8000),
        delay: ms(100),
        queue_bytes: 10_000,
        ..LinkConfig::default()
    });
    assert_eq!(deliver(l.offer(ms(0), 1000)).at(), ms(1100));
    assert_eq!(deliver(l.offer(ms(0), 1000)).at(), ms(2100));
    assert_eq!(l.backlog_bytes(ms(0)), 2000);
    assert_eq!(l.backlog_bytes(ms(1500)), 500);
    // The serialiser is idle again after two seconds.
    assert_eq!(deliver(l.offer(ms(5000), 500)).at(), ms(5600));
}

#[test]
fn a_full_queue_tail_drops() {
    let mut l = link(LinkConfig {
        rate_bps: Some(8000),
        queue_bytes: 2000,
        ..LinkConfig::default()
    });
    deliver(l.offer(ms(0), 1000));
    deliver(l.offer(ms(0), 1000));
    assert_eq!(l.offer(ms(0), 1000), Decision::Drop(DropReason::QueueFull));
    assert_eq!(l.offer(ms(0), 1), Decision::Drop(DropReason::QueueFull));
    assert_eq!(l.stats().dropped_queue, 2);
    // Half a second later 500 bytes have drained.
    deliver(l.offer(ms(500), 500));
    assert_eq!(l.offer(ms(500), 1), Decision::Drop(DropReason::QueueFull));
}

#[test]
fn a_packet_larger_than_the_queue_never_fits() {
    let mut l = link(LinkConfig {
        rate_bps: Some(1_000_000),
        queue_bytes: MIN_QUEUE_BYTES,
        ..LinkConfig::default()
    });
    assert_eq!(
        l.offer(ms(0), MIN_QUEUE_BYTES + 1),
        Decision::Drop(DropReason::QueueFull)
    );
    deliver(l.offer(ms(0), MIN_QUEUE_BYTES));
}

#[test]
fn without_a_rate_nothing_queues() {
    let mut l = link(LinkConfig {
        queue_bytes: MIN_QUEUE_BYTES,
        ..LinkConfig::default()
    });
    for _ in 0..100 {
        deliver(l.offer(ms(0), 60_000));
    }
    assert_eq!(l.backlog_bytes(ms(0)), 0);
}

#[test]
fn loss_zero_and_one() {
    let mut never = link(LinkConfig::default());
    let mut always = link(LinkConfig {
        loss: 1.0,
        ..LinkConfig::default()
    });
    for i in 0..1000 {
        deliver(never.offer(ms(i), 100));
        assert_eq!(always.offer(ms(i), 100), Decision::Drop(DropReason::Loss));
    }
}

/// The share of `n` packets lost with `loss` and `seed`.
fn lost_share(loss: f64, seed: u64, n: u64) -> f64 {
    let mut l = link(LinkConfig {
        loss,
        seed,
        ..LinkConfig::default()
    });
    for i in 0..n {
        l.offer(Duration::from_micros(i), 1000);
    }
    assert_eq!(l.stats().offered, n);
    l.stats().dropped_loss as f64 / n as f64
}

#[test]
fn loss_share_is_close_to_the_configured_probability() {
    let n = 40_000;
    for seed in [1, 0xC0FFEE] {
        for p in [0.01, 0.1, 0.5, 0.9] {
            let share = lost_share(p, seed, n);
            // Five standard deviations of a binomial share.
            let bound = 5.0 * (p * (1.0 - p) / n as f64).sqrt();
            assert!(
                (share - p).abs() <= bound,
                "seed {seed}, p {p}: lost {share}, bound {bound}"
            );
        }
    }
}

#[test]
fn the_same_seed_loses_the_same_packets_whatever_the_timing() {
    let lost = |config: LinkConfig| -> Vec<bool> {
        let mut l = link(config);
        (0..2000)
            .map(|i| l.offer(ms(i), 500) == Decision::Drop(DropReason::Loss))
            .collect()
    };
    let base = LinkConfig {
        loss: 0.2,
        seed: 99,
        ..LinkConfig::default()
    };
    let a = lost(base.clone());
    let b = lost(LinkConfig {
        rate_bps: Some(1_000_000),
        delay: ms(150),
        jitter: ms(30),
        ..base.clone()
    });
    let c = lost(LinkConfig { seed: 100, ..base });
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn jitter_stays_within_delay_plus_jitter() {
    let mut l = link(LinkConfig {
        delay: ms(100),
        jitter: ms(50),
        reorder: true,
        seed: 3,
        ..LinkConfig::default()
    });
    let mut spread = Vec::new();
    for i in 0..1000 {
        let now = ms(i * 10);
        let at = deliver(l.offer(now, 100)).at();
        assert!(at >= now + ms(100) && at <= now + ms(150), "{at:?} for {now:?}");
        spread.push(at - now);
    }
    let min = spread.iter().min().unwrap();
    let max = spread.iter().max().unwrap();
    assert!(*max - *min > ms(40), "jitter is used: {min:?}..{max:?}");
}

#[test]
fn jitter_reorders_only_when_allowed() {
    let arrivals = |reorder: bool| -> Vec<Duration> {
        let mut l = link(LinkConfig {
            delay: ms(50),
            jitter: ms(50),
            reorder,
            seed: 5,
            ..LinkConfig::default()
        });
        (0..500).map(|i| deliver(l.offer(ms(i), 100)).at()).collect()
    };
    let ordered = arrivals(false);
    assert!(ordered.windows(2).all(|w| w[0] <= w[1]));
    let reordered = arrivals(true);
    assert!(reordered.windows(2).any(|w| w[0] > w[1]));
}

#[test]
fn scheduled_outage_drops_arrivals_and_packets_on_the_line() {
    let mut l = link(LinkConfig {
        delay: ms(30),
        outages: vec![(ms(100), ms(200))],
        ..LinkConfig::default()
    });
    assert_eq!(deliver(l.offer(ms(69), 10)).at(), ms(99));
    // Would arrive at 100: on the line when it goes down.
    assert_eq!(l.offer(ms(70), 10), Decision::Drop(DropReason::Outage));
    assert_eq!(l.offer(ms(150), 10), Decision::Drop(DropReason::Outage));
    assert_eq!(l.offer(ms(199), 10), Decision::Drop(DropReason::Outage));
    assert!(l.is_down(ms(199)));
    assert!(!l.is_down(ms(200)));
    assert_eq!(deliver(l.offer(ms(200), 10)).at(), ms(230));
    assert_eq!(l.stats().dropped_outage, 3);
}

#[test]
fn manual_cut_loses_packets_on_the_line_and_restore_resumes() {
    let mut l = link(LinkConfig {
        delay: ms(50),
        ..LinkConfig::default()
    });
    let early = deliver(l.offer(ms(0), 10)); // due at 50
    let late = deliver(l.offer(ms(40), 10)); // due at 90
    l.cut(ms(60));
    assert!(l.is_cut() && l.is_down(ms(60)));
    assert_eq!(l.offer(ms(70), 10), Decision::Drop(DropReason::Outage));
    // Due before the cut, confirmed late: delivered. Still on the line at the cut: lost.
    assert!(l.confirm(&early));
    assert!(!l.confirm(&late));
    l.restore(ms(100));
    assert!(!l.is_down(ms(100)));
    let after = deliver(l.offer(ms(100), 10));
    assert_eq!(after.at(), ms(150));
    assert!(l.confirm(&after));
    let stats = l.stats();
    assert_eq!(stats.delivered_packets, 2);
    assert_eq!(stats.dropped_outage, 2);
}

#[test]
fn cut_empties_the_queue() {
    let mut l = link(LinkConfig {
        rate_bps: Some(8000),
        queue_bytes: 2000,
        ..LinkConfig::default()
    });
    deliver(l.offer(ms(0), 1000));
    deliver(l.offer(ms(0), 1000));
    l.cut(ms(10));
    assert_eq!(l.backlog_bytes(ms(10)), 0);
    l.restore(ms(20));
    assert_eq!(deliver(l.offer(ms(20), 1000)).at(), ms(1020));
}

#[test]
fn cutting_twice_is_one_cut() {
    let mut l = link(LinkConfig {
        delay: ms(50),
        ..LinkConfig::default()
    });
    let early = deliver(l.offer(ms(0), 10));
    l.cut(ms(60));
    l.cut(ms(70));
    l.restore(ms(80));
    assert!(l.confirm(&early));
}

#[test]
fn time_never_goes_back() {
    let mut l = link(LinkConfig {
        delay: ms(10),
        ..LinkConfig::default()
    });
    deliver(l.offer(ms(100), 10));
    assert_eq!(deliver(l.offer(ms(50), 10)).at(), ms(110));
}

#[test]
fn invalid_config_is_refused() {
    let err = Link::new(LinkConfig {
        rate_bps: Some(0),
        ..LinkConfig::default()
    })
    .unwrap_err();
    assert_eq!(err.field, "rate_bps");
}

// ---- properties ----

/// One step of a scenario: time passes, then something happens.
#[derive(Debug, Clone)]
enum Op {
    Offer { gap_us: u64, len: usize },
    Cut { gap_us: u64 },
    Restore { gap_us: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        20 => (0u64..20_000, 0usize..3000).prop_map(|(gap_us, len)| Op::Offer { gap_us, len }),
        1 => (0u64..50_000).prop_map(|gap_us| Op::Cut { gap_us }),
        1 => (0u64..50_000).prop_map(|gap_us| Op::Restore { gap_us }),
    ]
}

fn offers_only() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec((0u64..20_000, 0usize..3000), 1..200)
        .prop_map(|v| v.into_iter().map(|(gap_us, len)| Op::Offer { gap_us, len }).collect())
}

fn config() -> impl Strategy<Value = LinkConfig> {
    (
        prop::option::of(8_000u64..50_000_000),
        0u64..200,
        0u64..100,
        prop_oneof![Just(0.0), 0.0..1.0f64],
        MIN_QUEUE_BYTES..200_000,
        prop::collection::vec((0u64..3000, 1u64..300), 0..4),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(
            |(rate_bps, delay, jitter, loss, queue_bytes, outages, seed, reorder)| LinkConfig {
                rate_bps,
                delay: ms(delay),
                jitter: ms(jitter),
                loss,
                queue_bytes,
                outages: outages.into_iter().map(|(s, len)| (ms(s), ms(s + len))).collect(),
                seed,
                reorder,
            },
        )
}

/// A delivered packet: when it was offered, when it arrived, its length, its offer index.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Delivered {
    offered: Duration,
    at: Duration,
    len: usize,
    index: usize,
}

/// Everything a scenario produced.
#[derive(Debug, Default, PartialEq)]
struct Run {
    decisions: Vec<Decision>,
    delivered: Vec<Delivered>,
    /// Manual cut periods, `[cut, restore)` (the last one may never end).
    cuts: Vec<(Duration, Duration)>,
}

/// Plays `ops` against a link the way the proxy does: before each step, the packets due before
/// it are confirmed in arrival order; at the end everything left is confirmed.
fn play(config: &LinkConfig, ops: &[Op]) -> Run {
    let mut l = link(config.clone());
    let mut run = Run::default();
    let mut now = Duration::ZERO;
    let mut pending: Vec<(Scheduled, Duration, usize)> = Vec::new();
    let mut cut_since: Option<Duration> = None;

    fn confirm_due(l: &mut Link, pending: &mut Vec<(Scheduled, Duration, usize)>, run: &mut Run, before: Duration) {
        pending.sort_by_key(|(s, _, index)| (s.at(), *index));
        let due = pending.iter().take_while(|(s, _, _)| s.at() < before).count();
        for (s, offered, index) in pending.drain(..due) {
            if l.confirm(&s) {
                run.delivered.push(Delivered {
                    offered,
                    at: s.at(),
                    len: s.len(),
                    index,
                });
            }
        }
    }

    for op in ops {
        let gap = match op {
            Op::Offer { gap_us, .. } | Op::Cut { gap_us } | Op::Restore { gap_us } => *gap_us,
        };
        now += Duration::from_micros(gap);
        confirm_due(&mut l, &mut pending, &mut run, now);
        match *op {
            Op::Offer { len, .. } => {
                let decision = l.offer(now, len);
                if let Decision::Deliver(s) = decision {
                    pending.push((s, now, run.decisions.len()));
                }
                run.decisions.push(decision);
            }
            Op::Cut { .. } => {
                if cut_since.is_none() {
                    cut_since = Some(now);
                }
                l.cut(now);
            }
            Op::Restore { .. } => {
                if let Some(start) = cut_since.take() {
                    run.cuts.push((start, now));
                }
                l.restore(now);
            }
        }
    }
    if let Some(start) = cut_since {
        run.cuts.push((start, Duration::MAX));
    }
    confirm_due(&mut l, &mut pending, &mut run, Duration::MAX);
    let stats = l.stats();
    assert_eq!(
        stats.offered,
        stats.accepted
            + stats.dropped_loss
            + stats.dropped_queue
            + (stats.dropped_outage - (stats.accepted - stats.delivered_packets))
    );
    assert_eq!(stats.delivered_packets, run.delivered.len() as u64);
    run
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Over any interval between two arrivals, the bytes arriving in it are at most what the
    /// rate carries in it plus one packet (jitter off: with jitter, packets bunch).
    #[test]
    fn delivered_bytes_never_exceed_the_rate(
        config in config().prop_filter("needs a rate", |c| c.rate_bps.is_some()),
        ops in offers_only(),
    ) {
        let config = LinkConfig { jitter: Duration::ZERO, ..config };
        let rate = u128::from(config.rate_bps.unwrap());
        let mut delivered = play(&config, &ops).delivered;
        delivered.sort_by_key(|d| (d.at, d.index));
        for i in 0..delivered.len() {
            let mut bytes: u128 = 0;
            for j in i..delivered.len() {
                bytes += delivered[j].len as u128;
                let window = (delivered[j].at - delivered[i].at).as_nanos();
                // bytes × 8 × 10⁹ ≤ rate × window + (first packet) × 8 × 10⁹ + rate (rounding)
                let allowed = rate * window + delivered[i].len as u128 * 8 * NANOS_PER_SEC + rate;
                prop_assert!(
                    bytes * 8 * NANOS_PER_SEC <= allowed,
                    "{} bytes between {:?} and {:?} at {} bit/s", bytes, delivered[i].at, delivered[j].at, rate
                );
            }
        }
    }

    /// Nothing is delivered whose time on the link meets a scheduled outage or a manual cut.
    #[test]
    fn nothing_is_delivered_through_an_outage(
        config in config(),
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let schedule = OutageSchedule::new(&config.outages).unwrap();
        let run = play(&config, &ops);
        for d in &run.delivered {
            prop_assert!(!schedule.overlaps(d.offered, d.at), "{:?} crosses {:?}", d, schedule.windows());
            for &(cut, restore) in &run.cuts {
                prop_assert!(d.at < cut || d.offered >= restore, "{:?} crosses the cut {:?}..{:?}", d, cut, restore);
            }
        }
    }

    /// Unless reordering is allowed, packets arrive in the order they were offered.
    #[test]
    fn arrivals_keep_order_without_reorder(
        config in config(),
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let config = LinkConfig { reorder: false, ..config };
        let mut delivered = play(&config, &ops).delivered;
        delivered.sort_by_key(|d| d.index);
        prop_assert!(delivered.windows(2).all(|w| w[0].at <= w[1].at), "{:?}", delivered);
    }

    /// Without a rate and with reordering allowed, every packet arrives between `delay` and
    /// `delay + jitter` after its offer.
    #[test]
    fn arrivals_respect_delay_and_jitter(
        config in config().prop_map(|c| LinkConfig { reorder: true, rate_bps: None, ..c }),
        ops in offers_only(),
    ) {
        for d in play(&config, &ops).delivered {
            prop_assert!(d.at >= d.offered + config.delay);
            prop_assert!(d.at <= d.offered + config.delay + config.jitter);
        }
    }

    /// The queue never holds more than `queue_bytes`, and only a full queue tail-drops.
    #[test]
    fn queue_is_bounded(
        config in config().prop_filter("needs a rate", |c| c.rate_bps.is_some()),
        ops in offers_only(),
    ) {
        let mut l = link(config.clone());
        let mut now = Duration::ZERO;
        for op in ops {
            let Op::Offer { gap_us, len } = op else { unreachable!() };
            now += Duration::from_micros(gap_us);
            let before = l.backlog_bytes(now);
            let decision = l.offer(now, len);
            let after = l.backlog_bytes(now);
            // One byte of slack: serialisation times are rounded up to the nanosecond.
            prop_assert!(after <= config.queue_bytes as u64 + 1, "backlog {} > {}", after, config.queue_bytes);
            match decision {
                Decision::Drop(DropReason::QueueFull) => {
                    prop_assert!(before + len as u64 > config.queue_bytes as u64);
                }
                Decision::Deliver(_) => prop_assert!(after >= before + len as u64),
                Decision::Drop(_) => prop_assert_eq!(after, before),
            }
        }
    }

    /// The same config and the same packets give the same decisions.
    #[test]
    fn decisions_are_deterministic_for_a_seed(
        config in config(),
        ops in prop::collection::vec(op(), 1..100),
    ) {
        prop_assert_eq!(play(&config, &ops), play(&config, &ops));
    }
}

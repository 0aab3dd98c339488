//! The proxy with real UDP sockets on 127.0.0.1: an echo server behind it, clients in front.
//!
//! Timing assertions are lower bounds the model implies ("not earlier than the delay", "not
//! more bytes than the rate allows since the first send"). Deadlines only stop a broken test
//! from hanging; a slow machine can make a test slower, never make it fail.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use courseway_linkemu::{
    Decision, Direction, DropReason, DuplexConfig, Link, LinkConfig, ProxyConfig, ProxyError, UdpProxy,
};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// How long a test waits for something that must happen before it gives up.
const DEADLINE: Duration = Duration::from_secs(10);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// An echo server on 127.0.0.1: sends every datagram back to where it came from.
async fn echo_server() -> (SocketAddr, JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        loop {
            let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            let _ = socket.send_to(&buf[..len], from).await;
        }
    });
    (addr, task)
}

async fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

async fn recv_within(socket: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65_535];
    match tokio::time::timeout(wait, socket.recv(&mut buf)).await {
        Ok(Ok(len)) => Some(buf[..len].to_vec()),
        Ok(Err(e)) => panic!("recv failed: {e}"),
        Err(_) => None,
    }
}

/// Sends `payload` through the proxy and waits for the echo.
async fn ping(socket: &UdpSocket, proxy: SocketAddr, payload: &[u8]) -> Vec<u8> {
    socket.send_to(payload, proxy).await.unwrap();
    recv_within(socket, DEADLINE)
        .await
        .expect("an echo within the deadline")
}

/// Waits until `condition` holds; panics after [`DEADLINE`].
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        tokio::time::sleep(ms(2)).await;
    }
}

#[tokio::test]
async fn forwards_both_ways_on_a_perfect_link() {
    init_tracing();
    let (echo, _echo) = echo_server().await;
    let proxy = UdpProxy::start(echo, ProxyConfig::default()).await.unwrap();
    assert!(proxy.local_addr().ip().is_loopback());
    assert_eq!(proxy.upstream(), echo);

    let socket = client().await;
    assert_eq!(ping(&socket, proxy.local_addr(), b"hello").await, b"hello");
    assert_eq!(ping(&socket, proxy.local_addr(), b"").await, b"");

    let stats = proxy.stats();
    assert_eq!(stats.clients, 1);
    assert_eq!(stats.uplink.forwarded_packets, 2);
    assert_eq!(stats.uplink.forwarded_bytes, 5);
    assert_eq!(stats.downlink.forwarded_packets, 2);
    assert_eq!(stats.downlink.forwarded_bytes, 5);
    proxy.close().await;
}

#[tokio::test]
async fn delay_is_applied_both_ways() {
    init_tracing();
    let (echo, _echo) = echo_server().await;
    let config = ProxyConfig::new(DuplexConfig {
        uplink: LinkConfig {
            delay: ms(30),
            ..LinkConfig::default()
        },
        downlink: LinkConfig {
            delay: ms(50),
            jitter: ms(10),
            ..LinkConfig::default()
        },
    });
    let proxy = UdpProxy::start(echo, config).await.unwrap();
    let socket = client().await;
    for i in 0..5u8 {
        let sent = Instant::now();
        assert_eq!(ping(&socket, proxy.local_addr(), &[i]).await, [i]);
        let rtt = sent.elapsed();
        assert!(
            rtt >= ms(80),
            "round trip {rtt:?} is shorter than the 30 + 50 ms configured"
        );
    }
    proxy.close().await;
}

#[tokio::test]
async fn loss_drops_exactly_the_packets_the_seed_says() {
    init_tracing();
    let (echo, _echo) = echo_server().await;
    let uplink = LinkConfig {
        loss: 0.25,
        seed: 11,
        ..LinkConfig::default()
    };
    let n: u32 = 400;
    // The pure model with the same seed says which of n packets are lost.
    let mut model = Link::new(uplink.clone()).unwrap();
    let expected: BTreeSet<u32> = (0..n)
        .filter(|_| model.offer(Duration::ZERO, 4) != Decision::Drop(DropReason::Loss))
        .collect();
    let lost = n - expected.len() as u32;
    let p = 0.25;
    let bound = 5.0 * (p * (1.0 - p) * f64::from(n)).sqrt();
    assert!(
        (f64::from(lost) - p * f64::from(n)).abs() <= bound,
        "{lost} of {n} lost"
    );

    let proxy = UdpProxy::start(
        echo,
        ProxyConfig::new(DuplexConfig {
            uplink,
            downlink: LinkConfig::default(),
        }),
    )
    .await
    .unwrap();
    let socket = std::sync::Arc::new(client().await);
    let receiver = {
        let socket = socket.clone();
        let want = expected.len();
        tokio::spawn(async move {
            let mut got = BTreeSet::new();
            while got.len() < want {
                let Some(bytes) = recv_within(&socket, DEADLINE).await else {
                    break;
                };
                got.insert(u32::from_be_bytes(bytes[..4].try_into().unwrap()));
            }
            got
        })
    };
    for i in 0..n {
        socket.send_to(&i.to_be_bytes(), proxy.local_addr()).await.unwrap();
        if i % 20 == 19 {
            // Pace a little so that no socket buffer overflows on the way.
            tokio::time::sleep(ms(1)).await;
        }
    }
    let handle = proxy.handle();
    eventually("every packet is offered", || {
        handle.stats().uplink.offered == u64::from(n)
    })
    .await;
    let stats = proxy.stats();
    assert_eq!(stats.uplink.dropped_loss, u64::from(lost));
    assert_eq!(stats.uplink.dropped_outage + stats.uplink.dropped_queue, 0);
    let got = receiver.await.unwrap();
    assert_eq!(got, expected, "the echoed packets are exactly those the model kept");
    proxy.close().await;
}

#[tokio::test]
async fn cut_stops_all_traffic_and_restore_resumes_it() {
    init_tracing();
    let (echo, _echo) = echo_server().await;
    let proxy = UdpProxy::start(
        echo,
        ProxyConfig::symmetric(LinkConfig {
            delay: ms(20),
            ..LinkConfig::default()
        }),
    )
    .await
    .unwrap();
    let socket = client().await;
    assert_eq!(ping(&socket, proxy.local_addr(), b"before").await, b"before");

    proxy.cut();
    assert!(proxy.is_cut());
    assert!(!proxy.handle().is_up());
    for i in 0..10u8 {
        socket.send_to(&[i], proxy.local_addr()).await.unwrap();
    }
    let handle = proxy.handle();
    eventually("the packets sent during the cut are offered", || {
        handle.stats().uplink.offered == 11
    })
    .await;
    assert_eq!(proxy.stats().uplink.dropped_outage, 10);
    assert_eq!(recv_within(&socket, ms(150)).await, None, "nothing passes a cut link");

    proxy.restore();
    assert!(!proxy.is_cut());
    assert_eq!(ping(&socket, proxy.local_addr(), b"after").await, b"after");
    let stats = proxy.stats();
    assert_eq!(stats.uplink.forwarded_packets, 2);
    assert_eq!(stats.downlink.forwarded_packets, 2);
    proxy.close().await;
}

#[tokio::test]
async fn a_cut_loses_the_packets_on_the_line() {
    init_tracing();
    let (echo, _echo) = echo_server().await;
    let proxy = UdpProxy::start(
        echo,
        ProxyConfig::symmetric(LinkConfig {
            delay: ms(50),
            ..LinkConfig::default()
        }),
    )
    .await
    .unwrap();
    let socket = client().await;
    let sent = Instant::now();
    socket.send_to(b"in flight", proxy.local_addr()).await.unwrap();
    proxy.cut();
    // Whether the packet was lost on the way up or its echo on the way down, nothing returns
    // as long as the cut came before a whole round trip (100 ms) could have happened.
    let cut_in_time = sent.elapsed() < ms(100);
    tokio::time::sleep(ms(150)).await;
    proxy.restore();
    if cut_in_time {
        assert_eq!(recv_within(&socket, ms(100)).await, None);
        let stats = proxy.stats();
        assert_eq!(
            stats.uplink.dropped_outage + stats.downlink.dropped_outage,
            1,
            "{stats:?}"
        );
    }
    assert_eq!(ping(&socket, proxy.local_addr(), b"again").await, b"again");
    proxy.close().await;
}

#[tokio::test]
async fn scheduled_outage_drops_then_recovers() {
    init_tracing();
    let (echo, _echo) = echo_server().await;
    let proxy = UdpProxy::start(
        echo,
        ProxyConfig::symmetric(LinkConfig {
            outages: vec![(Duration::ZERO, ms(300))],
            ..LinkConfig::default()
        }),
    )
    .await
    .unwrap();
    let handle = proxy.handle();
    let socket = client().await;
    socket.send_to(b"too early", proxy.local_addr()).await.unwrap();
    eventually("the first packet is offered", || handle.stats().uplink.offered == 1).await;
    // The only window starts at zero: if the link is still down, it was down at the offer.
    if !handle.is_up() {
        assert_eq!(handle.stats().uplink.dropped_outage, 1);
    }
    eventually("the outage is over", || handle.is_up()).await;
    assert!(handle.elapsed() >= ms(300));
    assert_eq!(ping(&socket, proxy.local_addr(), b"later").await, b"later");
    proxy.close().await;
}

#[tokio::test]
async fn rate_limit_caps_bytes_delivered() {
    init_tracing();
    let (echo, _echo) = echo_server().await;
    // 800 kbit/s = 100 000 B/s on the way back; 40 × 1000 B fit the 64 KiB queue.
    let rate_bytes_per_sec = 100_000.0;
    let proxy = UdpProxy::start(
        echo,
        ProxyConfig::new(DuplexConfig {
            uplink: LinkConfig::default(),
            downlink: LinkConfig {
                rate_bps: Some(800_000),
                queue_bytes: 64 * 1024,
                ..LinkConfig::default()
            },
        }),
    )
    .await
    .unwrap();
    let socket = client().await;
    let n = 40;
    let first_send = Instant::now();
    for i in 0..n {
        socket.send_to(&[i; 1000], proxy.local_addr()).await.unwrap();
    }
    let mut received = 0.0;
    for _ in 0..n {
        let bytes = recv_within(&socket, DEADLINE)
            .await
            .expect("every packet fits the queue");
        received += bytes.len() as f64;
        // Serialisation starts no earlier than the first send, and nothing is sent before the
        // model's time: so by now at most rate × elapsed bytes can have arrived.
        let allowed = rate_bytes_per_sec * first_send.elapsed().as_secs_f64();
        assert!(
            received <= allowed + 1000.0,
            "{received} bytes arrived within {:?}; the rate allows {allowed}",
            first_send.elapsed()
        );
    }
    let stats = proxy.stats();
    assert_eq!(stats.downlink.forwarded_packets, u64::from(n));
    assert_eq!(stats.downlink.dropped_queue, 0);
    proxy.close().await;
}

#[tokio::test]
async fn a_full_queue_tail_drops() {
    init_tracing();
    let (echo, _echo) = echo_server().await;
    // 1000 B/s with room for three packets: a burst of 200 mostly overflows.
    let proxy = UdpProxy::start(
        echo,
        ProxyConfig::new(DuplexConfig {
            uplink: LinkConfig {
                rate_bps: Some(8000),
                queue_bytes: 3000,
                ..LinkConfig::default()
            },
            downlink: LinkConfig::default(),
        }),
    )
    .await
    .unwrap();
    let socket = client().await;
    let n = 200u64;
    for i in 0..n {
        socket.send_to(&[i as u8; 1000], proxy.local_addr()).await.unwrap();
        if i % 20 == 19 {
            tokio::time::sleep(ms(1)).await;
        }
    }
    let handle = proxy.handle();
    eventually("every packet is offered", || handle.stats().uplink.offered == n).await;
    let stats = handle.stats();
    let accepted = n - stats.uplink.dropped_queue;
    // The queue holds three, and the link drains one per second.
    let most = 3 + handle.elapsed().as_secs() + 1;
    assert!(stats.uplink.dropped_queue > 0);
    assert!(accepted <= most, "{accepted} accepted, at most {most} fit");
    proxy.close().await;
}

#[tokio::test]
async fn many_stations_share_one_proxy() {
    init_tracing();
    let (echo, _echo) = echo_server().await;
    let proxy = UdpProxy::start(
        echo,
        ProxyConfig::symmetric(LinkConfig {
            delay: ms(20),
            ..LinkConfig::default()
        }),
    )
    .await
    .unwrap();
    let mut stations = Vec::new();
    for _ in 0..5 {
        stations.push(client().await);
    }
    for round in 0..3u8 {
        for (i, station) in stations.iter().enumerate() {
            station.send_to(&[i as u8, round], proxy.local_addr()).await.unwrap();
        }
        for (i, station) in stations.iter().enumerate() {
            let got = recv_within(station, DEADLINE).await.expect("an echo");
            assert_eq!(got, [i as u8, round], "each station gets its own replies");
        }
    }
    assert_eq!(proxy.stats().clients, 5);
    assert_eq!(proxy.stats().downlink.forwarded_packets, 15);
    proxy.close().await;
}

#[tokio::test]
async fn one_proxy_per_station_gives_each_its_own_link() {
    init_tracing();
    let (echo, _echo) = echo_server().await;
    let fast = UdpProxy::start(echo, ProxyConfig::default()).await.unwrap();
    let slow = UdpProxy::start(
        echo,
        ProxyConfig::symmetric(LinkConfig {
            delay: ms(40),
            ..LinkConfig::default()
        }),
    )
    .await
    .unwrap();
    let a = client().await;
    let b = client().await;
    slow.cut();
    assert_eq!(ping(&a, fast.local_addr(), b"a").await, b"a");
    b.send_to(b"b", slow.local_addr()).await.unwrap();
    assert_eq!(recv_within(&b, ms(150)).await, None, "the slow station's link is cut");
    slow.restore();
    let sent = Instant::now();
    assert_eq!(ping(&b, slow.local_addr(), b"b").await, b"b");
    assert!(sent.elapsed() >= ms(80));
    assert_eq!(fast.stats().uplink.dropped_outage, 0);
    fast.close().await;
    slow.close().await;
}

#[tokio::test]
async fn a_full_mapping_table_refuses_new_clients() {
    init_tracing();
    let (echo, _echo) = echo_server().await;
    let config = ProxyConfig {
        max_clients: 2,
        client_idle_timeout: Duration::from_secs(3600),
        ..ProxyConfig::default()
    };
    let proxy = UdpProxy::start(echo, config).await.unwrap();
    let (a, b, c) = (client().await, client().await, client().await);
    ping(&a, proxy.local_addr(), b"a").await;
    ping(&b, proxy.local_addr(), b"b").await;
    c.send_to(b"c", proxy.local_addr()).await.unwrap();
    let handle = proxy.handle();
    eventually("the third client is refused", || {
        handle.stats().refused_client_packets == 1
    })
    .await;
    assert_eq!(recv_within(&c, ms(100)).await, None);
    assert_eq!(proxy.stats().clients, 2);
    // The mapped clients still work.
    ping(&a, proxy.local_addr(), b"a").await;
    proxy.close().await;
}

#[tokio::test]
async fn idle_clients_expire_and_make_room() {
    init_tracing();
    let (echo, _echo) = echo_server().await;
    let config = ProxyConfig {
        max_clients: 1,
        client_idle_timeout: ms(50),
        ..ProxyConfig::default()
    };
    let proxy = UdpProxy::start(echo, config).await.unwrap();
    let handle = proxy.handle();
    let (a, b) = (client().await, client().await);
    ping(&a, proxy.local_addr(), b"a").await;
    eventually("the idle client is unmapped", || handle.stats().clients == 0).await;
    assert_eq!(ping(&b, proxy.local_addr(), b"b").await, b"b");
    assert_eq!(handle.stats().clients, 1);
    assert_eq!(handle.stats().refused_client_packets, 0);
    proxy.close().await;
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

#[tokio::test]
async fn close_stops_every_task() {
    init_tracing();
    let (echo, _echo) = echo_server().await;
    let before = alive_tasks();
    let proxy = UdpProxy::start(echo, ProxyConfig::default()).await.unwrap();
    for _ in 0..3 {
        let socket = client().await;
        ping(&socket, proxy.local_addr(), b"x").await;
    }
    // Three proxy tasks and one receiver per client.
    assert_eq!(alive_tasks(), before + 6);
    let handle = proxy.handle();
    proxy.close().await;
    assert_eq!(alive_tasks(), before);
    // The handle outlives the proxy.
    assert_eq!(handle.stats().uplink.forwarded_packets, 3);
    handle.cut();
}

#[tokio::test]
async fn dropping_the_proxy_stops_every_task() {
    init_tracing();
    let (echo, _echo) = echo_server().await;
    let before = alive_tasks();
    let proxy = UdpProxy::start(
        echo,
        ProxyConfig::symmetric(LinkConfig {
            delay: ms(500),
            ..LinkConfig::default()
        }),
    )
    .await
    .unwrap();
    let socket = client().await;
    // Leaves a packet held for delivery.
    socket.send_to(b"x", proxy.local_addr()).await.unwrap();
    let handle = proxy.handle();
    eventually("the packet is offered", || handle.stats().uplink.offered == 1).await;
    drop(proxy);
    eventually("every task is gone", || alive_tasks() == before).await;
}

#[tokio::test]
async fn refuses_an_upstream_that_is_not_loopback() {
    let err = UdpProxy::start("192.0.2.1:9".parse().unwrap(), ProxyConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ProxyError::NotLoopback { .. }), "{err}");
    assert!(err.to_string().contains("loopback"));
}

#[tokio::test]
async fn refuses_a_bad_config_naming_the_field() {
    let config = ProxyConfig::new(DuplexConfig {
        uplink: LinkConfig {
            loss: 2.0,
            ..LinkConfig::default()
        },
        downlink: LinkConfig::default(),
    });
    let err = UdpProxy::start("127.0.0.1:9".parse().unwrap(), config)
        .await
        .unwrap_err();
    let ProxyError::Link { direction, source } = &err else {
        panic!("{err}");
    };
    assert_eq!(*direction, Direction::Uplink);
    assert_eq!(source.field, "loss");
    let message = err.to_string();
    assert!(message.contains("uplink") && message.contains("`loss`"), "{message}");

    let err = UdpProxy::start(
        "127.0.0.1:9".parse().unwrap(),
        ProxyConfig {
            max_clients: 0,
            ..ProxyConfig::default()
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("`max_clients`"), "{err}");
}

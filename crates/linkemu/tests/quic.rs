//! A real QUIC connection (quinn, self-signed certificate) through the proxy: what the crate is
//! for. The server echoes one stream; the client sits behind the emulated link.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use courseway_linkemu::{LinkConfig, ProxyConfig, UdpProxy};
use quinn::{ClientConfig, Endpoint, ServerConfig};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// Stops a broken test from hanging; never reached on a working one.
const DEADLINE: Duration = Duration::from_secs(30);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A server that echoes every bidirectional stream, and a client that trusts it.
fn endpoints() -> (Endpoint, Endpoint) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
    let server_config = ServerConfig::with_single_cert(vec![cert.clone()], key).unwrap();
    let server = Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut client = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(ClientConfig::with_root_certificates(Arc::new(roots)).unwrap());

    let acceptor = server.clone();
    tokio::spawn(async move {
        while let Some(incoming) = acceptor.accept().await {
            tokio::spawn(async move {
                let Ok(connection) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                    tokio::spawn(async move {
                        let Ok(body) = recv.read_to_end(16 << 20).await else {
                            return;
                        };
                        let _ = send.write_all(&body).await;
                        let _ = send.finish();
                        let _ = send.stopped().await;
                    });
                }
            });
        }
    });
    (server, client)
}

/// Connects through `proxy`, sends `body` on one stream and returns the echo.
async fn echo_through(client: &Endpoint, proxy: SocketAddr, body: &[u8]) -> Vec<u8> {
    let connection = client.connect(proxy, "localhost").unwrap().await.unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(body).await.unwrap();
    send.finish().unwrap();
    let echoed = recv.read_to_end(16 << 20).await.unwrap();
    connection.close(0u32.into(), b"done");
    echoed
}

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_crosses_a_slow_lossy_link() {
    init_tracing();
    let (server, client) = endpoints();
    let link = LinkConfig {
        rate_bps: Some(8_000_000),
        delay: ms(20),
        jitter: ms(5),
        loss: 0.02,
        seed: 7,
        ..LinkConfig::default()
    };
    let proxy = UdpProxy::start(server.local_addr().unwrap(), ProxyConfig::symmetric(link))
        .await
        .unwrap();
    let data = body(100_000);
    let start = Instant::now();
    let echoed = tokio::time::timeout(DEADLINE, echo_through(&client, proxy.local_addr(), &data))
        .await
        .expect("the transfer finishes");
    let elapsed = start.elapsed();
    assert_eq!(echoed, data);
    // 100 kB up, then 100 kB down, at 1 MB/s each way: at least 0.2 s.
    assert!(elapsed >= ms(200), "{elapsed:?} is faster than the link allows");
    let stats = proxy.stats();
    assert!(stats.uplink.forwarded_bytes >= 100_000, "{stats:?}");
    assert!(stats.downlink.forwarded_bytes >= 100_000, "{stats:?}");
    proxy.close().await;
    client.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_survives_a_cut() {
    init_tracing();
    let (server, client) = endpoints();
    // 150 kB at 4 Mbit/s takes at least 0.3 s each way, so the cut lands mid-transfer.
    let link = LinkConfig {
        rate_bps: Some(4_000_000),
        delay: ms(10),
        ..LinkConfig::default()
    };
    let proxy = UdpProxy::start(server.local_addr().unwrap(), ProxyConfig::symmetric(link))
        .await
        .unwrap();
    let handle = proxy.handle();
    let data = body(150_000);
    let transfer = {
        let client = client.clone();
        let data = data.clone();
        let addr = proxy.local_addr();
        tokio::spawn(async move { echo_through(&client, addr, &data).await })
    };
    // Cut once the transfer is under way.
    let started = Instant::now();
    while handle.stats().uplink.forwarded_bytes < 20_000 {
        assert!(started.elapsed() < DEADLINE, "the transfer never started");
        tokio::time::sleep(ms(2)).await;
    }
    handle.cut();
    tokio::time::sleep(ms(200)).await;
    handle.restore();
    let echoed = tokio::time::timeout(DEADLINE, transfer)
        .await
        .expect("the transfer finishes after the link is restored")
        .unwrap();
    assert_eq!(echoed, data);
    let stats = handle.stats();
    assert!(
        stats.uplink.dropped_outage + stats.downlink.dropped_outage > 0,
        "the cut lost packets: {stats:?}"
    );
    proxy.close().await;
    client.wait_idle().await;
}

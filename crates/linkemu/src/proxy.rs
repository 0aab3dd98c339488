//! The IO edge: [`UdpProxy`], a loopback UDP proxy that sends every datagram through a pure
//! [`Link`] per direction.
//!
//! ```text
//!   client (station)  ──►  client socket 127.0.0.1:P  ──uplink Link──►  per-client socket ──►  upstream
//!   client (station)  ◄──  client socket 127.0.0.1:P  ◄─downlink Link──  per-client socket ◄──  upstream
//! ```
//!
//! One proxy is one link: all its clients share the bottleneck (rate, queue, loss stream,
//! outages) of each direction, like stations behind one village uplink. For independent links,
//! start one proxy per station. Each client address gets its own upstream socket, so the
//! upstream sees one peer per client and replies go back to the right one.
//!
//! Tasks: one receives from clients (and owns the per-client receivers in a `JoinSet`), one per
//! direction delivers. A delivery task keeps the accepted packets in a heap ordered by
//! (arrival time, acceptance order), sleeps until the first is due, asks the link to confirm it
//! (a manual cut may have lost it) and sends it. All state is behind one mutex, never held
//! across an await. Closing or dropping the proxy stops every task.
//!
//! Times are tokio's ([`tokio::time::Instant`]), as durations since the proxy started; the
//! outage windows are relative to that start.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::sync::{watch, Notify};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::error::ProxyError;
use crate::link::{Decision, Direction, DropReason, DuplexConfig, Link, LinkConfig, Scheduled};

/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
/// What a held packet costs beyond its payload, against [`ProxyConfig::max_pending_bytes`] (so
/// that empty datagrams are bounded too).
const ENTRY_OVERHEAD: usize = 64;
/// Pause after a socket error before reading again, so that a persistent error cannot spin.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Limits on [`ProxyConfig`] fields.
const MAX_CLIENTS_LIMIT: usize = 4096;
const MIN_IDLE_TIMEOUT: Duration = Duration::from_millis(10);
const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
const MIN_PENDING_BYTES: usize = 64 * 1024;
const MAX_PENDING_BYTES: usize = 1024 * 1024 * 1024;

/// How a proxy behaves: the link both ways and the proxy's own bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// The emulated link.
    pub link: DuplexConfig,
    /// The most client addresses mapped at once (1..=4096). A new client beyond it is refused
    /// (its packets dropped and counted) until an idle mapping expires.
    pub max_clients: usize,
    /// A client with no packet either way for this long loses its mapping and upstream socket
    /// (10 ms..=1 h).
    pub client_idle_timeout: Duration,
    /// The most bytes (payload plus 64 per packet) held for delivery in each direction: the
    /// bound on packets in propagation, which the link model leaves unbounded without a rate
    /// (64 KiB..=1 GiB). Packets beyond it are dropped and counted as `dropped_overflow`.
    pub max_pending_bytes: usize,
}

impl ProxyConfig {
    /// A proxy over `link` with the default bounds.
    pub fn new(link: DuplexConfig) -> Self {
        Self {
            link,
            max_clients: 64,
            client_idle_timeout: Duration::from_secs(60),
            max_pending_bytes: 16 * 1024 * 1024,
        }
    }

    /// A proxy over the same link both ways (see [`DuplexConfig::symmetric`]).
    pub fn symmetric(link: LinkConfig) -> Self {
        Self::new(DuplexConfig::symmetric(link))
    }

    /// Checks the link configs and the proxy's bounds.
    pub fn validate(&self) -> Result<(), ProxyError> {
        self.link
            .validate()
            .map_err(|(direction, source)| ProxyError::Link { direction, source })?;
        if !(1..=MAX_CLIENTS_LIMIT).contains(&self.max_clients) {
            return Err(ProxyError::Config {
                field: "max_clients",
                value: self.max_clients.to_string(),
                allowed: "from 1 to 4096 clients",
            });
        }
        if !(MIN_IDLE_TIMEOUT..=MAX_IDLE_TIMEOUT).contains(&self.client_idle_timeout) {
            return Err(ProxyError::Config {
                field: "client_idle_timeout",
                value: format!("{:?}", self.client_idle_timeout),
                allowed: "from 10 ms to 1 hour",
            });
        }
        if !(MIN_PENDING_BYTES..=MAX_PENDING_BYTES).contains(&self.max_pending_bytes) {
            return Err(ProxyError::Config {
                field: "max_pending_bytes",
                value: self.max_pending_bytes.to_string(),
                allowed: "from 64 KiB to 1 GiB",
            });
        }
        Ok(())
    }
}

impl Default for ProxyConfig {
    /// A perfect link both ways with the default bounds.
    fn default() -> Self {
        Self::new(DuplexConfig::default())
    }
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Packets received and offered to the link.
    pub offered: u64,
    /// Packets sent on to the far side.
    pub forwarded_packets: u64,
    /// Bytes sent on to the far side.
    pub forwarded_bytes: u64,
    /// Packets lost at random.
    pub dropped_loss: u64,
    /// Packets lost to a scheduled outage or a manual cut (arriving while down, or on the link
    /// when it went down).
    pub dropped_outage: u64,
    /// Packets tail-dropped by the link's full bottleneck queue.
    pub dropped_queue: u64,
    /// Packets the link accepted but the proxy could not hold
    /// ([`ProxyConfig::max_pending_bytes`]).
    pub dropped_overflow: u64,
    /// Packets whose final send failed (e.g. nobody listening on the far side).
    pub send_errors: u64,
}

/// Counters of a proxy, readable at any time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client → upstream.
    pub uplink: DirectionStats,
    /// Upstream → client.
    pub downlink: DirectionStats,
    /// Client addresses mapped now.
    pub clients: usize,
    /// Packets dropped because a new client found the mapping table full.
    pub refused_client_packets: u64,
}

/// Where a held packet goes.
#[derive(Debug)]
enum Target {
    /// Through a client's own upstream socket (connected to the upstream).
    Upstream(Arc<UdpSocket>),
    /// Back to a client, from the proxy's client socket.
    Client(SocketAddr),
}

/// A packet held until it is due.
#[derive(Debug)]
struct Held {
    scheduled: Scheduled,
    /// Acceptance order, to break ties between packets due at the same time.
    seq: u64,
    target: Target,
    payload: Vec<u8>,
}

impl Held {
    fn key(&self) -> (Duration, u64) {
        (self.scheduled.at(), self.seq)
    }

    fn charge(&self) -> usize {
        self.payload.len() + ENTRY_OVERHEAD
    }
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.key().cmp(&self.key())
    }
}

/// One direction: the link model, the packets it accepted and the edge's own counters.
#[derive(Debug)]
struct Lane {
    link: Link,
    held: BinaryHeap<Held>,
    held_bytes: usize,
    max_held_bytes: usize,
    next_seq: u64,
    forwarded_packets: u64,
    forwarded_bytes: u64,
    dropped_overflow: u64,
    send_errors: u64,
}

/// What a delivery task does next.
enum Step {
    /// Send this packet now.
    Send(Held),
    /// A due packet was lost to a cut; look again.
    Lost,
    /// Nothing due: sleep until this time (or until woken).
    Wait(Option<Duration>),
}

impl Lane {
    fn new(link: Link, max_held_bytes: usize) -> Self {
        Self {
            link,
            held: BinaryHeap::new(),
            held_bytes: 0,
            max_held_bytes,
            next_seq: 0,
            forwarded_packets: 0,
            forwarded_bytes: 0,
            dropped_overflow: 0,
            send_errors: 0,
        }
    }

    /// Offers a packet to the link and holds it if accepted. Returns why it was dropped, or
    /// `None` if it is held (the delivery task must then look again). A packet the link
    /// accepted but that does not fit `max_held_bytes` is counted as `dropped_overflow`.
    fn admit(&mut self, now: Duration, payload: Vec<u8>, target: Target) -> Option<DropReason> {
        match self.link.offer(now, payload.len()) {
            Decision::Drop(reason) => Some(reason),
            Decision::Deliver(scheduled) => {
                let held = Held {
                    scheduled,
                    seq: self.next_seq,
                    target,
                    payload,
                };
                if self.held_bytes + held.charge() > self.max_held_bytes {
                    self.dropped_overflow += 1;
                    return Some(DropReason::QueueFull);
                }
                self.next_seq += 1;
                self.held_bytes += held.charge();
                self.held.push(held);
                None
            }
        }
    }

    fn next(&mut self, now: Duration) -> Step {
        let Some(first) = self.held.peek() else {
            return Step::Wait(None);
        };
        if first.scheduled.at() > now {
            return Step::Wait(Some(first.scheduled.at()));
        }
        let Some(held) = self.held.pop() else {
            // Unreachable: peek just returned an element and the lock is held.
            return Step::Wait(None);
        };
        self.held_bytes -= held.charge();
        if self.link.confirm(&held.scheduled) {
            Step::Send(held)
        } else {
            Step::Lost
        }
    }

    fn stats(&self) -> DirectionStats {
        let link = self.link.stats();
        DirectionStats {
            offered: link.offered,
            forwarded_packets: self.forwarded_packets,
            forwarded_bytes: self.forwarded_bytes,
            dropped_loss: link.dropped_loss,
            dropped_outage: link.dropped_outage,
            dropped_queue: link.dropped_queue,
            dropped_overflow: self.dropped_overflow,
            send_errors: self.send_errors,
        }
    }
}

#[derive(Debug)]
struct State {
    uplink: Lane,
    downlink: Lane,
    clients: usize,
    refused_client_packets: u64,
}

impl State {
    fn lane(&mut self, direction: Direction) -> &mut Lane {
        match direction {
            Direction::Uplink => &mut self.uplink,
            Direction::Downlink => &mut self.downlink,
        }
    }
}

/// What the tasks and the handles share.
#[derive(Debug)]
struct Shared {
    start: Instant,
    state: Mutex<State>,
    wake_uplink: Notify,
    wake_downlink: Notify,
}

impl Shared {
    /// Time since the link started.
    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.start)
    }

    fn wake(&self, direction: Direction) -> &Notify {
        match direction {
            Direction::Uplink => &self.wake_uplink,
            Direction::Downlink => &self.wake_downlink,
        }
    }

    /// Offers a received packet to a direction and wakes its delivery task if it was held.
    fn admit(&self, direction: Direction, payload: Vec<u8>, target: Target) {
        let now = self.now();
        let len = payload.len();
        let dropped = self.state.lock().lane(direction).admit(now, payload, target);
        match dropped {
            None => self.wake(direction).notify_one(),
            Some(reason) => tracing::trace!(%direction, len, ?reason, "packet dropped"),
        }
    }
}

/// Cuts, restores and reads the counters of a running proxy. Cheap to clone; it does not keep
/// the proxy's tasks alive.
#[derive(Debug, Clone)]
pub struct LinkHandle {
    shared: Arc<Shared>,
}

impl LinkHandle {
    /// Cuts the link both ways now: packets on it are lost, new ones are dropped until
    /// [`restore`](Self::restore).
    pub fn cut(&self) {
        let now = self.shared.now();
        let mut state = self.shared.state.lock();
        state.uplink.link.cut(now);
        state.downlink.link.cut(now);
        drop(state);
        tracing::info!(at = ?now, "link cut");
    }

    /// Ends a manual cut both ways. Scheduled outages still apply.
    pub fn restore(&self) {
        let now = self.shared.now();
        let mut state = self.shared.state.lock();
        state.uplink.link.restore(now);
        state.downlink.link.restore(now);
        drop(state);
        tracing::info!(at = ?now, "link restored");
    }

    /// Whether the link is cut by hand.
    pub fn is_cut(&self) -> bool {
        self.shared.state.lock().uplink.link.is_cut()
    }

    /// Whether the link is up now both ways: not cut, not in a scheduled outage.
    pub fn is_up(&self) -> bool {
        let now = self.shared.now();
        let state = self.shared.state.lock();
        !state.uplink.link.is_down(now) && !state.downlink.link.is_down(now)
    }

    /// Time since the proxy started (the clock of the outage windows).
    pub fn elapsed(&self) -> Duration {
        self.shared.now()
    }

    /// The counters now.
    pub fn stats(&self) -> ProxyStats {
        let state = self.shared.state.lock();
        ProxyStats {
            uplink: state.uplink.stats(),
            downlink: state.downlink.stats(),
            clients: state.clients,
            refused_client_packets: state.refused_client_packets,
        }
    }
}

/// A running link emulator. See the module doc.
#[derive(Debug)]
pub struct UdpProxy {
    local_addr: SocketAddr,
    upstream: SocketAddr,
    handle: LinkHandle,
    /// Dropping it tells every task to stop.
    shutdown: Option<watch::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl UdpProxy {
    /// Starts a proxy on `127.0.0.1:0` forwarding to `upstream`, which must be a loopback
    /// address. Must be called inside a tokio runtime.
    pub async fn start(upstream: SocketAddr, config: ProxyConfig) -> Result<Self, ProxyError> {
        config.validate()?;
        if !upstream.ip().is_loopback() {
            return Err(ProxyError::NotLoopback { addr: upstream });
        }
        let bind = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        let client_socket = UdpSocket::bind(bind)
            .await
            .map_err(|source| ProxyError::Bind { addr: bind, source })?;
        let local_addr = client_socket.local_addr().map_err(ProxyError::LocalAddr)?;
        let client_socket = Arc::new(client_socket);

        let link_error = |direction| move |source| ProxyError::Link { direction, source };
        let uplink = Link::new(config.link.uplink.clone()).map_err(link_error(Direction::Uplink))?;
        let downlink = Link::new(config.link.downlink.clone()).map_err(link_error(Direction::Downlink))?;
        let shared = Arc::new(Shared {
            start: Instant::now(),
            state: Mutex::new(State {
                uplink: Lane::new(uplink, config.max_pending_bytes),
                downlink: Lane::new(downlink, config.max_pending_bytes),
                clients: 0,
                refused_client_packets: 0,
            }),
            wake_uplink: Notify::new(),
            wake_downlink: Notify::new(),
        });

        let (shutdown, shutdown_rx) = watch::channel(());
        let clients = Clients {
            shared: shared.clone(),
            socket: client_socket.clone(),
            upstream,
            max_clients: config.max_clients,
            idle_timeout: config.client_idle_timeout,
            mappings: HashMap::new(),
            receivers: JoinSet::new(),
        };
        let tasks = vec![
            tokio::spawn(clients.run(shutdown_rx.clone())),
            tokio::spawn(deliver(
                shared.clone(),
                Direction::Uplink,
                client_socket.clone(),
                shutdown_rx.clone(),
            )),
            tokio::spawn(deliver(shared.clone(), Direction::Downlink, client_socket, shutdown_rx)),
        ];
        tracing::info!(%local_addr, %upstream, "link emulator started");
        Ok(Self {
            local_addr,
            upstream,
            handle: LinkHandle { shared },
            shutdown: Some(shutdown),
            tasks,
        })
    }

    /// Where clients send: the proxy's address on 127.0.0.1.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// A handle to cut, restore and read counters, usable after the proxy is moved.
    pub fn handle(&self) -> LinkHandle {
        self.handle.clone()
    }

    /// See [`LinkHandle::cut`].
    pub fn cut(&self) {
        self.handle.cut();
    }

    /// See [`LinkHandle::restore`].
    pub fn restore(&self) {
        self.handle.restore();
    }

    /// See [`LinkHandle::is_cut`].
    pub fn is_cut(&self) -> bool {
        self.handle.is_cut()
    }

    /// See [`LinkHandle::stats`].
    pub fn stats(&self) -> ProxyStats {
        self.handle.stats()
    }

    /// Stops every task and waits until they are gone (their sockets closed). Packets still
    /// held are dropped. Dropping the proxy stops the tasks too, without waiting.
    pub async fn close(mut self) {
        self.shutdown.take();
        for task in std::mem::take(&mut self.tasks) {
            if let Err(e) = task.await {
                if e.is_panic() {
                    tracing::error!(error = %e, "a link emulator task panicked");
                }
            }
        }
        {
            let mut guard = self.handle.shared.state.lock();
            let state = &mut *guard;
            for lane in [&mut state.uplink, &mut state.downlink] {
                lane.held.clear();
                lane.held_bytes = 0;
            }
            state.clients = 0;
        }
        tracing::info!(local_addr = %self.local_addr, "link emulator closed");
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.shutdown.take();
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A client address's upstream socket and its receive task.
#[derive(Debug)]
struct Mapping {
    socket: Arc<UdpSocket>,
    /// Milliseconds since the link started at the last packet either way.
    last_active: Arc<AtomicU64>,
    receiver: AbortHandle,
}

/// The client side: the client socket, the mapping table and the per-client receivers.
#[derive(Debug)]
struct Clients {
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    upstream: SocketAddr,
    max_clients: usize,
    idle_timeout: Duration,
    mappings: HashMap<SocketAddr, Mapping>,
    receivers: JoinSet<()>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Clients {
    async fn run(mut self, mut shutdown: watch::Receiver<()>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let sweep_every = (self.idle_timeout / 4).clamp(Duration::from_millis(5), Duration::from_secs(1));
        let mut sweep = tokio::time::interval(sweep_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = sweep.tick() => self.expire_idle(),
                Some(ended) = self.receivers.join_next(), if !self.receivers.is_empty() => {
                    if let Err(e) = ended {
                        if e.is_panic() {
                            tracing::error!(error = %e, "a client receiver panicked");
                        }
                    }
                }
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.on_client_packet(from, &buf[..len]).await,
                    Err(e) => {
                        tracing::debug!(error = %e, "receiving from clients failed");
                        tokio::time::sleep(ERROR_BACKOFF).await;
                    }
                },
            }
        }
        // Aborts every client receiver and waits until they are gone.
        self.receivers.shutdown().await;
        self.mappings.clear();
    }

    async fn on_client_packet(&mut self, from: SocketAddr, payload: &[u8]) {
        if !from.ip().is_loopback() {
            // Unreachable with a socket bound to 127.0.0.1; kept as the loopback-only guard.
            tracing::warn!(%from, "dropping a packet from a non-loopback address");
            return;
        }
        let now = self.shared.now();
        let socket = match self.mappings.get(&from) {
            Some(mapping) => {
                mapping.last_active.store(millis(now), AtomicOrdering::Relaxed);
                mapping.socket.clone()
            }
            None => match self.map(from, now).await {
                Some(socket) => socket,
                None => return,
            },
        };
        self.shared
            .admit(Direction::Uplink, payload.to_vec(), Target::Upstream(socket));
    }

    /// Makes a mapping for a new client, if there is room. Returns its upstream socket.
    async fn map(&mut self, client: SocketAddr, now: Duration) -> Option<Arc<UdpSocket>> {
        if self.mappings.len() >= self.max_clients {
            self.expire_idle();
        }
        if self.mappings.len() >= self.max_clients {
            self.shared.state.lock().refused_client_packets += 1;
            tracing::debug!(%client, max = self.max_clients, "mapping table full; packet dropped");
            return None;
        }
        let bind = SocketAddr::new(
            match self.upstream {
                SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            },
            0,
        );
        let socket = match UdpSocket::bind(bind).await {
            Ok(socket) => socket,
            Err(e) => {
                tracing::warn!(error = %e, %bind, "cannot bind an upstream socket; packet dropped");
                return None;
            }
        };
        if let Err(e) = socket.connect(self.upstream).await {
            tracing::warn!(error = %e, upstream = %self.upstream, "cannot connect an upstream socket; packet dropped");
            return None;
        }
        let socket = Arc::new(socket);
        let last_active = Arc::new(AtomicU64::new(millis(now)));
        let receiver = self.receivers.spawn(relay_replies(
            self.shared.clone(),
            socket.clone(),
            client,
            last_active.clone(),
        ));
        self.mappings.insert(
            client,
            Mapping {
                socket: socket.clone(),
                last_active,
                receiver,
            },
        );
        self.shared.state.lock().clients = self.mappings.len();
        tracing::debug!(%client, upstream_socket = ?socket.local_addr().ok(), "client mapped");
        Some(socket)
    }

    /// Drops the mappings idle for longer than the timeout.
    fn expire_idle(&mut self) {
        let now = millis(self.shared.now());
        let timeout = millis(self.idle_timeout);
        let before = self.mappings.len();
        self.mappings.retain(|client, mapping| {
            let idle = now.saturating_sub(mapping.last_active.load(AtomicOrdering::Relaxed));
            let keep = idle <= timeout;
            if !keep {
                mapping.receiver.abort();
                tracing::debug!(%client, idle_ms = idle, "idle client unmapped");
            }
            keep
        });
        if self.mappings.len() != before {
            self.shared.state.lock().clients = self.mappings.len();
        }
    }
}

/// Receives the upstream's replies for one client and offers them to the downlink.
async fn relay_replies(shared: Arc<Shared>, socket: Arc<UdpSocket>, client: SocketAddr, last_active: Arc<AtomicU64>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv(&mut buf).await {
            Ok(len) => {
                last_active.store(millis(shared.now()), AtomicOrdering::Relaxed);
                shared.admit(Direction::Downlink, buf[..len].to_vec(), Target::Client(client));
            }
            Err(e) => {
                // E.g. ECONNREFUSED after an earlier send found nobody listening upstream.
                tracing::debug!(error = %e, %client, "receiving from the upstream failed");
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    }
}

/// Sends one direction's held packets when they are due.
async fn deliver(
    shared: Arc<Shared>,
    direction: Direction,
    client_socket: Arc<UdpSocket>,
    mut shutdown: watch::Receiver<()>,
) {
    loop {
        // The sender is dropped on close: stop even in the middle of a backlog of due packets.
        if shutdown.has_changed().is_err() {
            return;
        }
        let step = shared.state.lock().lane(direction).next(shared.now());
        match step {
            Step::Send(held) => {
                let sent = match &held.target {
                    Target::Upstream(socket) => socket.send(&held.payload).await,
                    Target::Client(client) => client_socket.send_to(&held.payload, *client).await,
                };
                let mut state = shared.state.lock();
                let lane = state.lane(direction);
                match sent {
                    Ok(_) => {
                        lane.forwarded_packets += 1;
                        lane.forwarded_bytes += held.payload.len() as u64;
                    }
                    Err(e) => {
                        lane.send_errors += 1;
                        drop(state);
                        tracing::debug!(error = %e, %direction, "forwarding a packet failed");
                    }
                }
            }
            Step::Lost => {}
            Step::Wait(until) => {
                let sleep = async {
                    match until.and_then(|at| shared.start.checked_add(at)) {
                        Some(deadline) => tokio::time::sleep_until(deadline).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = shared.wake(direction).notified() => {}
                    _ = sleep => {}
                }
            }
        }
    }
}

//! [`TapLink`]: the linkemu model between two namespaces, applied to every Ethernet frame the
//! kernels exchange, so QUIC and TCP cross the same emulated link.
//!
//! ```text
//!  namespace a                    root namespace (this process)                  namespace b
//!  {tag}a0 ──veth── {tag}a1 ◄─ macvtap {tag}ta ─► /dev/tapN ─┐
//!  10.x.y.1                                                  ├─ downlink Link (a → b)
//!                                                            └─ uplink Link (b → a)
//!                   {tag}b1 ◄─ macvtap {tag}tb ─► /dev/tapM ─┘          {tag}b0 ──veth── 10.x.y.2
//! ```
//!
//! Each namespace's end of the link is a veth whose root-side peer carries a macvtap in
//! passthru mode: reading the macvtap's character device gives every frame the namespace sent,
//! writing one makes the namespace receive it. Two tasks (one per direction) read frames, offer
//! them to that direction's pure [`Link`], hold the accepted ones until the time the model
//! decided and write them to the other side. Plain files opened on the character devices: no
//! ioctl and no `unsafe` (a TUN device would need the `TUNSETIFF` ioctl).
//!
//! - The namespaces' veths have `gso_max_segs 1`, so every frame is one packet of at most the
//!   MTU (1500): the kernel segments TCP and UDP (GSO) before the link, not after it.
//!   [`TapStats::oversize_frames`] counts any frame that still carried a GSO header (0 expected).
//! - The rate counts IP packet bytes: each frame less its 10-byte virtio-net header and its
//!   14-byte Ethernet header.
//! - The root-side devices get no addresses (`addrgenmode none`); only the two namespaces hold
//!   the /30.
//! - Everything is deleted with the namespaces when the [`TapLink`] is dropped; its tasks stop
//!   then too.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::Duration;

use courseway_linkemu::{Decision, DirectionStats, DropReason, DuplexConfig, Link, Scheduled};
use parking_lot::Mutex;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cmd::ip;
use crate::error::LabError;
use crate::netns::NamespacePair;

/// The virtio-net header macvtap puts before every frame.
const VNET_HDR_LEN: usize = 10;
const ETHERNET_HDR_LEN: usize = 14;
/// The largest frame read (a GSO frame can reach 64 KiB).
const MAX_FRAME: usize = 65_536 + VNET_HDR_LEN;

/// How a [`TapLink`] behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct TapLinkConfig {
    /// `downlink` carries a → b, `uplink` b → a.
    pub link: DuplexConfig,
    /// The most frame bytes held for delivery per direction; frames beyond are dropped and
    /// counted as `dropped_overflow`.
    pub max_pending_bytes: usize,
}

impl TapLinkConfig {
    pub fn new(link: DuplexConfig) -> Self {
        Self {
            link,
            max_pending_bytes: 16 << 20,
        }
    }
}

/// Counters of a [`TapLink`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapStats {
    /// a → b.
    pub downlink: DirectionStats,
    /// b → a.
    pub uplink: DirectionStats,
    /// Frames that arrived as a GSO aggregate rather than one packet (they make the loss model
    /// wrong; 0 expected).
    pub oversize_frames: u64,
}

/// Two namespaces joined by the emulated link. See the module doc.
#[derive(Debug)]
pub struct TapLink {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    stats: Arc<Mutex<TapStats>>,
    // Dropped last: the namespaces (and with them every device of the link).
    pair: NamespacePair,
}

impl TapLink {
    /// Builds namespaces `cw-{tag}-a` (`net.1`) and `cw-{tag}-b` (`net.2`) and starts
    /// forwarding between them. `tag` must be at most 11 bytes (interface names). Needs root and
    /// a tokio runtime.
    pub async fn start(tag: &str, net: [u8; 3], config: TapLinkConfig) -> Result<Self, LabError> {
        let down = Link::new(config.link.downlink.clone())?;
        let up = Link::new(config.link.uplink.clone())?;
        let (a, b) = NamespacePair::namespaces(tag)?;
        let mut taps = Vec::new();
        for (ns, side) in [(&a, 'a'), (&b, 'b')] {
            let (inner, outer, tap) = (
                format!("{tag}{side}0"),
                format!("{tag}{side}1"),
                format!("{tag}t{side}"),
            );
            ip(&[
                "link",
                "add",
                &inner,
                "netns",
                ns.name(),
                "type",
                "veth",
                "peer",
                "name",
                &outer,
            ])?;
            // One packet per frame: segment TCP and UDP before the link.
            ns.ip(&["link", "set", &inner, "gso_max_segs", "1"])?;
            ip(&["link", "set", &outer, "addrgenmode", "none"])?;
            ip(&[
                "link", "add", "link", &outer, "name", &tap, "type", "macvtap", "mode", "passthru",
            ])?;
            ip(&["link", "set", &tap, "addrgenmode", "none"])?;
            ip(&["link", "set", &outer, "up"])?;
            ip(&["link", "set", &tap, "up"])?;
            let index_path = format!("/sys/class/net/{tap}/ifindex");
            let index = std::fs::read_to_string(&index_path).map_err(|e| LabError::io(index_path, e))?;
            let dev = format!("/dev/tap{}", index.trim());
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&dev)
                .map_err(|e| LabError::io(format!("opening {dev} (the macvtap of {tap})"), e))?;
            // `AsyncFd::new` is deprecated because a `T` may hand out a descriptor it does not own,
            // which could be closed while registered. A `File` owns its descriptor and the
            // `AsyncFd` owns the `File`, so that cannot happen here; the replacement,
            // `AsyncFd::register`, is `unsafe`, which this workspace forbids.
            #[allow(deprecated)]
            let fd = AsyncFd::new(file).map_err(|e| LabError::io(format!("polling {dev}"), e))?;
            taps.push((inner, fd));
        }
        let (tap_b_name, tap_b) = taps.pop().expect("two taps");
        let (tap_a_name, tap_a) = taps.pop().expect("two taps");
        let pair = NamespacePair::addressed(a, b, tap_a_name, tap_b_name, net)?;

        let (tap_a, tap_b) = (Arc::new(tap_a), Arc::new(tap_b));
        let stats = Arc::new(Mutex::new(TapStats::default()));
        let (stop, _) = watch::channel(false);
        let start = Instant::now();
        let mut tasks = JoinSet::new();
        for (src, dst, link, downlink) in [(tap_a.clone(), tap_b.clone(), down, true), (tap_b, tap_a, up, false)] {
            let direction = Direction {
                src,
                dst,
                link,
                start,
                stats: stats.clone(),
                downlink,
                max_pending: config.max_pending_bytes,
            };
            tasks.spawn(direction.run(stop.subscribe()));
        }
        Ok(Self {
            stop,
            tasks,
            stats,
            pair,
        })
    }

    /// The namespaces and their addresses (`a` is `.1`, `b` is `.2`).
    pub fn pair(&self) -> &NamespacePair {
        &self.pair
    }

    /// The counters so far.
    pub fn stats(&self) -> TapStats {
        *self.stats.lock()
    }

    /// Stops forwarding and deletes the namespaces. Returns the final counters.
    pub async fn close(mut self) -> TapStats {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        self.stats()
    }
}

/// A frame held until the link delivers it.
#[derive(Debug)]
struct Held {
    scheduled: Scheduled,
    seq: u64,
    frame: Vec<u8>,
}

impl Held {
    fn key(&self) -> (Duration, u64) {
        (self.scheduled.at(), self.seq)
    }
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// One direction: frames from `src` through `link` to `dst`.
struct Direction {
    src: Arc<AsyncFd<File>>,
    dst: Arc<AsyncFd<File>>,
    link: Link,
    start: Instant,
    stats: Arc<Mutex<TapStats>>,
    downlink: bool,
    max_pending: usize,
}

impl Direction {
    fn count(&self, f: impl FnOnce(&mut DirectionStats)) {
        let mut s = self.stats.lock();
        f(if self.downlink { &mut s.downlink } else { &mut s.uplink });
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut held: BinaryHeap<Reverse<Held>> = BinaryHeap::new();
        let mut pending = 0usize;
        let mut seq = 0u64;
        let mut buf = vec![0u8; MAX_FRAME];
        loop {
            let due = held.peek().map(|Reverse(h)| self.start + h.scheduled.at());
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    let now = self.start.elapsed();
                    while held.peek().is_some_and(|Reverse(h)| h.scheduled.at() <= now) {
                        let Reverse(h) = held.pop().expect("peeked");
                        pending -= h.frame.len();
                        if !self.link.confirm(&h.scheduled) {
                            self.count(|s| s.dropped_outage += 1);
                            continue;
                        }
                        match write_frame(&self.dst, &h.frame).await {
                            Ok(()) => self.count(|s| {
                                s.forwarded_packets += 1;
                                s.forwarded_bytes += wire_len(h.frame.len()) as u64;
                            }),
                            Err(e) => {
                                tracing::debug!(error = %e, "could not write a frame to the macvtap");
                                self.count(|s| s.send_errors += 1);
                            }
                        }
                    }
                }
                read = read_frame(&self.src, &mut buf) => {
                    let n = match read {
                        Ok(n) => n,
                        Err(e) => {
                            tracing::warn!(error = %e, "could not read from the macvtap");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    let frame = &buf[..n];
                    // virtio_net_hdr.gso_type (without the ECN bit): non-zero for a GSO aggregate.
                    if n > 1 && frame[1] & 0x7f != 0 {
                        self.stats.lock().oversize_frames += 1;
                    }
                    self.count(|s| s.offered += 1);
                    match self.link.offer(self.start.elapsed(), wire_len(n)) {
                        Decision::Drop(reason) => self.count(|s| match reason {
                            DropReason::Loss => s.dropped_loss += 1,
                            DropReason::Outage => s.dropped_outage += 1,
                            DropReason::QueueFull => s.dropped_queue += 1,
                        }),
                        Decision::Deliver(scheduled) => {
                            if pending + n > self.max_pending {
                                self.count(|s| s.dropped_overflow += 1);
                            } else {
                                pending += n;
                                seq += 1;
                                held.push(Reverse(Held { scheduled, seq, frame: frame.to_vec() }));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The IP packet's length in a frame read from a macvtap.
fn wire_len(frame_len: usize) -> usize {
    frame_len.saturating_sub(VNET_HDR_LEN + ETHERNET_HDR_LEN)
}

async fn read_frame(fd: &AsyncFd<File>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|f| {
            let mut file: &File = f.get_ref();
            file.read(buf)
        }) {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

async fn write_frame(fd: &AsyncFd<File>, frame: &[u8]) -> std::io::Result<()> {
    loop {
        let mut guard = fd.writable().await?;
        match guard.try_io(|f| {
            let mut file: &File = f.get_ref();
            file.write(frame)
        }) {
            Ok(result) => return result.map(|_| ()),
            Err(_would_block) => continue,
        }
    }
}

//! Network namespaces and the veth pair between two of them.
//!
//! A [`Namespace`] is made with `ip netns add` and deleted with `ip netns del` when dropped (also
//! on panic), which also deletes every virtual device inside it and the other end of any veth
//! pair that reached into it. Processes run inside with `ip netns exec`
//! ([`Namespace::command`]); they are not killed by the deletion, so their owner stops them
//! first.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::cmd::{ip, run};
use crate::error::LabError;

/// Names unique to this process: `prefix`, the process id and a counter. Keep `prefix` short:
/// interface names derived from it must fit in 15 bytes.
pub fn unique_tag(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A network namespace, deleted when dropped.
#[derive(Debug)]
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Creates the namespace with its loopback up and IPv6 off (no router solicitations or
    /// duplicate address detection crossing the links). Fails with [`LabError::NotRoot`] without
    /// the rights to create namespaces.
    pub fn create(name: &str) -> Result<Self, LabError> {
        match ip(&["netns", "add", name]) {
            Ok(_) => {}
            Err(LabError::Command { stderr, .. })
                if stderr.contains("Permission denied") || stderr.contains("Operation not permitted") =>
            {
                return Err(LabError::NotRoot(stderr));
            }
            Err(e) => return Err(e),
        }
        let ns = Self { name: name.to_string() };
        ns.ip(&["link", "set", "lo", "up"])?;
        for key in ["net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"] {
            if let Err(e) = ns.sysctl(key, "1") {
                tracing::debug!(error = %e, "could not turn IPv6 off in the lab namespace");
            }
        }
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME args...`.
    pub fn ip(&self, args: &[&str]) -> Result<String, LabError> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NAME program`); add
    /// arguments and spawn it.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `program args...` inside the namespace and returns its standard output.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, LabError> {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Sets a sysctl inside the namespace (e.g. `net.ipv4.tcp_congestion_control`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), LabError> {
        self.run("sysctl", &["-q", "-w", &format!("{key}={value}")]).map(|_| ())
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            tracing::warn!(namespace = %self.name, error = %e, "could not delete the lab namespace");
        }
    }
}

/// Two namespaces, `a` and `b`, with an IPv4 /30 between them: `a` is `.1`, `b` is `.2`.
#[derive(Debug)]
pub struct NamespacePair {
    pub a: Namespace,
    pub b: Namespace,
    pub addr_a: Ipv4Addr,
    pub addr_b: Ipv4Addr,
    /// The interface carrying the /30 inside `a`.
    pub dev_a: String,
    /// The interface carrying the /30 inside `b`.
    pub dev_b: String,
}

impl NamespacePair {
    /// Creates namespaces `cw-{tag}-a` and `cw-{tag}-b`.
    pub(crate) fn namespaces(tag: &str) -> Result<(Namespace, Namespace), LabError> {
        let a = Namespace::create(&format!("cw-{tag}-a"))?;
        let b = Namespace::create(&format!("cw-{tag}-b"))?;
        Ok((a, b))
    }

    /// Two fresh namespaces joined directly by a veth pair (`{tag}a` in `a`, `{tag}b` in `b`)
    /// on `net.1` / `net.2` (a /30; `net` is the first three octets). For `tc` shaping on
    /// [`dev_a`](Self::dev_a) or [`dev_b`](Self::dev_b).
    pub fn veth(tag: &str, net: [u8; 3]) -> Result<Self, LabError> {
        let (a, b) = Self::namespaces(tag)?;
        let (dev_a, dev_b) = (format!("{tag}a"), format!("{tag}b"));
        ip(&[
            "link",
            "add",
            &dev_a,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            &dev_b,
            "netns",
            b.name(),
        ])?;
        let pair = Self::addressed(a, b, dev_a, dev_b, net)?;
        Ok(pair)
    }

    /// Puts the /30 on `dev_a` (in `a`) and `dev_b` (in `b`) and brings them up.
    pub(crate) fn addressed(
        a: Namespace,
        b: Namespace,
        dev_a: String,
        dev_b: String,
        net: [u8; 3],
    ) -> Result<Self, LabError> {
        let addr_a = Ipv4Addr::new(net[0], net[1], net[2], 1);
        let addr_b = Ipv4Addr::new(net[0], net[1], net[2], 2);
        for (ns, dev, addr) in [(&a, &dev_a, addr_a), (&b, &dev_b, addr_b)] {
            ns.ip(&["addr", "add", &format!("{addr}/30"), "dev", dev])?;
            ns.ip(&["link", "set", dev, "up"])?;
        }
        Ok(Self {
            a,
            b,
            addr_a,
            addr_b,
            dev_a,
            dev_b,
        })
    }
}

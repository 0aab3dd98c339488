//! Prometheus metrics: every node's registry, `courseway_build_info`, the `/metrics` endpoint,
//! and helpers for the roles' collectors.
//!
//! Roles keep their counters as plain atomics on their hot paths and expose them through a
//! [`Collector`] that reads them at scrape time, so a scrape costs nothing between scrapes and
//! the hot paths know nothing about Prometheus. Names follow Prometheus conventions: the
//! `courseway_` prefix, base units (`_bytes`, `_seconds`), and counters ending in `_total`
//! (added by the OpenMetrics encoder).

use std::fmt;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use courseway_content::{Catalog, Signed, UnixTime};
use courseway_store::StoreStats;

use crate::http::{text, Body, Handler};
use crate::upstream::FetchStats;

pub use prometheus_client::collector::Collector as MetricsCollector;
pub use prometheus_client::registry::Registry as MetricsRegistry;

/// The content type of the OpenMetrics text format, which Prometheus asks for when it scrapes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of Prometheus's classic text format (0.0.4), served to clients that do not
/// ask for OpenMetrics (curl, `promtool check metrics`, older scrapers).
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics text as the classic text format: a counter family's `# HELP` and `# TYPE` name
/// its `_total` samples (OpenMetrics names the family without the suffix), and the `# UNIT` and
/// `# EOF` lines, which the classic format does not have, are dropped. Pure; every other line
/// is the same in both formats for the metric types Courseway exposes (counters, gauges,
/// histograms).
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
        });
        match meta {
            Some(renamed) => out.push_str(renamed.trim_end()),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    role: String,
}

/// A node's registry: metrics named `courseway_*`, with `courseway_build_info{version, role}`.
pub fn registry(role: &str) -> Registry {
    let mut registry = Registry::with_prefix("courseway");
    let info = Family::<BuildLabels, Gauge>::default();
    info.get_or_create(&BuildLabels {
        version: env!("CARGO_PKG_VERSION").to_string(),
        role: role.to_string(),
    })
    .set(1);
    registry.register(
        "build_info",
        "The running Courseway version and node role (always 1)",
        info,
    );
    registry
}

/// Serves `GET /metrics` from a registry: OpenMetrics to a client whose `Accept` asks for it
/// (Prometheus does), the classic text format to anyone else.
#[derive(Debug, Clone)]
pub struct MetricsHandler {
    registry: Arc<Registry>,
}

impl MetricsHandler {
    pub fn new(registry: Registry) -> Self {
        Self {
            registry: Arc::new(registry),
        }
    }

    /// The registry rendered as OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl Handler for MetricsHandler {
    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/metrics") => {
                let openmetrics = request
                    .headers()
                    .get_all(hyper::header::ACCEPT)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .any(|v| v.contains("application/openmetrics-text"));
                if openmetrics {
                    text(StatusCode::OK, CONTENT_TYPE, self.render())
                } else {
                    text(StatusCode::OK, TEXT_CONTENT_TYPE, openmetrics_to_text(&self.render()))
                }
            }
            (_, "/metrics") => text(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                "use GET /metrics\n",
            ),
            _ => text(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "this is a Courseway metrics endpoint: GET /metrics\n",
            ),
        }
    }
}

/// What a collector writes on a scrape: counters and gauges by name, help and value.
#[derive(Debug)]
pub struct Scrape<'a> {
    encoder: DescriptorEncoder<'a>,
}

impl<'a> Scrape<'a> {
    pub fn new(encoder: DescriptorEncoder<'a>) -> Self {
        Self { encoder }
    }

    /// A counter (`_total` is appended to `name`).
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        let c = ConstCounter::new(value);
        let m = self.encoder.encode_descriptor(name, help, None, c.metric_type())?;
        c.encode(m)
    }

    /// A gauge.
    pub fn gauge(&mut self, name: &str, help: &str, value: i64) -> fmt::Result {
        let g = ConstGauge::new(value);
        let m = self.encoder.encode_descriptor(name, help, None, g.metric_type())?;
        g.encode(m)
    }

    /// A gauge with a floating-point value (seconds, ratios).
    pub fn gauge_f64(&mut self, name: &str, help: &str, value: f64) -> fmt::Result {
        let g = ConstGauge::new(value);
        let m = self.encoder.encode_descriptor(name, help, None, g.metric_type())?;
        g.encode(m)
    }

    /// A histogram.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        h: &prometheus_client::metrics::histogram::Histogram,
    ) -> fmt::Result {
        let m = self.encoder.encode_descriptor(name, help, None, h.metric_type())?;
        h.encode(m)
    }

    /// A counter family: one series per label set.
    pub fn counters<L: EncodeLabelSet>(&mut self, name: &str, help: &str, series: &[(L, u64)]) -> fmt::Result {
        let mut m =
            self.encoder
                .encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Counter)?;
        for (labels, value) in series {
            ConstCounter::new(*value).encode(m.encode_family(labels)?)?;
        }
        Ok(())
    }

    /// A gauge family: one series per label set.
    pub fn gauges<L: EncodeLabelSet>(&mut self, name: &str, help: &str, series: &[(L, i64)]) -> fmt::Result {
        let mut m = self
            .encoder
            .encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Gauge)?;
        for (labels, value) in series {
            ConstGauge::new(*value).encode(m.encode_family(labels)?)?;
        }
        Ok(())
    }
}

/// The store's figures: `courseway_store_*`.
pub fn scrape_store(s: &mut Scrape<'_>, st: &StoreStats) -> fmt::Result {
    s.gauge(
        "store_budget_bytes",
        "Bytes of chunks the store may hold",
        clamp(st.budget_bytes),
    )?;
    s.gauge("store_used_bytes", "Bytes of chunks held", clamp(st.used_bytes))?;
    s.gauge(
        "store_pinned_bytes",
        "Bytes of chunks pinned (never evicted)",
        clamp(st.pinned_bytes),
    )?;
    s.gauge("store_chunks", "Chunks held", clamp(st.chunks))?;
    s.counter(
        "store_evicted_bytes",
        "Bytes of chunks evicted since start",
        st.evicted_bytes,
    )?;
    s.counter("store_evicted_chunks", "Chunks evicted since start", st.evicted_chunks)?;
    s.counter(
        "store_corrupt_chunks",
        "Chunks found damaged on read since start (dropped, never served)",
        st.corrupt_chunks,
    )
}

/// What fetching from parents cost: `courseway_upstream_*`.
pub fn scrape_upstream(s: &mut Scrape<'_>, f: &FetchStats) -> fmt::Result {
    use std::sync::atomic::Ordering::Relaxed;
    s.counter(
        "upstream_received_bytes",
        "Chunk bytes received from parents, including bytes thrown away",
        f.bytes_received.load(Relaxed),
    )?;
    s.counter(
        "upstream_verification_failures",
        "Chunks from a parent whose bytes did not match their id (refused)",
        f.bad_chunks.load(Relaxed),
    )?;
    s.counter(
        "upstream_resumed_fetches",
        "Chunk fetches resumed from a byte offset after a cut",
        f.resumed.load(Relaxed),
    )?;
    s.counter(
        "upstream_failovers",
        "Switches to another parent",
        f.failovers.load(Relaxed),
    )?;
    s.counter(
        "upstream_chunk_requests",
        "Chunk requests sent to parents (first requests, resumptions and retries)",
        f.chunk_requests.load(Relaxed),
    )?;
    let rejected: Vec<([(&str, &str); 2], u64)> = f
        .rejections
        .snapshot()
        .into_iter()
        .map(|(object, reason, n)| ([("object", object), ("reason", reason)], n))
        .collect();
    s.counters(
        "upstream_rejected",
        "What a parent sent that was refused, by object (chunk, manifest, catalog, schedule) and reason",
        &rejected,
    )?;
    s.histogram(
        "upstream_fetch_seconds",
        "Seconds from asking a parent for a chunk to holding it verified, retries included",
        &f.fetch_seconds,
    )
}

/// The accepted catalog's version and age: `courseway_catalog_*`.
pub fn scrape_catalog(s: &mut Scrape<'_>, catalog: Option<&Signed<Catalog>>, now: UnixTime) -> fmt::Result {
    let (version, issued, expires) = catalog
        .map(|c| (c.body.version, c.body.issued_at, c.body.expires_at))
        .unwrap_or((0, now, now));
    s.gauge(
        "catalog_version",
        "Version of the accepted catalog (0: none yet)",
        clamp(version),
    )?;
    s.gauge(
        "catalog_age_seconds",
        "Seconds since the accepted catalog was signed",
        clamp(now.secs_since(issued)),
    )?;
    s.gauge(
        "catalog_expires_in_seconds",
        "Seconds until the accepted catalog expires (0: expired or none)",
        clamp(expires.secs_since(now)),
    )
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A collector from a closure over shared state, called on every scrape.
pub struct FnCollector<S> {
    state: S,
    collect: fn(&S, &mut Scrape<'_>) -> fmt::Result,
}

impl<S> fmt::Debug for FnCollector<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnCollector").finish_non_exhaustive()
    }
}

impl<S: Send + Sync + 'static> FnCollector<S> {
    pub fn new(state: S, collect: fn(&S, &mut Scrape<'_>) -> fmt::Result) -> Self {
        Self { state, collect }
    }
}

impl<S: Send + Sync + 'static> Collector for FnCollector<S> {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        (self.collect)(&self.state, &mut Scrape::new(encoder))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_and_collected_metrics_are_prefixed_and_named_by_convention() {
        let mut registry = registry("relay");
        registry.register_collector(Box::new(FnCollector::new(7u64, |v, s| {
            s.counter("chunk_bytes_served", "Chunk bytes sent to children", *v)?;
            s.gauge("catalog_version", "Version of the accepted catalog", 3)
        })));
        let text = MetricsHandler::new(registry).render();
        assert!(
            text.contains("courseway_build_info{version=\"0.1.0\",role=\"relay\"} 1"),
            "{text}"
        );
        assert!(text.contains("# TYPE courseway_chunk_bytes_served counter"), "{text}");
        assert!(text.contains("courseway_chunk_bytes_served_total 7"), "{text}");
        assert!(text.contains("courseway_catalog_version 3"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn classic_text_names_counter_families_by_their_samples_and_drops_openmetrics_lines() {
        let om = "# HELP courseway_sent_bytes Bytes sent.\n# TYPE courseway_sent_bytes counter\n\
                  # UNIT courseway_sent_bytes bytes\ncourseway_sent_bytes_total{a=\"b\"} 7\n\
                  # HELP courseway_up Whether up.\n# TYPE courseway_up gauge\ncourseway_up 1\n\
                  # HELP courseway_wait_seconds Waits.\n# TYPE courseway_wait_seconds histogram\n\
                  courseway_wait_seconds_bucket{le=\"+Inf\"} 2\ncourseway_wait_seconds_sum 0.5\n\
                  courseway_wait_seconds_count 2\n# EOF\n";
        let text = openmetrics_to_text(om);
        assert_eq!(
            text,
            "# HELP courseway_sent_bytes_total Bytes sent.\n# TYPE courseway_sent_bytes_total counter\n\
             courseway_sent_bytes_total{a=\"b\"} 7\n\
             # HELP courseway_up Whether up.\n# TYPE courseway_up gauge\ncourseway_up 1\n\
             # HELP courseway_wait_seconds Waits.\n# TYPE courseway_wait_seconds histogram\n\
             courseway_wait_seconds_bucket{le=\"+Inf\"} 2\ncourseway_wait_seconds_sum 0.5\n\
             courseway_wait_seconds_count 2\n"
        );
    }
}

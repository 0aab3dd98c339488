//! `courseway origin|relay|station --config FILE`: one long-running node per process, as
//! systemd runs them. Each starts from its config file and its credentials directory, runs
//! until SIGINT or SIGTERM, and then shuts down cleanly (connections closed, store flushed).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use courseway::config;
use courseway::keys::{self, NodeKeys};
use courseway_content::synthetic::SyntheticLesson;
use courseway_content::LessonId;
use courseway_node::http::HttpServer;
use courseway_node::metrics::{self, MetricsCollector, MetricsHandler};
use courseway_origin::mirror::{MirrorConfig, MirrorReview};
use courseway_origin::{Origin, OriginConfig};
use courseway_proto::Role;
use courseway_relay::{Relay, RelayConfig};
use courseway_station::lan::LanConfig;
use courseway_station::{Station, StationConfig, SyncStatus};
use tokio::signal::unix::{signal, SignalKind};

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM (systemd stop).
async fn stop_requested() -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("listening for Ctrl-C")?,
        _ = term.recv() => {}
    }
    tracing::info!("stop requested");
    Ok(())
}

/// Waits for SIGTERM or Ctrl-C, answering SIGHUP by logging that `role` reads its config only
/// at start (SIGHUP would otherwise end the process).
async fn stop_requested_ignoring_reloads(role: &str) -> anyhow::Result<()> {
    let mut hup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    let stop = stop_requested();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            r = &mut stop => return r,
            _ = hup.recv() => {
                tracing::warn!("SIGHUP: the {role} reads its config file only at start; restart it to apply changes (the admin API re-reads its token file by itself)");
            }
        }
    }
}

/// Starts `/metrics` on `listen` with the node's collectors, if configured.
async fn metrics_endpoint(
    listen: Option<SocketAddr>,
    role: &str,
    collectors: Vec<Box<dyn MetricsCollector>>,
) -> anyhow::Result<Option<HttpServer>> {
    let Some(addr) = listen else {
        return Ok(None);
    };
    let mut registry = metrics::registry(role);
    for collector in collectors {
        registry.register_collector(collector);
    }
    let server = HttpServer::bind(addr, MetricsHandler::new(registry))
        .await
        .context("starting the metrics endpoint ([metrics] listen)")?;
    println!("metrics on http://{}/metrics", server.local_addr());
    Ok(Some(server))
}

/// Runs an origin until stopped.
pub fn origin(config_path: &Path) -> anyhow::Result<()> {
    let settings = config::origin(config_path)?;
    let node = NodeKeys::load(&settings.credentials, Role::Origin)?;
    let signer = keys::load_online_key(&settings.online_key)?;
    ensure!(
        signer.delegation().root == node.root,
        "{} was delegated by root key {}, but this node's credentials trust root key {}: they come from different deployments",
        settings.online_key.display(),
        signer.delegation().root.fingerprint(),
        node.root.fingerprint()
    );
    runtime()?.block_on(async move {
        let name = node.name().clone();
        let origin = Origin::start(
            OriginConfig {
                name: name.clone(),
                listen: settings.listen,
                store: settings.store,
                transport: settings.transport.clone(),
                catalog_validity: settings.catalog_validity,
            },
            node.enrollment,
            signer,
        )
        .await
        .context("starting the origin")?;
        let origin = std::sync::Arc::new(origin);
        println!("origin {name} listening on {} (UDP, QUIC)", origin.local_addr()?);
        let admin = match settings.admin {
            Some(config) => {
                let admin = courseway_origin::admin::AdminApi::start(config, origin.clone())
                    .await
                    .context("starting the admin API ([origin.admin])")?;
                println!("admin API on http://{}", admin.local_addr());
                Some(admin)
            }
            None => None,
        };
        let mut mirrors = Vec::new();
        for m in settings.mirrors {
            let upstream = NodeKeys::load(&m.credentials, Role::Origin)
                .with_context(|| format!("loading the credentials of [[mirror]] {:?}", m.name))?;
            let mut config = MirrorConfig::new(m.name.clone(), m.upstream, upstream.root);
            config.selection = m.selection;
            config.concurrency = m.concurrency;
            if m.review == courseway::config::MirrorReviewValue::Local {
                let admin = admin
                    .as_ref()
                    .context("review = \"local\" needs [origin.admin] (checked when the config was read)")?;
                config.review = MirrorReview::Local(admin.review_queue());
            }
            config.transport = settings.transport.clone();
            let mirror = origin
                .mirror(config, upstream.enrollment)
                .with_context(|| format!("starting [[mirror]] {:?}", m.name))?;
            println!("mirroring upstream origin {:?}", mirror.name());
            mirrors.push(mirror);
        }
        let mut collectors = vec![origin.metrics()];
        if let Some(admin) = &admin {
            collectors.push(admin.metrics());
        }
        if !mirrors.is_empty() {
            collectors.push(courseway_origin::mirror::metrics(&mirrors));
        }
        let _metrics = metrics_endpoint(settings.metrics, "origin", collectors).await?;
        let mut feeds = Vec::new();
        for live in settings.live {
            let (channel, ingest) = (live.channel.clone(), live.ingest.clone());
            let publisher = origin.clone();
            // Restarted when it stops (an RTSP camera gone), its sequence numbers carrying on.
            let feed = courseway_media::live_feed::LiveFeed::start(live.ingest.clone(), move |cut| {
                // The ingest's own thread: the store writes block it, never the async workers.
                let published = courseway::live::publish_cut(&publisher, &channel, &ingest, &cut);
                if let Err(e) = published {
                    tracing::error!(%channel, error = %e, "could not publish a live segment; it is skipped");
                }
            })
            .with_context(|| format!("starting the live feed of channel {} ([[live]])", live.channel))?;
            println!("live channel {} taking {}", live.channel, live.ingest.input);
            feeds.push(feed);
        }
        if settings.synthetic_lessons > 0 && origin.catalog().is_none() {
            let built: Vec<_> = (0..settings.synthetic_lessons)
                .map(|i| {
                    let id = LessonId::new(format!("synthetic-{:03}", i + 1)).expect("a valid lesson id");
                    SyntheticLesson::of_size(id, u64::from(i) + 1, settings.synthetic_lesson_bytes).build()
                })
                .collect();
            let lessons: Vec<_> = built.iter().map(|l| (l.manifest.clone(), &l.chunks)).collect();
            let version = origin.publish(&lessons).context("publishing the synthetic lessons")?;
            println!(
                "published {} synthetic lessons as catalog v{version}",
                settings.synthetic_lessons
            );
        }
        if let Some(catalog) = origin.catalog() {
            println!(
                "serving catalog v{} ({} lessons)",
                catalog.body.version,
                catalog.body.entries().len()
            );
        }
        stop_requested_ignoring_reloads("origin").await?;
        drop(feeds);
        drop(mirrors);
        if let Some(admin) = &admin {
            admin.shutdown();
        }
        origin.shutdown();
        Ok(())
    })
}

/// Runs a relay until stopped.
pub fn relay(config_path: &Path) -> anyhow::Result<()> {
    let settings = config::relay(config_path)?;
    let node = NodeKeys::load(&settings.credentials, Role::Relay)?;
    runtime()?.block_on(async move {
        let name = node.name().clone();
        let mut rc = RelayConfig::new(name.clone(), settings.listen, settings.store, settings.upstream);
        rc.transport = settings.transport;
        rc.prefetch = settings.prefetch;
        if let Some(t) = settings.wait_timeout {
            rc.wait_timeout = t;
        }
        if let Some(n) = settings.prefetch_concurrency {
            rc.prefetch_concurrency = n;
        }
        if let Some(h) = settings.schedule_horizon {
            rc.schedule_horizon = h;
        }
        if let Some(n) = settings.live_window {
            rc.live_window = n;
        }
        let mut relay = Relay::start(rc, node.enrollment, node.root)
            .await
            .context("starting the relay")?;
        println!("relay {name} listening on {} (UDP, QUIC)", relay.local_addr()?);
        let _metrics = metrics_endpoint(settings.metrics, "relay", vec![relay.metrics()]).await?;
        stop_requested_ignoring_reloads("relay").await?;
        relay.shutdown();
        Ok(())
    })
}

/// Runs a station until stopped, printing a line whenever its sync state changes.
pub fn station(config_path: &Path) -> anyhow::Result<()> {
    let settings = config::station(config_path)?;
    let node = NodeKeys::load(&settings.credentials, Role::Station)?;
    runtime()?.block_on(async move {
        let name = node.name().clone();
        let mut sc = StationConfig::new(name.clone(), settings.bind, settings.store, settings.upstream);
        sc.transport = settings.transport;
        sc.rate_cap = settings.rate_cap;
        sc.filter = settings.filter;
        sc.place = settings.place;
        sc.bandwidth = settings.bandwidth;
        sc.retention = settings.retention;
        sc.reports = settings.reports;
        if let Some(m) = settings.ready_margin {
            sc.ready_margin = m;
        }
        if let Some(n) = settings.concurrency {
            sc.concurrency = n;
        }
        sc.live_channels = settings.live_channels.clone();
        if let Some(n) = settings.live_window {
            sc.live_window = n;
        }
        let started = config::station(config_path)?;
        let station = Station::start(sc, node.enrollment, node.root)
            .await
            .context("starting the station")?;
        println!("station {name} started");
        let _metrics = metrics_endpoint(settings.metrics, "station", vec![station.metrics()]).await?;
        let lan = match settings.lan {
            Some(l) => {
                let mut config = LanConfig::new(l.listen, station.viewing_sink());
                config.idle_after = l.idle_after;
                config.attendance_pin = l.attendance_pin;
                let lan = station
                    .serve_lan(config)
                    .await
                    .context("starting the LAN page and HLS ([station.lan] listen)")?;
                println!("TV page and HLS on {}", lan.page_url());
                Some(lan)
            }
            None => None,
        };
        let mut status = station.status();
        let report = async {
            let mut last: Option<(SyncStatus, Instant)> = None;
            loop {
                let now = status.borrow_and_update().clone();
                if last.as_ref().is_none_or(|(l, at)| worth_a_line(l, *at, &now)) {
                    println!("{}", describe(&now));
                    last = Some((now, Instant::now()));
                }
                // A change wakes us at once; progress within a lesson is printed every 10 s.
                let _ = tokio::time::timeout(Duration::from_secs(10), status.changed()).await;
            }
        };
        let reloads = async {
            let mut hup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
            while hup.recv().await.is_some() {
                reload_station(&station, config_path, &started);
            }
            Ok::<(), anyhow::Error>(())
        };
        tokio::select! {
            r = stop_requested() => r?,
            () = report => {}
            r = reloads => r?,
        }
        // Playbacks in progress end and are recorded before the station stops.
        drop(lan);
        station.shutdown().await;
        Ok(())
    })
}

/// SIGHUP: reads the config file again and puts what can change at run time in force (lesson
/// filter, bandwidth windows and quota, ready margin, retention); names the keys that changed
/// but need a restart. A config that does not read keeps the settings in force.
fn reload_station(station: &Station, config_path: &Path, started: &config::StationSettings) {
    let new = match config::station(config_path) {
        Ok(new) => new,
        Err(e) => {
            tracing::error!(config = %config_path.display(), error = format!("{e:#}"), "SIGHUP: the config file does not read; keeping the settings in force");
            return;
        }
    };
    let mut tunables = station.tunables();
    tunables.filter = new.filter.clone();
    tunables.bandwidth = new.bandwidth.clone();
    tunables.retention = new.retention;
    if let Some(m) = new.ready_margin {
        tunables.ready_margin = m;
    }
    let needs_restart = restart_only_changes(started, &new);
    if !needs_restart.is_empty() {
        tracing::warn!(
            keys = needs_restart.join(", "),
            "SIGHUP: these settings changed but apply only after a restart"
        );
    }
    if tunables == station.tunables() {
        tracing::info!("SIGHUP: the config file read again; no run-time setting changed");
    } else {
        station.retune(tunables);
        println!("config reloaded: lesson filter, bandwidth, ready margin and retention in force");
    }
}

/// The config keys, among those read only at start, whose values differ.
fn restart_only_changes(old: &config::StationSettings, new: &config::StationSettings) -> Vec<&'static str> {
    // Compared through their Debug form: these types are plain data, and a difference in any
    // field is a change the operator made.
    let same = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") == format!("{b:?}");
    let mut changed = Vec::new();
    let fields: [(&'static str, &dyn std::fmt::Debug, &dyn std::fmt::Debug); 11] = [
        ("metrics.listen", &old.metrics, &new.metrics),
        ("node.credentials", &old.credentials, &new.credentials),
        ("node.bind", &old.bind, &new.bind),
        ("[store]", &old.store, &new.store),
        ("[transport]", &old.transport, &new.transport),
        ("[[parent]] / [upstream]", &old.upstream, &new.upstream),
        ("station.rate_limit", &old.rate_cap, &new.rate_cap),
        ("station.concurrency", &old.concurrency, &new.concurrency),
        ("station.district / town / groups", &old.place, &new.place),
        ("[station.reports]", &old.reports, &new.reports),
        ("[station.lan]", &old.lan, &new.lan),
    ];
    for (key, a, b) in fields {
        if !same(a, b) {
            changed.push(key);
        }
    }
    changed
}

/// A new catalog, a lesson ready, the sync done or a bad chunk: a line at once. Bytes arriving:
/// a line every 10 s at most.
fn worth_a_line(last: &SyncStatus, printed_at: Instant, now: &SyncStatus) -> bool {
    last.catalog_version != now.catalog_version
        || last.lessons_ready != now.lessons_ready
        || last.synced != now.synced
        || last.bad_chunks != now.bad_chunks
        || last.disk_full != now.disk_full
        || (last.bytes_ready != now.bytes_ready && printed_at.elapsed() >= Duration::from_secs(10))
}

/// One line for the station's log: where the sync stands.
fn describe(s: &SyncStatus) -> String {
    if s.catalog_version == 0 {
        return "no catalog yet: waiting for a parent".into();
    }
    let state = if s.synced { "synced" } else { "syncing" };
    let mut line = format!(
        "catalog v{}: {state}, {}/{} lessons ready, {:.1}/{:.1} MB",
        s.catalog_version,
        s.lessons_ready,
        s.lessons_wanted,
        s.bytes_ready as f64 / 1e6,
        s.bytes_wanted as f64 / 1e6
    );
    if s.bad_chunks > 0 {
        line.push_str(&format!(", {} bad chunks refused", s.bad_chunks));
    }
    if s.disk_full {
        line.push_str(", the store's disk is full: downloads stopped until there is room");
    }
    line
}

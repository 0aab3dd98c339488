//! `courseway demo`: a local run of everything that exists, on synthetic courseware.
//!
//! Until the delivery issue (#3) brings QUIC nodes, the demo runs the layers below them in one
//! process, for real: an origin store ingests synthetic lessons; the catalog is signed by an
//! online key that a freshly made root key delegated to; a station's trust state accepts it
//! from a wire frame; manifests and chunks cross the wire codec and land, verified, in the
//! station's own RocksDB store. A hostile relay's tampered chunk, a rollback and a foreign
//! catalog are refused along the way.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use courseway_content::encoding::Encode;
use courseway_content::synthetic::SyntheticLesson;
use courseway_content::{
    Catalog, CatalogEntry, LessonId, LessonManifest, OnlineKey, RootKey, Signed, TrustError, TrustState, UnixTime,
};
use courseway_proto::{
    encode_request, encode_response, try_decode_request, try_decode_response, Announcement, ChunkHeader, GetChunk,
    GetManifest, ManifestReply, Request, Response,
};
use courseway_store::{Durability, PinReason, Store, StoreConfig, StoreError};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where the nodes' stores go (default: a temporary directory removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// How many synthetic lessons to publish.
    #[arg(long, default_value_t = 3)]
    lessons: u32,
    /// Four-second segments per lesson rendition (15 is one minute).
    #[arg(long, default_value_t = 15)]
    segments: u32,
}

fn now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

fn random_seed() -> [u8; 32] {
    rand::random()
}

struct Origin {
    store: Store,
    online: OnlineKey,
    manifests: Vec<(LessonManifest, Vec<u8>)>,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.lessons > 0, "--lessons must be at least 1");
    anyhow::ensure!(args.segments > 0, "--segments must be at least 1");
    let temp;
    let dir = match args.dir {
        Some(d) => d,
        None => {
            temp = tempfile::tempdir().context("creating a temporary directory for the demo")?;
            temp.path().to_path_buf()
        }
    };
    println!("Courseway demo (foundation edition)");
    println!("  The QUIC delivery tree (origin → relays → stations) arrives with the delivery issue (#3).");
    println!("  This run exercises what exists: content model, signatures and trust checks, wire codec,");
    println!("  and the RocksDB chunk stores of an origin and a station, in one process.");
    println!("  stores under {}", dir.display());
    println!();

    // 1. Keys: an offline root delegates to an online signing key.
    let root = RootKey::from_seed(random_seed());
    let online_seed = random_seed();
    let t0 = now();
    let delegation = root.delegate(
        OnlineKey::public_for_seed(online_seed),
        "origin-demo",
        t0,
        t0.plus_secs(30 * 86_400),
    );
    let online = OnlineKey::new(online_seed, delegation).context("delegation does not match the online key")?;
    println!(
        "[keys]    root {} delegates to online key {} for 30 days",
        root.public(),
        online.delegation().key
    );

    // 2. Origin ingests synthetic lessons.
    let started = Instant::now();
    let origin = ingest(&dir, online, args.lessons, args.segments)?;
    let origin_stats = origin.store.stats();
    println!(
        "[origin]  ingested {} lessons: {} chunks, {:.1} MB in {:.2} s",
        args.lessons,
        origin_stats.chunks,
        origin_stats.used_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    // 3. Catalog v1, signed, announced as a wire frame.
    let entries = origin
        .manifests
        .iter()
        .map(|(m, bytes)| CatalogEntry {
            lesson: m.id.clone(),
            manifest: m.hash(),
            manifest_size: bytes.len() as u32,
            content_size: m.content_size(),
        })
        .collect();
    let catalog = origin
        .online
        .sign(Catalog::new(1, t0, t0.plus_secs(7 * 86_400), entries)?);
    let mut frame = Vec::new();
    encode_response(
        &Response::Announce(Announcement::Catalog(Box::new(catalog.clone()))),
        &mut frame,
    )?;
    println!("[origin]  catalog v1 signed; announce frame {} bytes", frame.len());

    // 4. Station accepts the catalog from the frame.
    let mut trust = TrustState::new(root.public());
    let Some((Response::Announce(Announcement::Catalog(received)), _)) = try_decode_response(&frame)? else {
        bail!("the announce frame did not decode to a catalog");
    };
    trust.accept_catalog(*received, now())?;
    println!("[station] catalog v1 accepted: signature chain, expiry and version checked");

    // 5. Station syncs every lesson through the codec into its own store.
    let station_store = Store::open(StoreConfig::new(dir.join("station"), 4 << 30))?;
    let started = Instant::now();
    let mut fetched = 0u64;
    for entry in trust.catalog().expect("accepted above").body.entries().to_vec() {
        let bytes = manifest_over_wire(&origin, &entry)?;
        let manifest = trust.verify_manifest(&entry.lesson, &bytes)?;
        station_store.pin(
            &manifest.chunk_refs().iter().map(|c| c.id).collect::<Vec<_>>(),
            PinReason::Scheduled,
            entry.lesson.as_str(),
        )?;
        for chunk in manifest.chunk_refs() {
            let body = chunk_over_wire(
                &origin.store,
                GetChunk {
                    id: chunk.id,
                    offset: 0,
                },
            )?;
            station_store.put(chunk.id, &body)?;
            fetched += body.len() as u64;
        }
        println!(
            "[station] {} ({}) ready: {} chunks verified",
            entry.lesson,
            manifest.title,
            manifest.chunk_refs().len()
        );
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "[station] synced {:.1} MB in {:.2} s ({:.0} MB/s through codec, hashing and RocksDB)",
        fetched as f64 / 1e6,
        secs,
        fetched as f64 / 1e6 / secs.max(1e-9)
    );

    // 6. What a hostile relay cannot do.
    println!();
    hostile_relay_checks(&origin, &root, &mut trust, &station_store)?;

    // 7. The station's store is whole.
    let report = station_store.verify_all()?;
    anyhow::ensure!(report.is_clean(), "station store check failed: {report:?}");
    println!();
    println!(
        "Done: station holds {} chunks ({:.1} MB), every one re-hashed and matching; {} lessons ready.",
        report.verified,
        report.verified_bytes as f64 / 1e6,
        args.lessons
    );
    Ok(())
}

fn ingest(dir: &std::path::Path, online: OnlineKey, lessons: u32, segments: u32) -> anyhow::Result<Origin> {
    let store = Store::open(StoreConfig::new(dir.join("origin"), 16 << 30))?;
    let mut manifests = Vec::new();
    for n in 0..lessons {
        let id = LessonId::new(format!("demo-{:03}", n + 1))?;
        let built = SyntheticLesson::standard(id.clone(), u64::from(n) + 1, segments).build();
        let ids: Vec<_> = built.chunks.keys().copied().collect();
        store.pin(&ids, PinReason::OriginOwned, id.as_str())?;
        for (chunk_id, bytes) in &built.chunks {
            store.put(*chunk_id, bytes)?;
        }
        let bytes = built.manifest.to_bytes();
        store.put_meta(
            format!("manifest/{}", built.manifest.hash()).as_bytes(),
            &bytes,
            Durability::Synced,
        )?;
        manifests.push((built.manifest, bytes));
    }
    Ok(Origin {
        store,
        online,
        manifests,
    })
}

/// One GetManifest exchange through the codec, answered from the origin's store.
fn manifest_over_wire(origin: &Origin, entry: &CatalogEntry) -> anyhow::Result<Vec<u8>> {
    let mut req = Vec::new();
    encode_request(&Request::GetManifest(GetManifest { hash: entry.manifest }), &mut req)?;
    let Some((Request::GetManifest(GetManifest { hash }), _)) = try_decode_request(&req)? else {
        bail!("manifest request did not round-trip");
    };
    let bytes = origin
        .store
        .get_meta(format!("manifest/{hash}").as_bytes())?
        .with_context(|| format!("origin has no manifest {hash}"))?;
    let mut resp = Vec::new();
    encode_response(&Response::Manifest(ManifestReply { bytes }), &mut resp)?;
    match try_decode_response(&resp)? {
        Some((Response::Manifest(reply), _)) => Ok(reply.bytes),
        other => bail!("unexpected reply to a manifest request: {other:?}"),
    }
}

/// One GetChunk exchange through the codec: header frame, then the raw body.
fn chunk_over_wire(store: &Store, request: GetChunk) -> anyhow::Result<Vec<u8>> {
    let mut wire = Vec::new();
    encode_request(&Request::GetChunk(request), &mut wire)?;
    let Some((Request::GetChunk(req), used)) = try_decode_request(&wire)? else {
        bail!("chunk request did not round-trip")
    };
    wire.drain(..used);
    let body = store
        .get(&req.id, req.offset)?
        .with_context(|| format!("chunk {} not stored", req.id))?;
    let size = store.size_of(&req.id).context("chunk vanished")?;
    encode_response(
        &Response::Chunk(ChunkHeader {
            id: req.id,
            size,
            offset: req.offset,
        }),
        &mut wire,
    )?;
    wire.extend_from_slice(&body);
    let Some((Response::Chunk(header), used)) = try_decode_response(&wire)? else {
        bail!("chunk header did not decode")
    };
    Ok(wire[used..used + header.body_len() as usize].to_vec())
}

fn hostile_relay_checks(
    origin: &Origin,
    root: &RootKey,
    trust: &mut TrustState,
    station: &Store,
) -> anyhow::Result<()> {
    // A relay flips one bit in a chunk: the station's store refuses it.
    let (manifest, _) = &origin.manifests[0];
    let chunk = manifest.chunk_refs()[0];
    let mut body = chunk_over_wire(
        &origin.store,
        GetChunk {
            id: chunk.id,
            offset: 0,
        },
    )?;
    body[body.len() / 2] ^= 0x01;
    station.remove(&chunk.id).ok();
    match station.put(chunk.id, &body) {
        Err(StoreError::HashMismatch(_)) => println!("[relay✗]  tampered chunk refused by the station (hash mismatch)"),
        other => bail!("a tampered chunk was not refused: {other:?}"),
    }
    // A relay replays catalog v0: refused as a rollback.
    let old: Signed<Catalog> = origin
        .online
        .sign(Catalog::new(0, now(), now().plus_secs(86_400), vec![])?);
    match trust.accept_catalog(old, now()) {
        Err(e @ TrustError::Rollback { .. }) => println!("[relay✗]  old catalog refused: {e}"),
        other => bail!("a rolled-back catalog was not refused: {other:?}"),
    }
    // A relay signs its own catalog with its own root: refused as foreign.
    let rogue_root = RootKey::from_seed(random_seed());
    let rogue_seed = random_seed();
    let d = rogue_root.delegate(
        OnlineKey::public_for_seed(rogue_seed),
        "rogue",
        now(),
        now().plus_secs(86_400),
    );
    let rogue = OnlineKey::new(rogue_seed, d).context("rogue key")?;
    let forged = rogue.sign(Catalog::new(99, now(), now().plus_secs(86_400), vec![])?);
    match trust.accept_catalog(forged, now()) {
        Err(TrustError::UnknownKey { .. }) => {
            println!(
                "[relay✗]  catalog from a foreign root refused (this deployment's root is {})",
                root.public()
            )
        }
        other => bail!("a foreign catalog was not refused: {other:?}"),
    }
    Ok(())
}

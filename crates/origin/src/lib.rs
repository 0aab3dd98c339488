//! The origin node: the top of the tree.
//!
//! It holds every published chunk (pinned as origin-owned: the only copy), keeps the catalog,
//! signs a new catalog version with its online key on every publication, and serves its
//! children (city relays, or stations directly in a small deployment) with the shared
//! [`courseway_node::NodeService`] machinery. New catalogs are pushed down subscriptions.
//!
//! Ingest through GStreamer, the review workflow and the admin API come with the ingest issue
//! (#4); today lessons are published from their manifest and chunk bytes (the demo publishes
//! synthetic courseware).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use courseway_content::encoding::Encode;
use courseway_content::{Catalog, CatalogEntry, ChunkId, LessonId, LessonManifest, NodeName, OnlineKey, Signed};
use courseway_net::{Enrollment, IncomingRequest, NetError, Server, TransportConfig};
use courseway_node::{clock, persist, reply_error, send_stored_chunk, serve_connection, store_io, NodeService};
use courseway_proto::{Announcement, ErrorCode, ErrorReply, GetChunk, Role, Welcome};
use courseway_store::{Durability, PinReason, Store, StoreConfig, StoreError};
use parking_lot::{Mutex, RwLock};
use tokio::sync::broadcast;

/// How an origin runs.
#[derive(Debug, Clone)]
pub struct OriginConfig {
    pub name: NodeName,
    /// Where children connect (UDP).
    pub listen: SocketAddr,
    pub store: StoreConfig,
    pub transport: TransportConfig,
    /// How long a signed catalog stays valid; stations refuse it after that (freeze protection).
    pub catalog_validity: Duration,
}

/// What went wrong at the origin.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Persist(#[from] persist::PersistError),
    #[error(
        "lesson {lesson} references chunk {chunk}, but its bytes were not given; publish every chunk with its manifest"
    )]
    MissingChunk { lesson: LessonId, chunk: ChunkId },
}

/// Counters of what the origin sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginStats {
    pub catalog_version: u64,
    /// Chunk body bytes sent to children.
    pub chunk_bytes_sent: u64,
    /// Chunk requests a child made for a chunk it had already been sent in full.
    pub duplicate_chunk_sends: u64,
    /// Manifests sent to children.
    pub manifests_sent: u64,
}

struct Service {
    name: NodeName,
    store: Arc<Store>,
    signer: OnlineKey,
    catalog_validity: Duration,
    catalog: RwLock<Option<Arc<Signed<Catalog>>>>,
    publish_lock: Mutex<()>,
    announce: broadcast::Sender<Announcement>,
    chunk_bytes_sent: AtomicU64,
    sent_to: Mutex<HashSet<(NodeName, ChunkId)>>,
    duplicate_chunk_sends: AtomicU64,
    manifests_sent: AtomicU64,
}

/// A running origin.
pub struct Origin {
    service: Arc<Service>,
    server: Arc<Server>,
    accept: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("name", &self.service.name)
            .finish_non_exhaustive()
    }
}

fn manifest_key(hash: &ChunkId) -> Vec<u8> {
    format!("manifest/{hash}").into_bytes()
}

impl Origin {
    /// Opens the store, restores the last catalog, and starts serving.
    pub async fn start(config: OriginConfig, enrollment: Enrollment, signer: OnlineKey) -> Result<Self, OriginError> {
        let store = Arc::new(Store::open(config.store)?);
        let trust = persist::load_trust(&store, signer.delegation().root)?;
        let catalog = trust.catalog().cloned().map(Arc::new);
        let (announce, _) = broadcast::channel(64);
        let service = Arc::new(Service {
            name: config.name,
            store,
            signer,
            catalog_validity: config.catalog_validity,
            catalog: RwLock::new(catalog),
            publish_lock: Mutex::new(()),
            announce,
            chunk_bytes_sent: AtomicU64::new(0),
            sent_to: Mutex::new(HashSet::new()),
            duplicate_chunk_sends: AtomicU64::new(0),
            manifests_sent: AtomicU64::new(0),
        });
        let server = Arc::new(Server::bind(enrollment, &config.transport, config.listen)?);
        let accept = {
            let (server, service) = (server.clone(), service.clone());
            tokio::spawn(async move { server.serve(move |conn| serve_connection(service.clone(), conn)).await })
        };
        Ok(Self {
            service,
            server,
            accept,
        })
    }

    /// Where children connect.
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.server.local_addr()
    }

    /// The current catalog.
    pub fn catalog(&self) -> Option<Arc<Signed<Catalog>>> {
        self.service.catalog.read().clone()
    }

    /// What the origin has sent.
    pub fn stats(&self) -> OriginStats {
        OriginStats {
            catalog_version: self.catalog().map(|c| c.body.version).unwrap_or(0),
            chunk_bytes_sent: self.service.chunk_bytes_sent.load(Ordering::Relaxed),
            duplicate_chunk_sends: self.service.duplicate_chunk_sends.load(Ordering::Relaxed),
            manifests_sent: self.service.manifests_sent.load(Ordering::Relaxed),
        }
    }

    /// Publishes lessons: stores their chunks (pinned) and manifests, then signs and announces
    /// the next catalog version. Returns that version.
    pub fn publish(&self, lessons: &[(LessonManifest, &BTreeMap<ChunkId, Vec<u8>>)]) -> Result<u64, OriginError> {
        let s = &self.service;
        let _one_publication_at_a_time = s.publish_lock.lock();
        for (manifest, chunks) in lessons {
            let refs = manifest.chunk_refs();
            if let Some(missing) = refs.iter().find(|r| !chunks.contains_key(&r.id)) {
                return Err(OriginError::MissingChunk {
                    lesson: manifest.id.clone(),
                    chunk: missing.id,
                });
            }
            let ids: Vec<ChunkId> = refs.iter().map(|r| r.id).collect();
            s.store.pin(&ids, PinReason::OriginOwned, manifest.id.as_str())?;
            for r in &refs {
                s.store.put(r.id, &chunks[&r.id])?;
            }
            s.store.put_meta(
                &manifest_key(&manifest.hash()),
                &manifest.to_bytes(),
                Durability::Synced,
            )?;
        }
        let previous = s.catalog.read().clone();
        let mut entries: BTreeMap<LessonId, CatalogEntry> = previous
            .iter()
            .flat_map(|c| c.body.entries().iter().cloned())
            .map(|e| (e.lesson.clone(), e))
            .collect();
        for (manifest, _) in lessons {
            let bytes = manifest.to_bytes();
            entries.insert(
                manifest.id.clone(),
                CatalogEntry {
                    lesson: manifest.id.clone(),
                    manifest: manifest.hash(),
                    manifest_size: bytes.len() as u32,
                    content_size: manifest.content_size(),
                },
            );
        }
        let version = previous.map(|c| c.body.version).unwrap_or(0) + 1;
        let now = clock::now();
        let catalog = Catalog::new(
            version,
            now,
            now.plus_secs(s.catalog_validity.as_secs()),
            entries.into_values().collect(),
        )
        .expect("entries are keyed by lesson id, so none repeats");
        let signed = s.signer.sign(catalog);
        persist::save_catalog(&s.store, &signed)?;
        *s.catalog.write() = Some(Arc::new(signed.clone()));
        // No subscriber is not an error: children fetch the catalog when they connect.
        let _ = s.announce.send(Announcement::Catalog(Box::new(signed)));
        tracing::info!(version, lessons = lessons.len(), "published");
        Ok(version)
    }

    /// Stops accepting and closes every connection.
    pub fn shutdown(&self) {
        self.server.close();
        self.accept.abort();
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl NodeService for Service {
    fn welcome(&self) -> Welcome {
        Welcome {
            node: self.name.clone(),
            role: Role::Origin,
            software: concat!("courseway ", env!("CARGO_PKG_VERSION")).into(),
        }
    }

    async fn serve_chunk(&self, req: &mut IncomingRequest, get: GetChunk) -> Result<(), NetError> {
        let size = self.store.size_of(&get.id);
        if !send_stored_chunk(&self.store, req, get, &[]).await? {
            return reply_error(
                req,
                ErrorCode::NotFound,
                format!("chunk {} is not published here", get.id),
            )
            .await;
        }
        if let Some(size) = size {
            self.chunk_bytes_sent
                .fetch_add(u64::from(size.saturating_sub(get.offset)), Ordering::Relaxed);
            if get.offset == 0 && !self.sent_to.lock().insert((req.peer.name.clone(), get.id)) {
                self.duplicate_chunk_sends.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    async fn manifest(&self, hash: ChunkId) -> Result<Vec<u8>, ErrorReply> {
        match store_io(&self.store, move |s| s.get_meta(&manifest_key(&hash))).await {
            Ok(Some(bytes)) => {
                self.manifests_sent.fetch_add(1, Ordering::Relaxed);
                Ok(bytes)
            }
            Ok(None) => Err(ErrorReply::new(
                ErrorCode::NotFound,
                format!("no manifest {hash} is published here"),
            )),
            Err(e) => Err(ErrorReply::new(ErrorCode::Internal, e.to_string())),
        }
    }

    fn catalog(&self) -> Option<Arc<Signed<Catalog>>> {
        self.catalog.read().clone()
    }

    fn announcements(&self) -> broadcast::Receiver<Announcement> {
        self.announce.subscribe()
    }
}

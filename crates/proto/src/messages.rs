//! The messages: requests a client sends and responses a server sends.

use courseway_content::catalog::Catalog;
use courseway_content::encoding::{
    put_bytes, put_seq, put_str, put_u16, put_u32, put_u64, put_u8, Decode, DecodeError, Decoder, Encode,
};
use courseway_content::lesson::MAX_MANIFEST_SIZE;
use courseway_content::live::LiveSegment;
use courseway_content::schedule::Schedule;
use courseway_content::signing::Signed;
use courseway_content::{AreaName, ChannelId, ChunkId, LessonId, NodeName, UnixTime};

use crate::error_code::ErrorCode;

/// Longest software version string.
pub const MAX_SOFTWARE_LEN: usize = 64;
/// Most topics in one subscription.
pub const MAX_TOPICS: usize = 256;
/// Most viewing records in one report.
pub const MAX_VIEWINGS: usize = 10_000;
/// Longest error message.
pub const MAX_ERROR_MESSAGE: usize = 1024;

/// What a node is in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Origin,
    Relay,
    Station,
    /// An operator's CLI talking to a node.
    Operator,
}

impl Encode for Role {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u8(
            out,
            match self {
                Role::Origin => 1,
                Role::Relay => 2,
                Role::Station => 3,
                Role::Operator => 4,
            },
        );
    }
}

impl Decode for Role {
    const WHAT: &'static str = "role";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        match d.u8("role")? {
            1 => Ok(Role::Origin),
            2 => Ok(Role::Relay),
            3 => Ok(Role::Station),
            4 => Ok(Role::Operator),
            tag => Err(DecodeError::InvalidTag { field: "role", tag }),
        }
    }
}

/// The first request on a connection: who the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub node: NodeName,
    pub role: Role,
    /// The client's software version, e.g. `courseway 0.1.0`.
    pub software: String,
}

/// The answer to [`Hello`]: who the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub node: NodeName,
    pub role: Role,
    pub software: String,
}

macro_rules! node_intro_codec {
    ($ty:ident, $what:literal) => {
        impl Encode for $ty {
            fn encode(&self, out: &mut Vec<u8>) {
                self.node.encode(out);
                self.role.encode(out);
                put_str(out, &self.software);
            }
        }
        impl Decode for $ty {
            const WHAT: &'static str = $what;
            fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
                Ok(Self {
                    node: NodeName::decode(d)?,
                    role: Role::decode(d)?,
                    software: d.str("software version", MAX_SOFTWARE_LEN)?,
                })
            }
        }
    };
}
node_intro_codec!(Hello, "hello");
node_intro_codec!(Welcome, "welcome");

/// Asks for a chunk's bytes from `offset` on (non-zero to resume after a cut).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetChunk {
    pub id: ChunkId,
    pub offset: u32,
}

impl Encode for GetChunk {
    fn encode(&self, out: &mut Vec<u8>) {
        self.id.encode(out);
        put_u32(out, self.offset);
    }
}

impl Decode for GetChunk {
    const WHAT: &'static str = "chunk request";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            id: ChunkId::decode(d)?,
            offset: d.u32("offset")?,
        })
    }
}

/// Precedes a chunk's bytes: `size - offset` raw bytes follow the frame on the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    pub id: ChunkId,
    /// The whole chunk's size.
    pub size: u32,
    /// Where the bytes that follow start.
    pub offset: u32,
}

impl ChunkHeader {
    /// How many body bytes follow the frame.
    pub fn body_len(&self) -> u32 {
        self.size - self.offset
    }
}

impl Encode for ChunkHeader {
    fn encode(&self, out: &mut Vec<u8>) {
        self.id.encode(out);
        put_u32(out, self.size);
        put_u32(out, self.offset);
    }
}

impl Decode for ChunkHeader {
    const WHAT: &'static str = "chunk header";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let header = Self {
            id: ChunkId::decode(d)?,
            size: d.u32("chunk size")?,
            offset: d.u32("offset")?,
        };
        if header.size as usize > courseway_content::MAX_CHUNK_SIZE {
            return Err(DecodeError::TooLong {
                field: "chunk size",
                len: header.size as usize,
                max: courseway_content::MAX_CHUNK_SIZE,
            });
        }
        if header.offset > header.size {
            return Err(DecodeError::Invalid {
                field: "offset",
                reason: "offset is beyond the end of the chunk",
            });
        }
        Ok(header)
    }
}

/// Asks for a manifest by the hash the catalog lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetManifest {
    pub hash: ChunkId,
}

impl Encode for GetManifest {
    fn encode(&self, out: &mut Vec<u8>) {
        self.hash.encode(out);
    }
}

impl Decode for GetManifest {
    const WHAT: &'static str = "manifest request";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            hash: ChunkId::decode(d)?,
        })
    }
}

/// A manifest's canonical bytes, exactly as hashed, so the receiver checks what it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestReply {
    pub bytes: Vec<u8>,
}

impl Encode for ManifestReply {
    fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, &self.bytes);
    }
}

impl Decode for ManifestReply {
    const WHAT: &'static str = "manifest";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            bytes: d.bytes("manifest", MAX_MANIFEST_SIZE)?.to_vec(),
        })
    }
}

/// Asks for the catalog if it is newer than `since` (0 for any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetCatalog {
    pub since: u64,
}

impl Encode for GetCatalog {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.since);
    }
}

impl Decode for GetCatalog {
    const WHAT: &'static str = "catalog request";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self { since: d.u64("since")? })
    }
}

/// The answer to [`GetCatalog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogReply {
    /// The server's current catalog, newer than `since`.
    Current(Box<Signed<Catalog>>),
    /// The server has nothing newer than `since`; its version is given.
    NotModified { version: u64 },
}

impl Encode for CatalogReply {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            CatalogReply::Current(c) => {
                put_u8(out, 1);
                c.encode(out);
            }
            CatalogReply::NotModified { version } => {
                put_u8(out, 2);
                put_u64(out, *version);
            }
        }
    }
}

impl Decode for CatalogReply {
    const WHAT: &'static str = "catalog reply";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        match d.u8("catalog reply")? {
            1 => Ok(CatalogReply::Current(Box::new(Signed::decode(d)?))),
            2 => Ok(CatalogReply::NotModified {
                version: d.u64("catalog version")?,
            }),
            tag => Err(DecodeError::InvalidTag {
                field: "catalog reply",
                tag,
            }),
        }
    }
}

/// What a subscriber wants announced.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    Catalog,
    Schedule,
    Live(ChannelId),
}

impl Encode for Topic {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Topic::Catalog => put_u8(out, 1),
            Topic::Schedule => put_u8(out, 2),
            Topic::Live(c) => {
                put_u8(out, 3);
                c.encode(out);
            }
        }
    }
}

impl Decode for Topic {
    const WHAT: &'static str = "topic";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        match d.u8("topic")? {
            1 => Ok(Topic::Catalog),
            2 => Ok(Topic::Schedule),
            3 => ChannelId::decode(d).map(Topic::Live),
            tag => Err(DecodeError::InvalidTag { field: "topic", tag }),
        }
    }
}

/// Opens a long-lived stream of announcements on the given topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub topics: Vec<Topic>,
}

impl Encode for Subscribe {
    fn encode(&self, out: &mut Vec<u8>) {
        put_seq(out, &self.topics);
    }
}

impl Decode for Subscribe {
    const WHAT: &'static str = "subscription";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            topics: d.seq("topics", MAX_TOPICS)?,
        })
    }
}

/// One signed object pushed down a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    Catalog(Box<Signed<Catalog>>),
    Schedule(Box<Signed<Schedule>>),
    Live(Box<Signed<LiveSegment>>),
}

impl Encode for Announcement {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Announcement::Catalog(c) => {
                put_u8(out, 1);
                c.encode(out);
            }
            Announcement::Schedule(s) => {
                put_u8(out, 2);
                s.encode(out);
            }
            Announcement::Live(l) => {
                put_u8(out, 3);
                l.encode(out);
            }
        }
    }
}

impl Decode for Announcement {
    const WHAT: &'static str = "announcement";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        match d.u8("announcement")? {
            1 => Ok(Announcement::Catalog(Box::new(Signed::decode(d)?))),
            2 => Ok(Announcement::Schedule(Box::new(Signed::decode(d)?))),
            3 => Ok(Announcement::Live(Box::new(Signed::decode(d)?))),
            tag => Err(DecodeError::InvalidTag {
                field: "announcement",
                tag,
            }),
        }
    }
}

/// A report's idempotency key: the receiver stores a report once however often it is resent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReportId(pub [u8; 16]);

impl Encode for ReportId {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

impl Decode for ReportId {
    const WHAT: &'static str = "report id";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        d.array("report id").map(Self)
    }
}

/// One playback of a lesson at a station.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewing {
    pub lesson: LessonId,
    pub rendition: String,
    pub started_at: UnixTime,
    pub seconds_watched: u32,
    /// The playing device as the station saw it, e.g. `set-top-box 192.168.1.20`.
    pub device: String,
    /// People present, as the station admin entered it for the showing.
    pub attendance: Option<u32>,
}

impl Encode for Viewing {
    fn encode(&self, out: &mut Vec<u8>) {
        self.lesson.encode(out);
        put_str(out, &self.rendition);
        self.started_at.encode(out);
        put_u32(out, self.seconds_watched);
        put_str(out, &self.device);
        match self.attendance {
            None => put_u8(out, 0),
            Some(n) => {
                put_u8(out, 1);
                put_u32(out, n);
            }
        }
    }
}

impl Decode for Viewing {
    const WHAT: &'static str = "viewing record";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            lesson: LessonId::decode(d)?,
            rendition: d.str("rendition name", 32)?,
            started_at: UnixTime::decode(d)?,
            seconds_watched: d.u32("seconds watched")?,
            device: d.str("device", 128)?,
            attendance: match d.u8("attendance")? {
                0 => None,
                1 => Some(d.u32("attendance")?),
                tag => {
                    return Err(DecodeError::InvalidTag {
                        field: "attendance",
                        tag,
                    })
                }
            },
        })
    }
}

/// Most lessons listed in one health report (at-risk ones first, then downloading, then ready).
pub const MAX_HEALTH_LESSONS: usize = 512;
/// Longest at-risk reason.
pub const MAX_REASON_LEN: usize = 256;

/// Where one lesson stands at a station.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LessonState {
    /// Held complete and verified.
    Ready,
    /// Being fetched, expected in time for its showing (if it has one).
    Downloading,
    /// Will not be ready by its showing minus the station's margin.
    AtRisk,
}

impl Encode for LessonState {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u8(
            out,
            match self {
                LessonState::Ready => 1,
                LessonState::Downloading => 2,
                LessonState::AtRisk => 3,
            },
        );
    }
}

impl Decode for LessonState {
    const WHAT: &'static str = "lesson state";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        match d.u8("lesson state")? {
            1 => Ok(LessonState::Ready),
            2 => Ok(LessonState::Downloading),
            3 => Ok(LessonState::AtRisk),
            tag => Err(DecodeError::InvalidTag {
                field: "lesson state",
                tag,
            }),
        }
    }
}

/// One lesson in a station's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LessonStatus {
    pub lesson: LessonId,
    pub state: LessonState,
    /// Its next showing at this station, if one is scheduled.
    pub showing: Option<UnixTime>,
    /// When the planner expects it complete (None: not within the planner's horizon).
    pub estimated_ready: Option<UnixTime>,
    pub remaining_bytes: u64,
    /// Why it is at risk, for the operator (empty unless at risk).
    pub reason: String,
}

impl Encode for LessonStatus {
    fn encode(&self, out: &mut Vec<u8>) {
        self.lesson.encode(out);
        self.state.encode(out);
        self.showing.encode(out);
        self.estimated_ready.encode(out);
        put_u64(out, self.remaining_bytes);
        put_str(out, &self.reason);
    }
}

impl Decode for LessonStatus {
    const WHAT: &'static str = "lesson status";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            lesson: LessonId::decode(d)?,
            state: LessonState::decode(d)?,
            showing: Option::<UnixTime>::decode(d)?,
            estimated_ready: Option::<UnixTime>::decode(d)?,
            remaining_bytes: d.u64("remaining bytes")?,
            reason: d.str("at-risk reason", MAX_REASON_LEN)?,
        })
    }
}

/// A station's health at the time of a report (its heartbeat and inventory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub disk_free: u64,
    pub disk_total: u64,
    pub lessons_ready: u32,
    pub lessons_at_risk: u32,
    pub last_sync: Option<UnixTime>,
    pub software: String,
    /// Where the station is, as configured (for the fleet view and the monthly report).
    pub district: Option<AreaName>,
    pub town: Option<AreaName>,
    /// The catalog version it holds (0: none yet).
    pub catalog_version: u64,
    /// Measured download goodput at a full share of the line, bytes per second.
    pub goodput: Option<u64>,
    /// Lessons wanted here: at risk first, then downloading, then ready (at most
    /// [`MAX_HEALTH_LESSONS`]; `lessons_ready` and `lessons_at_risk` count them all).
    pub lessons: Vec<LessonStatus>,
}

impl Encode for Health {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.disk_free);
        put_u64(out, self.disk_total);
        put_u32(out, self.lessons_ready);
        put_u32(out, self.lessons_at_risk);
        self.last_sync.encode(out);
        put_str(out, &self.software);
        self.district.encode(out);
        self.town.encode(out);
        put_u64(out, self.catalog_version);
        match self.goodput {
            None => put_u8(out, 0),
            Some(g) => {
                put_u8(out, 1);
                put_u64(out, g);
            }
        }
        put_seq(out, &self.lessons);
    }
}

impl Decode for Health {
    const WHAT: &'static str = "health";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            disk_free: d.u64("disk free")?,
            disk_total: d.u64("disk total")?,
            lessons_ready: d.u32("lessons ready")?,
            lessons_at_risk: d.u32("lessons at risk")?,
            last_sync: Option::<UnixTime>::decode(d)?,
            software: d.str("software version", MAX_SOFTWARE_LEN)?,
            district: Option::<AreaName>::decode(d)?,
            town: Option::<AreaName>::decode(d)?,
            catalog_version: d.u64("catalog version")?,
            goodput: match d.u8("goodput")? {
                0 => None,
                1 => Some(d.u64("goodput")?),
                tag => return Err(DecodeError::InvalidTag { field: "goodput", tag }),
            },
            lessons: d.seq("lessons", MAX_HEALTH_LESSONS)?,
        })
    }
}

/// A station's viewing records and health, sent upstream until acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub id: ReportId,
    pub station: NodeName,
    pub created_at: UnixTime,
    pub viewings: Vec<Viewing>,
    pub health: Option<Health>,
}

impl Encode for Report {
    fn encode(&self, out: &mut Vec<u8>) {
        self.id.encode(out);
        self.station.encode(out);
        self.created_at.encode(out);
        put_seq(out, &self.viewings);
        self.health.encode(out);
    }
}

impl Decode for Report {
    const WHAT: &'static str = "report";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            id: ReportId::decode(d)?,
            station: NodeName::decode(d)?,
            created_at: UnixTime::decode(d)?,
            viewings: d.seq("viewings", MAX_VIEWINGS)?,
            health: Option::<Health>::decode(d)?,
        })
    }
}

/// Confirms that a report was durably written at the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportAck {
    pub id: ReportId,
}

impl Encode for ReportAck {
    fn encode(&self, out: &mut Vec<u8>) {
        self.id.encode(out);
    }
}

impl Decode for ReportAck {
    const WHAT: &'static str = "report acknowledgement";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            id: ReportId::decode(d)?,
        })
    }
}

/// A failed request: a code and a message for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorReply {
    /// An error reply, with the message cut to the wire limit on a character boundary.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_ERROR_MESSAGE {
            let mut end = MAX_ERROR_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Self { code, message }
    }
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl Encode for ErrorReply {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u16(out, self.code.to_u16());
        put_str(out, &self.message);
    }
}

impl Decode for ErrorReply {
    const WHAT: &'static str = "error";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            code: ErrorCode::from_u16(d.u16("error code")?),
            message: d.str("error message", MAX_ERROR_MESSAGE)?,
        })
    }
}

/// A request frame's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Hello(Hello),
    GetChunk(GetChunk),
    GetManifest(GetManifest),
    GetCatalog(GetCatalog),
    Subscribe(Subscribe),
    Report(Box<Report>),
}

/// A response frame's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Welcome(Welcome),
    Chunk(ChunkHeader),
    Manifest(ManifestReply),
    Catalog(CatalogReply),
    Announce(Announcement),
    ReportAck(ReportAck),
    Error(ErrorReply),
}

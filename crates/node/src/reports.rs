//! What every role shares about station reports: who may send one, how a report id is made,
//! and sending one up to the parents.
//!
//! A report travels station → relays → origin and is acknowledged end to end: a relay answers
//! its child only once its own parent acknowledged, and the origin only once the report is
//! written (synced). The station keeps the report until then, so the station's outbox is the
//! only durable queue below the origin, and the origin's store, keyed by report id, makes a
//! resend harmless.

use courseway_content::encoding::Encode;
use courseway_content::ChunkId;
use courseway_net::PeerIdentity;
use courseway_proto::{ErrorCode, ErrorReply, Report, ReportId, Request, Response, Role};

use crate::upstream::{Upstream, UpstreamError};

/// Whether `peer` may hand this node `report`: stations and relays only, and a station only
/// its own (the report's `station` must be the name in the peer's certificate). A relay passes
/// on its stations' reports, so its own name is not checked against them.
pub fn check_reporter(peer: &PeerIdentity, report: &Report) -> Result<(), ErrorReply> {
    match peer.role {
        Role::Station if peer.name == report.station => Ok(()),
        Role::Station => Err(ErrorReply::new(
            ErrorCode::Unauthorized,
            format!(
                "station {} sent a report for station {}: a station reports only for itself (the name in its \
                 certificate)",
                peer.name, report.station
            ),
        )),
        Role::Relay => Ok(()),
        Role::Origin | Role::Operator => Err(ErrorReply::new(
            ErrorCode::Unauthorized,
            format!("{peer} may not send reports: only stations and the relays above them do"),
        )),
    }
}

/// A report id derived from `parts` (BLAKE3, first 16 bytes): the same parts always give the
/// same id, so a report rebuilt after a restart is the same report to the origin.
pub fn report_id(parts: &[&[u8]]) -> ReportId {
    let mut all = b"courseway report id v1".to_vec();
    for p in parts {
        all.extend_from_slice(&(p.len() as u64).to_be_bytes());
        all.extend_from_slice(p);
    }
    let hash = ChunkId::of(&all);
    let mut id = [0u8; 16];
    id.copy_from_slice(&hash.as_bytes()[..16]);
    ReportId(id)
}

/// The encoded size of a report's request frame payload (to keep it under the frame limit).
pub fn encoded_len(report: &Report) -> usize {
    let mut out = Vec::new();
    report.encode(&mut out);
    out.len()
}

/// Why a report could not be sent up.
#[derive(Debug, thiserror::Error)]
pub enum SendReportError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("a parent acknowledged report {got:02x?} when report {sent:02x?} was sent; it will be sent again")]
    WrongAck { sent: ReportId, got: ReportId },
}

impl SendReportError {
    /// How a relay passes this failure down: the child keeps its report and sends it again.
    pub fn to_reply(&self) -> ErrorReply {
        match self {
            SendReportError::Upstream(UpstreamError::Refused(reply)) => reply.clone(),
            other => ErrorReply::new(ErrorCode::UpstreamUnavailable, other.to_string()),
        }
    }
}

/// Sends `report` to the best parent (failing over like any request) and waits for its
/// acknowledgement, which comes only once the origin has written it.
pub async fn send_report(upstream: &Upstream, report: Report) -> Result<(), SendReportError> {
    let sent = report.id;
    match upstream.request(&Request::Report(Box::new(report))).await? {
        (_, Response::ReportAck(ack), _) if ack.id == sent => Ok(()),
        (_, Response::ReportAck(ack), _) => Err(SendReportError::WrongAck { sent, got: ack.id }),
        (_, other, _) => Err(SendReportError::Upstream(UpstreamError::Unexpected {
            request: "report",
            got: format!("{other:?}").chars().take(60).collect(),
        })),
    }
}

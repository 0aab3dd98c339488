//! Codec properties: round trips for arbitrary values, and no panic on arbitrary bytes.

use courseway_content::strategies as cs;
use courseway_content::ChunkId;
use courseway_proto::*;
use proptest::collection::vec;
use proptest::prelude::*;

fn hello() -> impl Strategy<Value = Hello> {
    (cs::node_name(), role(), "[ -~]{0,64}").prop_map(|(node, role, software)| Hello { node, role, software })
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![
        Just(Role::Origin),
        Just(Role::Relay),
        Just(Role::Station),
        Just(Role::Operator)
    ]
}

fn report() -> impl Strategy<Value = Report> {
    let viewing = (
        cs::lesson_id(),
        "[a-z0-9]{1,8}",
        cs::unix_time(),
        any::<u32>(),
        "\\PC{0,20}",
        proptest::option::of(any::<u32>()),
    )
        .prop_map(
            |(lesson, rendition, started_at, seconds_watched, device, attendance)| Viewing {
                lesson,
                rendition,
                started_at,
                seconds_watched,
                device,
                attendance,
            },
        );
    let lesson_status = (
        cs::lesson_id(),
        prop_oneof![
            Just(LessonState::Ready),
            Just(LessonState::Downloading),
            Just(LessonState::AtRisk)
        ],
        proptest::option::of(cs::unix_time()),
        proptest::option::of(cs::unix_time()),
        any::<u64>(),
        "\\PC{0,40}",
    )
        .prop_map(
            |(lesson, state, showing, estimated_ready, remaining_bytes, reason)| LessonStatus {
                lesson,
                state,
                showing,
                estimated_ready,
                remaining_bytes,
                reason,
            },
        );
    let health = (
        (
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            proptest::option::of(cs::unix_time()),
        ),
        (
            proptest::option::of(cs::area_name()),
            proptest::option::of(cs::area_name()),
            any::<u64>(),
            proptest::option::of(any::<u64>()),
            vec(lesson_status, 0..4),
        ),
    )
        .prop_map(
            |(
                (disk_free, disk_total, lessons_ready, lessons_at_risk, last_sync),
                (district, town, catalog_version, goodput, lessons),
            )| Health {
                disk_free,
                disk_total,
                lessons_ready,
                lessons_at_risk,
                last_sync,
                software: "courseway 0.1.0".into(),
                district,
                town,
                catalog_version,
                goodput,
                lessons,
            },
        );
    (
        any::<[u8; 16]>(),
        cs::node_name(),
        cs::unix_time(),
        vec(viewing, 0..5),
        proptest::option::of(health),
    )
        .prop_map(|(id, station, created_at, viewings, health)| Report {
            id: ReportId(id),
            station,
            created_at,
            viewings,
            health,
        })
}

fn topic() -> impl Strategy<Value = Topic> {
    prop_oneof![
        Just(Topic::Catalog),
        Just(Topic::Schedule),
        cs::channel_id().prop_map(Topic::Live)
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        hello().prop_map(Request::Hello),
        (cs::chunk_id(), any::<u32>()).prop_map(|(id, offset)| Request::GetChunk(GetChunk { id, offset })),
        cs::chunk_id().prop_map(|hash| Request::GetManifest(GetManifest { hash })),
        any::<u64>().prop_map(|since| Request::GetCatalog(GetCatalog { since })),
        vec(topic(), 0..6).prop_map(|topics| Request::Subscribe(Subscribe { topics })),
        report().prop_map(|r| Request::Report(Box::new(r))),
    ]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    any::<u16>().prop_map(ErrorCode::from_u16)
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        hello().prop_map(|h| Response::Welcome(Welcome {
            node: h.node,
            role: h.role,
            software: h.software
        })),
        (cs::chunk_id(), 0u32..=1 << 20)
            .prop_flat_map(|(id, size)| (Just(id), Just(size), 0..=size))
            .prop_map(|(id, size, offset)| Response::Chunk(ChunkHeader { id, size, offset })),
        vec(any::<u8>(), 0..512).prop_map(|bytes| Response::Manifest(ManifestReply { bytes })),
        cs::signed(cs::catalog()).prop_map(|c| Response::Catalog(CatalogReply::Current(Box::new(c)))),
        any::<u64>().prop_map(|version| Response::Catalog(CatalogReply::NotModified { version })),
        cs::signed(cs::catalog()).prop_map(|c| Response::Announce(Announcement::Catalog(Box::new(c)))),
        cs::signed(cs::schedule()).prop_map(|s| Response::Announce(Announcement::Schedule(Box::new(s)))),
        cs::signed(cs::live_segment()).prop_map(|l| Response::Announce(Announcement::Live(Box::new(l)))),
        any::<[u8; 16]>().prop_map(|id| Response::ReportAck(ReportAck { id: ReportId(id) })),
        (error_code(), "\\PC{0,100}").prop_map(|(code, message)| Response::Error(ErrorReply::new(code, message))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn request_round_trip(req in request()) {
        let mut buf = Vec::new();
        encode_request(&req, &mut buf).unwrap();
        let (decoded, used) = try_decode_request(&buf).unwrap().unwrap();
        prop_assert_eq!(used, buf.len());
        prop_assert_eq!(decoded, req);
    }

    #[test]
    fn response_round_trip(resp in response()) {
        let mut buf = Vec::new();
        encode_response(&resp, &mut buf).unwrap();
        let (decoded, used) = try_decode_response(&buf).unwrap().unwrap();
        prop_assert_eq!(used, buf.len());
        prop_assert_eq!(decoded, resp);
    }

    #[test]
    fn every_prefix_of_a_frame_asks_for_more(req in request(), cut in any::<prop::sample::Index>()) {
        let mut buf = Vec::new();
        encode_request(&req, &mut buf).unwrap();
        let cut = cut.index(buf.len());
        prop_assert_eq!(try_decode_request(&buf[..cut]), Ok(None));
    }

    #[test]
    fn decoding_is_canonical(resp in response()) {
        // Whatever decodes re-encodes to the same bytes: one value, one encoding.
        let mut buf = Vec::new();
        encode_response(&resp, &mut buf).unwrap();
        let (decoded, _) = try_decode_response(&buf).unwrap().unwrap();
        let mut again = Vec::new();
        encode_response(&decoded, &mut again).unwrap();
        prop_assert_eq!(again, buf);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..2048)) {
        let _ = try_decode_request(&bytes);
        let _ = try_decode_response(&bytes);
    }

    #[test]
    fn arbitrary_payloads_with_valid_headers_never_panic(kind in any::<u8>(), body in vec(any::<u8>(), 0..1024)) {
        // Valid header, random payload: exercises every payload decoder, not just header checks.
        let mut buf = vec![PROTOCOL_VERSION, kind];
        buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
        buf.extend_from_slice(&body);
        let _ = try_decode_request(&buf);
        let _ = try_decode_response(&buf);
    }

    #[test]
    fn mutated_frames_never_panic_and_stay_canonical(resp in response(), flips in vec(any::<prop::sample::Index>(), 1..4)) {
        let mut buf = Vec::new();
        encode_response(&resp, &mut buf).unwrap();
        for f in flips {
            let i = f.index(buf.len() * 8);
            buf[i / 8] ^= 1 << (i % 8);
        }
        if let Ok(Some((decoded, used))) = try_decode_response(&buf) {
            let mut again = Vec::new();
            encode_response(&decoded, &mut again).unwrap();
            prop_assert_eq!(&again[..], &buf[..used]);
        }
    }
}

#[test]
fn oversized_length_is_refused_from_the_header_alone() {
    // A GetChunk frame claiming 4 GiB of payload: refused without waiting for or buffering it.
    let header = [PROTOCOL_VERSION, 0x02, 0xff, 0xff, 0xff, 0xff];
    let err = try_decode_request(&header).unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::TooLarge {
                kind: FrameKind::GetChunk,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.code(), ErrorCode::TooLarge);
}

#[test]
fn wrong_version_and_unknown_kind_are_refused() {
    let err = try_decode_request(&[2, 0x02, 0, 0, 0, 0]).unwrap_err();
    assert_eq!(err, FrameError::UnsupportedVersion { version: 2 });
    assert_eq!(err.code(), ErrorCode::UnsupportedVersion);
    assert_eq!(
        try_decode_request(&[1, 0x7e, 0, 0, 0, 0]).unwrap_err(),
        FrameError::UnknownKind { kind: 0x7e }
    );
}

#[test]
fn a_response_kind_is_not_a_request() {
    let mut buf = Vec::new();
    encode_response(&Response::ReportAck(ReportAck { id: ReportId([0; 16]) }), &mut buf).unwrap();
    let err = try_decode_request(&buf).unwrap_err();
    assert!(matches!(err, FrameError::UnexpectedKind { .. }));
}

#[test]
fn chunk_header_offset_beyond_size_is_malformed() {
    let mut buf = Vec::new();
    let bad = ChunkHeader {
        id: ChunkId::of(b"x"),
        size: 10,
        offset: 11,
    };
    encode_response(&Response::Chunk(bad), &mut buf).unwrap();
    assert!(matches!(try_decode_response(&buf), Err(FrameError::Malformed { .. })));
}

#[test]
fn a_report_over_the_record_limit_is_refused() {
    let viewing = Viewing {
        lesson: "l".parse().unwrap(),
        rendition: "r".into(),
        started_at: courseway_content::UnixTime(0),
        seconds_watched: 0,
        device: "d".repeat(128),
        attendance: None,
    };
    let mut report = Report {
        id: ReportId([0; 16]),
        station: "s".parse().unwrap(),
        created_at: courseway_content::UnixTime(0),
        viewings: vec![viewing; 10_000],
        health: None,
    };
    let mut buf = Vec::new();
    encode_request(&Request::Report(Box::new(report.clone())), &mut buf).unwrap();
    assert!(try_decode_request(&buf).unwrap().is_some());
    report.viewings.push(report.viewings[0].clone());
    let mut buf = Vec::new();
    encode_request(&Request::Report(Box::new(report)), &mut buf).unwrap();
    let err = try_decode_request(&buf).unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::Malformed {
                kind: FrameKind::Report,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn the_encoder_refuses_a_payload_over_its_kind_limit() {
    let reply = Response::Manifest(ManifestReply {
        bytes: vec![0; FrameKind::Manifest.max_payload() as usize],
    });
    let mut buf = vec![9, 9];
    let err = encode_response(&reply, &mut buf).unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::TooLarge {
                kind: FrameKind::Manifest,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(buf, vec![9, 9], "a refused frame leaves the buffer as it was");
}

/// The largest report the limits allow (every viewing and every health field at its longest)
/// still fits one report frame, so a station never has to split a report it was allowed to make.
#[test]
fn a_report_at_every_limit_fits_its_frame() {
    let long = |n: usize| "x".repeat(n);
    let lesson: courseway_content::LessonId = long(courseway_content::name::MAX_NAME_LEN).parse().unwrap();
    let viewing = Viewing {
        lesson: lesson.clone(),
        rendition: long(32),
        started_at: courseway_content::UnixTime(u64::MAX),
        seconds_watched: u32::MAX,
        device: long(128),
        attendance: Some(u32::MAX),
    };
    let area: courseway_content::AreaName = long(courseway_content::name::MAX_NAME_LEN).parse().unwrap();
    let health = Health {
        disk_free: u64::MAX,
        disk_total: u64::MAX,
        lessons_ready: u32::MAX,
        lessons_at_risk: u32::MAX,
        last_sync: Some(courseway_content::UnixTime(u64::MAX)),
        software: long(64),
        district: Some(area.clone()),
        town: Some(area),
        catalog_version: u64::MAX,
        goodput: Some(u64::MAX),
        lessons: vec![
            LessonStatus {
                lesson,
                state: LessonState::AtRisk,
                showing: Some(courseway_content::UnixTime(u64::MAX)),
                estimated_ready: Some(courseway_content::UnixTime(u64::MAX)),
                remaining_bytes: u64::MAX,
                reason: long(MAX_REASON_LEN),
            };
            MAX_HEALTH_LESSONS
        ],
    };
    let report = Report {
        id: ReportId([0xff; 16]),
        station: long(courseway_content::name::MAX_NAME_LEN).parse().unwrap(),
        created_at: courseway_content::UnixTime(u64::MAX),
        viewings: vec![viewing; MAX_VIEWINGS],
        health: Some(health),
    };
    let mut buf = Vec::new();
    encode_request(&Request::Report(Box::new(report.clone())), &mut buf).expect("fits its frame");
    let (decoded, used) = try_decode_request(&buf).unwrap().unwrap();
    assert_eq!(used, buf.len());
    assert_eq!(decoded, Request::Report(Box::new(report)));
    println!(
        "largest report: {} bytes of {} allowed",
        buf.len() - HEADER_LEN,
        FrameKind::Report.max_payload()
    );
}

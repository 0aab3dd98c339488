//! HLS playlists generated from a lesson manifest.
//!
//! The same text is served by a station on the LAN and written by `courseway media transcode`
//! beside the segments, so both use these two functions. Where the playlists point is the
//! caller's choice (`uri_for_rendition`, `uri_for_segment`): relative file names on disk, or a
//! station's URL scheme. No IO, no GStreamer: the text is built with m3u8-rs.
//!
//! - [`master_playlist`]: one `EXT-X-STREAM-INF` per rendition with `BANDWIDTH` (the manifest's
//!   peak bit rate), `AVERAGE-BANDWIDTH` (total segment bits over total duration), `CODECS` and,
//!   for video, `RESOLUTION`.
//! - [`media_playlist`]: a VOD playlist with `EXT-X-TARGETDURATION` (the longest segment,
//!   rounded to whole seconds), one `EXTINF` per segment and `EXT-X-ENDLIST`.

use courseway_content::{LessonManifest, Rendition, RenditionKind, Segment};
use m3u8_rs::{MasterPlaylist, MediaPlaylist, MediaPlaylistType, MediaSegment, Resolution, VariantStream};

/// HLS protocol version the playlists declare (3: decimal `EXTINF` durations).
pub const HLS_VERSION: usize = 3;

/// The master playlist of `manifest`: one variant stream per rendition, in manifest order.
pub fn master_playlist(manifest: &LessonManifest, uri_for_rendition: impl Fn(&Rendition) -> String) -> String {
    let playlist = MasterPlaylist {
        version: Some(HLS_VERSION),
        // Every segment starts on a key frame with its parameter sets (see crates/media).
        independent_segments: true,
        variants: manifest
            .renditions
            .iter()
            .map(|r| VariantStream {
                uri: uri_for_rendition(r),
                bandwidth: u64::from(r.bandwidth),
                average_bandwidth: average_bandwidth(r),
                codecs: Some(r.codecs.clone()),
                resolution: match r.kind {
                    RenditionKind::Video { width, height } => Some(Resolution {
                        width: u64::from(width),
                        height: u64::from(height),
                    }),
                    RenditionKind::Audio => None,
                },
                ..VariantStream::default()
            })
            .collect(),
        ..MasterPlaylist::default()
    };
    to_text(|out| playlist.write_to(out))
}

/// The VOD media playlist of `rendition`; `uri_for_segment` gets each segment's index and value.
pub fn media_playlist(rendition: &Rendition, uri_for_segment: impl Fn(usize, &Segment) -> String) -> String {
    let playlist = MediaPlaylist {
        version: Some(HLS_VERSION),
        target_duration: target_duration(rendition),
        media_sequence: 0,
        playlist_type: Some(MediaPlaylistType::Vod),
        independent_segments: true,
        end_list: true,
        segments: rendition
            .segments
            .iter()
            .enumerate()
            .map(|(i, s)| MediaSegment {
                uri: uri_for_segment(i, s),
                duration: s.duration_ms as f32 / 1000.0,
                ..MediaSegment::default()
            })
            .collect(),
        ..MediaPlaylist::default()
    };
    to_text(|out| playlist.write_to(out))
}

/// `EXT-X-TARGETDURATION`: the longest segment rounded to the nearest whole second (at least 1),
/// as RFC 8216 4.3.3.1 requires of every `EXTINF`.
pub fn target_duration(rendition: &Rendition) -> u64 {
    let longest_ms = rendition
        .segments
        .iter()
        .map(|s| u64::from(s.duration_ms))
        .max()
        .unwrap_or(0);
    ((longest_ms + 500) / 1000).max(1)
}

/// Total segment bits over total duration, or `None` for a rendition with no duration.
pub fn average_bandwidth(rendition: &Rendition) -> Option<u64> {
    let ms: u64 = rendition.segments.iter().map(|s| u64::from(s.duration_ms)).sum();
    (ms > 0).then(|| rendition.size() * 8 * 1000 / ms)
}

fn to_text(write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> String {
    let mut out = Vec::new();
    write(&mut out).expect("writing to a Vec cannot fail");
    String::from_utf8(out).expect("m3u8-rs writes UTF-8 when given UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use courseway_content::synthetic::SyntheticLesson;
    use courseway_content::LessonId;
    use m3u8_rs::{parse_master_playlist_res, parse_media_playlist_res};

    fn lesson() -> LessonManifest {
        let mut manifest = SyntheticLesson::standard(LessonId::new("hls-test").unwrap(), 7, 3)
            .build()
            .manifest;
        // A shorter last segment, as a real transcode makes.
        for r in &mut manifest.renditions {
            r.segments.last_mut().unwrap().duration_ms = 2_350;
        }
        manifest
    }

    #[test]
    fn master_playlist_lists_every_rendition_and_parses_back() {
        let manifest = lesson();
        let text = master_playlist(&manifest, |r| format!("{}/index.m3u8", r.name));
        let parsed = parse_master_playlist_res(text.as_bytes()).expect("m3u8-rs parses our master playlist");
        assert_eq!(parsed.version, Some(HLS_VERSION));
        assert!(parsed.independent_segments);
        assert_eq!(parsed.variants.len(), manifest.renditions.len());
        for (v, r) in parsed.variants.iter().zip(&manifest.renditions) {
            assert_eq!(v.uri, format!("{}/index.m3u8", r.name));
            assert_eq!(v.bandwidth, u64::from(r.bandwidth));
            assert_eq!(v.average_bandwidth, average_bandwidth(r));
            assert_eq!(v.codecs.as_deref(), Some(r.codecs.as_str()));
            match r.kind {
                RenditionKind::Video { width, height } => {
                    let res = v.resolution.expect("a video rendition has a RESOLUTION");
                    assert_eq!((res.width, res.height), (u64::from(width), u64::from(height)));
                }
                RenditionKind::Audio => assert!(v.resolution.is_none()),
            }
        }
        assert!(text.contains("CODECS=\"avc1.4d401f,mp4a.40.2\""), "{text}");
        assert!(text.contains("RESOLUTION=1280x720"), "{text}");
    }

    #[test]
    fn media_playlist_is_vod_with_every_segment_and_parses_back() {
        let manifest = lesson();
        let r = &manifest.renditions[1];
        let text = media_playlist(r, |i, _| format!("seg{i:05}.ts"));
        let parsed = parse_media_playlist_res(text.as_bytes()).expect("m3u8-rs parses our media playlist");
        assert_eq!(parsed.playlist_type, Some(MediaPlaylistType::Vod));
        assert!(parsed.end_list);
        assert_eq!(parsed.target_duration, 4);
        assert_eq!(parsed.segments.len(), r.segments.len());
        for (i, (p, s)) in parsed.segments.iter().zip(&r.segments).enumerate() {
            assert_eq!(p.uri, format!("seg{i:05}.ts"));
            assert!((f64::from(p.duration) - f64::from(s.duration_ms) / 1000.0).abs() < 0.001);
        }
        assert!(text.contains("#EXTINF:2.35,"), "{text}");
        assert!(text.trim_end().ends_with("#EXT-X-ENDLIST"), "{text}");
    }

    #[test]
    fn target_duration_rounds_the_longest_segment() {
        let mut r = lesson().renditions.remove(0);
        r.segments[0].duration_ms = 4_010;
        assert_eq!(target_duration(&r), 4);
        r.segments[1].duration_ms = 4_500;
        assert_eq!(target_duration(&r), 5);
        r.segments.iter_mut().for_each(|s| s.duration_ms = 4_000);
        assert_eq!(target_duration(&r), 4);
        r.segments.clear();
        assert_eq!(target_duration(&r), 1);
        assert_eq!(average_bandwidth(&r), None);
    }

    #[test]
    fn average_bandwidth_is_bits_over_seconds() {
        let r = &lesson().renditions[2];
        let ms: u64 = r.segments.iter().map(|s| u64::from(s.duration_ms)).sum();
        assert_eq!(average_bandwidth(r), Some(r.size() * 8000 / ms));
    }
}

/// One segment of a live media playlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveEntry {
    /// The channel's sequence number: the segment's HLS media sequence number.
    pub sequence: u64,
    /// The segment's discontinuity sequence number: entries with different numbers do not
    /// share a timeline. Never decreases along the entries.
    pub discontinuity: u64,
    pub duration_ms: u32,
    /// Held whole and playable; `false` marks a gap (a segment lost or not fetched).
    pub available: bool,
}

/// Where a live media playlist ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveTail {
    /// At the last available entry: the entries after it may still arrive (the rendition being
    /// fetched).
    LastAvailable,
    /// At the last entry, later unavailable ones written as gaps: they will not arrive (a
    /// rendition no longer fetched), and a player moves to a rendition that has them.
    LastEntry,
}

/// A live (sliding-window) media playlist: no `EXT-X-ENDLIST`, `EXT-X-MEDIA-SEQUENCE` = the first
/// entry's sequence number, so a segment keeps its number across reloads. A missing sequence
/// number between two entries, or an entry not `available`, is written as a gap
/// (`EXT-X-GAP`, RFC 8216bis 4.4.4.7): players skip it and the playlist never stalls. Where
/// the discontinuity number changes, `EXT-X-DISCONTINUITY` goes before the entry, and
/// `EXT-X-DISCONTINUITY-SEQUENCE` is the first entry's number, so a player resets its timeline
/// there and the number stays with the segment across reloads. (If a number jumps by more
/// than one between two entries, one tag marks it and the segment's number in a later
/// playlist is higher than in this one; hls.js re-aligns on that.) Entries must be in
/// sequence order; the playlist starts at the first available one and ends per `tail` (`None`
/// if no entry is available).
pub fn live_media_playlist(
    entries: &[LiveEntry],
    tail: LiveTail,
    uri_for_sequence: impl Fn(u64) -> String,
) -> Option<String> {
    let first = entries.iter().position(|e| e.available)?;
    let last = match tail {
        LiveTail::LastAvailable => entries.iter().rposition(|e| e.available)?,
        LiveTail::LastEntry => entries.len() - 1,
    };
    let entries = &entries[first..=last];
    let longest_ms = entries.iter().map(|e| u64::from(e.duration_ms)).max().unwrap_or(1000);
    let target = ((longest_ms + 500) / 1000).max(1);
    let mut out = format!(
        "#EXTM3U\n#EXT-X-VERSION:{HLS_VERSION}\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{}\n",
        entries[0].sequence
    );
    if entries[0].discontinuity > 0 {
        out.push_str(&format!("#EXT-X-DISCONTINUITY-SEQUENCE:{}\n", entries[0].discontinuity));
    }
    out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    let mut expected = entries[0].sequence;
    let mut discontinuity = entries[0].discontinuity;
    for e in entries {
        if e.discontinuity != discontinuity {
            out.push_str("#EXT-X-DISCONTINUITY\n");
            discontinuity = e.discontinuity;
        }
        // Sequence numbers never announced: one gap each, of the target duration.
        while expected < e.sequence {
            out.push_str(&format!(
                "#EXTINF:{target}.000,\n#EXT-X-GAP\n{}\n",
                uri_for_sequence(expected)
            ));
            expected += 1;
        }
        out.push_str(&format!(
            "#EXTINF:{}.{:03},\n",
            e.duration_ms / 1000,
            e.duration_ms % 1000
        ));
        if !e.available {
            out.push_str("#EXT-X-GAP\n");
        }
        out.push_str(&uri_for_sequence(e.sequence));
        out.push('\n');
        expected = e.sequence + 1;
    }
    Some(out)
}

/// One rendition of a live channel's master playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveVariant {
    pub uri: String,
    /// Peak bit rate (bits per second).
    pub bandwidth: u64,
    /// Mean bit rate, when measured.
    pub average_bandwidth: Option<u64>,
    /// Picture size; `None` for audio only.
    pub resolution: Option<(u32, u32)>,
    /// RFC 6381 codecs (omitted when empty).
    pub codecs: String,
}

/// A live channel's master playlist: one `EXT-X-STREAM-INF` per variant, in the given order.
pub fn live_master_playlist(variants: &[LiveVariant]) -> String {
    let playlist = MasterPlaylist {
        version: Some(HLS_VERSION),
        independent_segments: true,
        variants: variants
            .iter()
            .map(|v| VariantStream {
                uri: v.uri.clone(),
                bandwidth: v.bandwidth,
                average_bandwidth: v.average_bandwidth,
                codecs: (!v.codecs.is_empty()).then(|| v.codecs.clone()),
                resolution: v.resolution.map(|(w, h)| Resolution {
                    width: u64::from(w),
                    height: u64::from(h),
                }),
                ..VariantStream::default()
            })
            .collect(),
        ..MasterPlaylist::default()
    };
    to_text(|out| playlist.write_to(out))
}

#[cfg(test)]
mod live_tests {
    use super::*;

    fn e(sequence: u64, available: bool) -> LiveEntry {
        LiveEntry {
            sequence,
            discontinuity: 0,
            duration_ms: 2000,
            available,
        }
    }

    #[test]
    fn a_live_playlist_slides_and_marks_gaps() {
        let entries = [e(7, false), e(8, true), e(9, false), e(11, true), e(12, false)];
        let text = live_media_playlist(&entries, LiveTail::LastAvailable, |s| format!("{s}.ts")).unwrap();
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:8\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXTINF:2.000,\n8.ts\n#EXTINF:2.000,\n#EXT-X-GAP\n9.ts\n#EXTINF:2.000,\n#EXT-X-GAP\n10.ts\n#EXTINF:2.000,\n11.ts\n"
        );
        let parsed = m3u8_rs::parse_media_playlist_res(text.as_bytes()).unwrap();
        assert_eq!(parsed.media_sequence, 8);
        assert_eq!(parsed.segments.len(), 4);
        assert!(!parsed.end_list);
        assert_eq!(
            live_media_playlist(&[e(1, false)], LiveTail::LastEntry, |s| s.to_string()),
            None
        );
        // A rendition no longer fetched: its playlist runs on to the newest entry, as gaps.
        let text = live_media_playlist(&entries, LiveTail::LastEntry, |s| format!("{s}.ts")).unwrap();
        assert!(
            text.ends_with("#EXTINF:2.000,\n11.ts\n#EXTINF:2.000,\n#EXT-X-GAP\n12.ts\n"),
            "{text}"
        );
    }

    #[test]
    fn a_live_playlist_marks_where_the_feed_restarted() {
        let d = |sequence, discontinuity| LiveEntry {
            discontinuity,
            ..e(sequence, true)
        };
        // The feed restarted before 10 (whose timestamps start over), and 11 was never announced.
        let entries = [d(8, 5), d(9, 5), d(10, 6), d(12, 6)];
        let text = live_media_playlist(&entries, LiveTail::LastAvailable, |s| format!("{s}.ts")).unwrap();
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:8\n#EXT-X-DISCONTINUITY-SEQUENCE:5\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXTINF:2.000,\n8.ts\n#EXTINF:2.000,\n9.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:2.000,\n10.ts\n\
             #EXTINF:2.000,\n#EXT-X-GAP\n11.ts\n#EXTINF:2.000,\n12.ts\n"
        );
        let parsed = m3u8_rs::parse_media_playlist_res(text.as_bytes()).unwrap();
        assert_eq!(parsed.discontinuity_sequence, 5);
        let marked: Vec<bool> = parsed.segments.iter().map(|s| s.discontinuity).collect();
        assert_eq!(marked, [false, false, true, false, false]);
        // Once the old timeline has slid out, the first entry carries its number.
        let text = live_media_playlist(&entries[2..], LiveTail::LastAvailable, |s| format!("{s}.ts")).unwrap();
        assert!(
            text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:6\n") && !text.contains("#EXT-X-DISCONTINUITY\n"),
            "{text}"
        );
    }

    #[test]
    fn a_live_master_playlist_lists_each_rendition() {
        let text = live_master_playlist(&[
            LiveVariant {
                uri: "city-live/low.m3u8".into(),
                bandwidth: 380_000,
                average_bandwidth: Some(350_000),
                resolution: Some((640, 360)),
                codecs: "avc1.4d401e,mp4a.40.2".into(),
            },
            LiveVariant {
                uri: "city-live/audio.m3u8".into(),
                bandwidth: 70_000,
                average_bandwidth: None,
                resolution: None,
                codecs: "mp4a.40.2".into(),
            },
        ]);
        let parsed = m3u8_rs::parse_master_playlist_res(text.as_bytes()).unwrap();
        assert_eq!(parsed.variants.len(), 2);
        assert_eq!(parsed.variants[0].bandwidth, 380_000);
        assert_eq!(parsed.variants[0].average_bandwidth, Some(350_000));
        assert_eq!(parsed.variants[0].codecs.as_deref(), Some("avc1.4d401e,mp4a.40.2"));
        assert_eq!(parsed.variants[0].resolution.unwrap().height, 360);
        assert!(parsed.variants[1].resolution.is_none());
        assert_eq!(parsed.variants[1].uri, "city-live/audio.m3u8");
    }
}

//! RFC 6381 codec strings for HLS `CODECS`, read from what the encoders produced.

/// AAC-LC (MPEG-4 audio object type 2): what avenc_aac and voaacenc produce.
pub const AAC_LC: &str = "mp4a.40.2";

/// `avc1.PPCCLL` from the first sequence parameter set in an Annex B (byte-stream) H.264
/// buffer: profile_idc, the constraint flags byte and level_idc, in hex.
pub fn avc_codec_from_annex_b(data: &[u8]) -> Option<String> {
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            let nal = i + 3;
            if nal + 4 <= data.len() && data[nal] & 0x1f == 7 {
                let (profile, constraints, level) = (data[nal + 1], data[nal + 2], data[nal + 3]);
                return Some(format!("avc1.{profile:02x}{constraints:02x}{level:02x}"));
            }
            i = nal;
        } else {
            i += 1;
        }
    }
    None
}

/// The `CODECS` value of a rendition: video codec and/or AAC-LC.
pub fn codecs_string(video: Option<&str>, audio: bool) -> String {
    match (video, audio) {
        (Some(v), true) => format!("{v},{AAC_LC}"),
        (Some(v), false) => v.to_owned(),
        (None, _) => AAC_LC.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_codec_string_from_an_sps() {
        // Access unit delimiter, then SPS (Main, constraint_set1, level 3.1), PPS, IDR.
        let au = [
            0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x67, 0x4d, 0x40, 0x1f, 0xec, 0xa0, 0, 0, 0, 1, 0x68, 0xeb, 0, 0, 1,
            0x65, 0x88,
        ];
        assert_eq!(avc_codec_from_annex_b(&au).as_deref(), Some("avc1.4d401f"));
        let level30 = [0, 0, 1, 0x27, 0x4d, 0x40, 0x1e, 0x00];
        assert_eq!(avc_codec_from_annex_b(&level30).as_deref(), Some("avc1.4d401e"));
    }

    #[test]
    fn media_codec_string_needs_an_sps() {
        assert_eq!(avc_codec_from_annex_b(&[0, 0, 1, 0x65, 0x88, 0x80, 0x40]), None);
        assert_eq!(avc_codec_from_annex_b(&[0, 0, 1, 0x67, 0x4d]), None);
        assert_eq!(avc_codec_from_annex_b(&[]), None);
    }

    #[test]
    fn media_codecs_string_joins_video_and_audio() {
        assert_eq!(codecs_string(Some("avc1.4d401f"), true), "avc1.4d401f,mp4a.40.2");
        assert_eq!(codecs_string(Some("avc1.4d401e"), false), "avc1.4d401e");
        assert_eq!(codecs_string(None, true), "mp4a.40.2");
    }
}

//! What kind of device sent a request, from its `User-Agent`, for viewing records.

/// A short class of the client from its `User-Agent`: `tv`, `set-top-box`, `phone`, `tablet`,
/// `player` (VLC, ffmpeg, GStreamer and other media players), `pc` (a desktop browser), or
/// `other`.
pub fn device_class(user_agent: &str) -> &'static str {
    let ua = user_agent.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| ua.contains(w));
    if has(&[
        "smart-tv", "smarttv", "tizen", "webos", "web0s", "hbbtv", "bravia", "netcast", "aftt", "googletv", "mitv",
    ]) {
        "tv"
    } else if has(&[
        "set-top",
        "settop",
        "stb",
        "ipanel",
        "mibox",
        "android tv",
        "tvbox",
        "tv box",
    ]) {
        "set-top-box"
    } else if has(&["iphone", "ipod"]) || (ua.contains("android") && ua.contains("mobile")) || has(&["harmonyos"]) {
        "phone"
    } else if has(&["ipad", "android"]) {
        "tablet"
    } else if has(&[
        "vlc",
        "lavf",
        "ffmpeg",
        "ffprobe",
        "gstreamer",
        "exoplayer",
        "applecoremedia",
        "mpv",
        "kodi",
        "stagefright",
    ]) {
        "player"
    } else if ua.starts_with("mozilla/") && has(&["windows", "macintosh", "x11", "linux", "cros"]) {
        "pc"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_classes_from_user_agents() {
        let cases = [
            ("Mozilla/5.0 (Linux; Android 13; M2101K6C) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36", "phone"),
            ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15", "phone"),
            ("Mozilla/5.0 (Linux; Android 9; MIBOX4 Build/PI) AppleWebKit/537.36 Chrome/96.0 Safari/537.36", "set-top-box"),
            ("Mozilla/5.0 (Linux; Android 12; Xiaomi Pad 6) AppleWebKit/537.36 Chrome/118.0 Safari/537.36", "tablet"),
            ("Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36", "tv"),
            ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0 Safari/537.36", "pc"),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36", "pc"),
            ("VLC/3.0.18 LibVLC/3.0.18", "player"),
            ("Lavf/59.27.100", "player"),
            ("", "other"),
            ("curl/7.88.1", "other"),
        ];
        for (ua, class) in cases {
            assert_eq!(device_class(ua), class, "{ua}");
        }
    }
}

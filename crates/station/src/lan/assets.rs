//! The TV page's files, compiled into the binary so the station serves them with no internet:
//! `index.html`, `style.css`, `app.js` (plain HTML, CSS and vanilla JS; no build step) and
//! hls.js 1.7.4 from npm (see `assets/hls.js/README.md`).

/// A file the page needs: its bytes and `Content-Type`.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub bytes: &'static [u8],
    pub content_type: &'static str,
}

const INDEX_HTML: &[u8] = include_bytes!("../../assets/index.html");
const STYLE_CSS: &[u8] = include_bytes!("../../assets/style.css");
const APP_JS: &[u8] = include_bytes!("../../assets/app.js");
const HLS_JS: &[u8] = include_bytes!("../../assets/hls.js/hls.min.js");
const HLS_JS_LICENSE: &[u8] = include_bytes!("../../assets/hls.js/LICENSE");

/// The asset served at `path`, if any.
pub fn asset(path: &str) -> Option<Asset> {
    let (bytes, content_type) = match path {
        "/" | "/index.html" => (INDEX_HTML, "text/html; charset=utf-8"),
        "/assets/style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        "/assets/app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "/assets/hls.min.js" => (HLS_JS, "text/javascript; charset=utf-8"),
        "/assets/hls.js-LICENSE.txt" => (HLS_JS_LICENSE, "text/plain; charset=utf-8"),
        _ => return None,
    };
    Some(Asset { bytes, content_type })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_what_the_station_serves() {
        let html = std::str::from_utf8(asset("/").unwrap().bytes).unwrap();
        assert!(html.contains("lang=\"zh-CN\""));
        for src in ["/assets/style.css", "/assets/app.js", "/assets/hls.min.js"] {
            assert!(html.contains(src), "{src}");
            assert!(asset(src).is_some(), "{src}");
        }
        // Nothing from the internet: no absolute URL in the page or its script.
        let app = std::str::from_utf8(asset("/assets/app.js").unwrap().bytes).unwrap();
        for text in [html, app] {
            assert!(!text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"));
        }
        assert!(asset("/assets/hls.min.js").unwrap().bytes.len() > 100_000);
        assert!(asset("/../Cargo.toml").is_none());
    }
}

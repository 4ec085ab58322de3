//! The web phone's files (`web/`), embedded in the binary so that a deployment is one
//! file with no front-end build step; in debug builds rust-embed reads them from disk,
//! so editing the page needs no rebuild. Served with a strict Content-Security-Policy:
//! the page may only talk to sipline itself.

use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::Embed)]
#[folder = "../../web/"]
#[exclude = "*.md"]
struct Web;

const CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; media-src 'self' blob:; \
                   style-src 'self'; script-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'";

/// Serves `/` as `index.html` and any other path from `web/`.
pub async fn serve(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    let Some(file) = Web::get(path) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    // mime-guess takes .ts for MPEG transport streams; ours is TypeScript declarations
    let mime = if path.ends_with(".d.ts") {
        "text/plain; charset=utf-8"
    } else {
        file.metadata.mimetype()
    };
    let mut resp = (StatusCode::OK, file.data).into_response();
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(mime) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

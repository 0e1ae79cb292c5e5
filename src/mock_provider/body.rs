//! The response body type and gzip (used only when the `gzip` fault is on and the client
//! accepts it).

use std::io::{self, Write};

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use http::header::ACCEPT_ENCODING;
use http::HeaderMap;
use http_body_util::{Either, Full, StreamBody};

use super::sse::EventStream;

/// A whole body (with `Content-Length`) or a stream of frames (chunked on HTTP/1.1).
pub(crate) type MockBody = Either<Full<Bytes>, StreamBody<EventStream>>;

/// Why a response body ended badly; hyper then aborts the HTTP/1.1 connection or resets the
/// HTTP/2 stream, which is what the `cut_after` fault is for.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// The `cut_after` fault.
    #[error("response cut by the mock provider's cut_after fault")]
    Cut,
    /// An event could not be serialized.
    #[error("cannot serialize a streamed event: {0}")]
    Json(#[from] serde_json::Error),
    /// gzip failed (writing to memory: not expected).
    #[error("cannot gzip the response: {0}")]
    Gzip(#[from] io::Error),
}

/// A whole body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> MockBody {
    Either::Left(Full::new(bytes.into()))
}

/// Whether the request's `Accept-Encoding` admits gzip (`gzip`, `x-gzip` or `*`, q > 0).
pub(crate) fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut params = coding.split(';');
            let name = params.next().unwrap_or_default().trim();
            let refused = params.any(|param| {
                let param = param.trim();
                param
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            !refused
                && (name.eq_ignore_ascii_case("gzip")
                    || name.eq_ignore_ascii_case("x-gzip")
                    || name == "*")
        })
}

/// Compresses a whole body.
pub(crate) fn gzip_all(bytes: &[u8]) -> io::Result<Bytes> {
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(64 + bytes.len() / 2),
        Compression::fast(),
    );
    encoder.write_all(bytes)?;
    Ok(Bytes::from(encoder.finish()?))
}

/// A gzip stream that emits a decodable piece per event (sync flush), so a client can read a
/// compressed SSE stream event by event.
pub(crate) struct Gzip {
    encoder: GzEncoder<Vec<u8>>,
}

// === impl Gzip ===

impl Gzip {
    /// A new gzip stream (fast compression: this is a test fixture, not a CDN).
    pub(crate) fn new() -> Self {
        Self {
            encoder: GzEncoder::new(Vec::new(), Compression::fast()),
        }
    }

    /// Compresses `data` and returns everything the client can decode so far.
    pub(crate) fn chunk(&mut self, data: &[u8]) -> io::Result<Bytes> {
        self.encoder.write_all(data)?;
        self.encoder.flush()?;
        Ok(Bytes::from(std::mem::take(self.encoder.get_mut())))
    }

    /// Ends the stream and returns the remaining bytes (the gzip trailer).
    pub(crate) fn finish(&mut self) -> io::Result<Bytes> {
        self.encoder.try_finish()?;
        Ok(Bytes::from(std::mem::take(self.encoder.get_mut())))
    }
}

impl std::fmt::Debug for Gzip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gzip").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::io::Read;

    #[test]
    fn accept_encoding() {
        let check = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(ACCEPT_ENCODING, HeaderValue::from_static(value));
            accepts_gzip(&headers)
        };
        assert!(check("gzip"));
        assert!(check("br, GZIP;q=0.5"));
        assert!(check("*"));
        assert!(!check("identity"));
        assert!(!check("gzip;q=0, br"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn gzip_stream_decodes() {
        let mut gzip = Gzip::new();
        let mut all = gzip.chunk(b"data: one\n\n").unwrap().to_vec();
        all.extend_from_slice(&gzip.chunk(b"data: two\n\n").unwrap());
        all.extend_from_slice(&gzip.finish().unwrap());
        let mut text = String::new();
        flate2::read::GzDecoder::new(&all[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "data: one\n\ndata: two\n\n");
        let whole = gzip_all(b"{}").unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&whole[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "{}");
    }
}

//! The control paths under `/__mock/`: recorded requests, counters, health, connection
//! settings. They are neither recorded, counted nor subject to faults.

use http::{Method, Response, StatusCode, Uri};
use serde_json::json;

use super::body::MockBody;
use super::errors::openai_error;
use super::handlers::{json_response, State};

/// Serves `GET|DELETE /__mock/requests`, `GET|DELETE /__mock/stats`, `GET /__mock/health`
/// and `GET|PUT /__mock/connections`.
pub(crate) fn handle(state: &State, method: &Method, uri: &Uri) -> Response<MockBody> {
    let path = uri.path();
    let recorder = &state.recorder;
    let ok = |body: Vec<u8>| json_response(state, StatusCode::OK, body);
    match (method, path.trim_end_matches('/')) {
        (&Method::GET, "/__mock/requests") => ok(recorder.requests_json()),
        (&Method::DELETE, "/__mock/requests") => {
            let cleared = recorder.clear();
            ok(json!({ "cleared": cleared }).to_string().into_bytes())
        }
        (&Method::GET, "/__mock/stats") => ok(recorder.stats_json()),
        (&Method::DELETE, "/__mock/stats") => {
            recorder.reset_stats();
            ok(json!({ "reset": true }).to_string().into_bytes())
        }
        (&Method::GET, "/__mock/health") => {
            let name = String::from_utf8_lossy(state.name.as_bytes());
            ok(json!({ "status": "ok", "name": name })
                .to_string()
                .into_bytes())
        }
        (&Method::GET, "/__mock/connections") => ok(state.connections.to_json()),
        (&Method::PUT, "/__mock/connections") => {
            match state.connections.update(uri.query().unwrap_or_default()) {
                Ok(()) => ok(state.connections.to_json()),
                Err(message) => {
                    let error = openai_error(StatusCode::BAD_REQUEST, &message);
                    json_response(state, error.status, error.body.to_vec())
                }
            }
        }
        _ => {
            let message = format!("Unknown mock control path ({method} {path})");
            let error = openai_error(StatusCode::NOT_FOUND, &message);
            json_response(state, error.status, error.body.to_vec())
        }
    }
}

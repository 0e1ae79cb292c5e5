//! What the mock received: a bounded ring of requests and counters by path and status.
//!
//! Recording runs on every request of a 50k req/s benchmark, so it only moves the request's
//! `HeaderMap` and body `Bytes` into the ring under a short `std::sync::Mutex` (never held
//! across an await); JSON is produced only when `/__mock/requests` is read.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Method, Uri, Version};
use serde::ser::{SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};
use serde_json::json;

/// Distinct paths counted one by one; further paths are counted under `(other)`.
const MAX_STATS_PATHS: usize = 1024;

/// One request as the mock received it.
#[derive(Debug)]
pub(crate) struct Record {
    pub index: u64,
    pub ts_us: u64,
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The ring of recent requests and the serving counters.
#[derive(Debug)]
pub(crate) struct Recorder {
    enabled: bool,
    limit: usize,
    ring: Mutex<Ring>,
    stats: Mutex<Stats>,
}

#[derive(Debug, Default)]
struct Ring {
    records: VecDeque<Arc<Record>>,
    next_index: u64,
    dropped: u64,
}

#[derive(Debug, Default)]
struct Stats {
    total: u64,
    by_path: HashMap<String, u64>,
    by_status: BTreeMap<u16, u64>,
    disconnected: u64,
}

// === impl Recorder ===

impl Recorder {
    /// A recorder keeping the last `limit` requests, or none when `enabled` is false.
    pub(crate) fn new(enabled: bool, limit: usize) -> Self {
        Self {
            enabled,
            limit,
            ring: Mutex::default(),
            stats: Mutex::default(),
        }
    }

    /// Whether requests are kept (otherwise `record` need not be called).
    pub(crate) fn enabled(&self) -> bool {
        self.enabled && self.limit > 0
    }

    /// Keeps `record` (its `index` is assigned here), dropping the oldest past the limit.
    pub(crate) fn record(&self, mut record: Record) {
        if !self.enabled() {
            return;
        }
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        record.index = ring.next_index;
        ring.next_index += 1;
        let evicted = if ring.records.len() >= self.limit {
            ring.dropped += 1;
            ring.records.pop_front()
        } else {
            None
        };
        ring.records.push_back(Arc::new(record));
        drop(ring);
        // Freed outside the lock: the evicted request's headers and body.
        drop(evicted);
    }

    /// Counts a served response (`status: None`: the connection was dropped on purpose).
    pub(crate) fn count(&self, path: &str, status: Option<u16>) {
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        stats.total += 1;
        if let Some(count) = stats.by_path.get_mut(path) {
            *count += 1;
        } else if stats.by_path.len() < MAX_STATS_PATHS {
            stats.by_path.insert(path.to_owned(), 1);
        } else {
            *stats.by_path.entry("(other)".to_owned()).or_insert(0) += 1;
        }
        match status {
            Some(status) => *stats.by_status.entry(status).or_insert(0) += 1,
            None => stats.disconnected += 1,
        }
    }

    /// The recorded requests, oldest first, as a JSON array.
    pub(crate) fn requests_json(&self) -> Vec<u8> {
        let records: Vec<Arc<Record>> = {
            let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
            ring.records.iter().cloned().collect()
        };
        // Serializing these types cannot fail; an empty array is the harmless fallback.
        let records: Vec<&Record> = records.iter().map(|record| &**record).collect();
        serde_json::to_vec(&records).unwrap_or_else(|_| b"[]".to_vec())
    }

    /// Forgets the recorded requests (indexes keep counting); returns how many there were.
    pub(crate) fn clear(&self) -> usize {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let cleared = ring.records.len();
        ring.records.clear();
        cleared
    }

    /// Resets the counters.
    pub(crate) fn reset_stats(&self) {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner) = Stats::default();
    }

    /// The counters as JSON.
    pub(crate) fn stats_json(&self) -> Vec<u8> {
        let (recorded, next_index, dropped) = {
            let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
            (ring.records.len(), ring.next_index, ring.dropped)
        };
        let stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        let by_path: BTreeMap<&str, u64> = stats
            .by_path
            .iter()
            .map(|(path, count)| (path.as_str(), *count))
            .collect();
        let by_status: BTreeMap<String, u64> = stats
            .by_status
            .iter()
            .map(|(status, count)| (status.to_string(), *count))
            .collect();
        json!({
            "total": stats.total,
            "by_path": by_path,
            "by_status": by_status,
            "disconnected": stats.disconnected,
            "recording": self.enabled(),
            "recorded": recorded,
            "record_limit": self.limit,
            "received": next_index,
            "dropped": dropped,
        })
        .to_string()
        .into_bytes()
    }
}

// === impl Record ===

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let utf8 = std::str::from_utf8(&self.body).is_ok();
        let mut out = serializer.serialize_struct("Record", 9)?;
        out.serialize_field("index", &self.index)?;
        out.serialize_field("ts_us", &self.ts_us)?;
        out.serialize_field("method", self.method.as_str())?;
        let path = self.uri.path_and_query().map_or("/", |pq| pq.as_str());
        out.serialize_field("path", path)?;
        out.serialize_field("authority", &self.uri.authority().map(|a| a.as_str()))?;
        out.serialize_field("version", version_name(self.version))?;
        out.serialize_field("headers", &HeaderPairs(&self.headers))?;
        out.serialize_field("body", &String::from_utf8_lossy(&self.body))?;
        if utf8 {
            out.skip_field("body_base64")?;
        } else {
            let encoded = base64::engine::general_purpose::STANDARD.encode(&self.body);
            out.serialize_field("body_base64", &encoded)?;
        }
        out.end()
    }
}

/// Headers as `[[name, value], ...]` in the order received (values lossily as UTF-8).
struct HeaderPairs<'a>(&'a HeaderMap);

impl Serialize for HeaderPairs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for (name, value) in self.0 {
            let value = String::from_utf8_lossy(value.as_bytes());
            seq.serialize_element(&(name.as_str(), value))?;
        }
        seq.end()
    }
}

/// `HTTP/1.1`, `HTTP/2`, ...
pub(crate) fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "unknown",
    }
}

//! Breakers by provider name, kept across policy reloads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

use super::{Breaker, BreakerConfig, BreakerState};

/// All breakers, by provider name; kept across policy reloads.
#[derive(Debug, Default)]
pub struct BreakerRegistry {
    breakers: Mutex<HashMap<String, Arc<Breaker>>>,
}

// === impl BreakerRegistry ===

impl BreakerRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Breaker>>> {
        self.breakers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The breaker of `name`, created closed if new; an existing breaker takes `cfg`
    /// but keeps its state (call this for every provider on each policy load).
    pub fn get_or_create(&self, name: &str, cfg: BreakerConfig) -> Arc<Breaker> {
        let mut map = self.lock();
        if let Some(b) = map.get(name) {
            b.set_config(cfg);
            return Arc::clone(b);
        }
        let b = Arc::new(Breaker::new(cfg));
        map.insert(name.to_owned(), Arc::clone(&b));
        b
    }

    /// The breaker of `name`, if one exists.
    pub fn get(&self, name: &str) -> Option<Arc<Breaker>> {
        self.lock().get(name).cloned()
    }

    /// Drops the breakers whose provider `keep` rejects (providers gone from the policy).
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.lock().retain(|name, _| keep(name));
    }

    /// Every breaker's state, by provider name.
    pub fn snapshot(&self, now: Instant) -> Vec<(String, BreakerState)> {
        let breakers: Vec<(String, Arc<Breaker>)> = self
            .lock()
            .iter()
            .map(|(n, b)| (n.clone(), Arc::clone(b)))
            .collect();
        let mut out: Vec<(String, BreakerState)> = breakers
            .into_iter()
            .map(|(n, b)| (n, b.state(now)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

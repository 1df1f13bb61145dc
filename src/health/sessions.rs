//! Session pins: a session key (scoped by virtual model and caller path) keeps its first target
//! for a TTL while that target stays eligible. Bounded: past `MAX_PINS` the oldest are evicted.
//!
//! Backed by `papaya`, a lock-free hash map, so pinning takes no lock on the request path.

use std::sync::atomic::{AtomicUsize, Ordering};

pub const MAX_PINS: usize = 10_000;

#[derive(Debug, Clone)]
struct Pin {
    target: String,
    created_ms: u64,
    expires_ms: u64,
}

#[derive(Debug, Default)]
pub struct Sessions {
    map: papaya::HashMap<String, Pin>,
    evicting: AtomicUsize,
}

fn key(source: &str, session: &str) -> String {
    let mut k = String::with_capacity(source.len() + session.len() + 1);
    k.push_str(source);
    k.push('\u{0}');
    k.push_str(session);
    k
}

impl Sessions {
    /// The pinned target name, if the pin is still fresh.
    pub fn get(&self, source: &str, session: &str, now_ms: u64) -> Option<String> {
        let m = self.map.pin();
        let pin = m.get(&key(source, session))?;
        (pin.expires_ms > now_ms).then(|| pin.target.clone())
    }

    /// Pins (or re-pins) a session to a target.
    pub fn pin(&self, source: &str, session: &str, target: &str, ttl_s: u64, now_ms: u64) {
        let m = self.map.pin();
        let k = key(source, session);
        if let Some(p) = m.get(&k) {
            if p.target == target && p.expires_ms > now_ms {
                return;
            }
        }
        m.insert(
            k,
            Pin {
                target: target.to_string(),
                created_ms: now_ms,
                expires_ms: now_ms + ttl_s * 1000,
            },
        );
        if m.len() > MAX_PINS {
            self.evict(now_ms);
        }
    }

    /// Drops expired pins, then the oldest until 90% of the bound; one evictor at a time.
    fn evict(&self, now_ms: u64) {
        if self.evicting.swap(1, Ordering::AcqRel) == 1 {
            return;
        }
        let m = self.map.pin();
        m.retain(|_, p| p.expires_ms > now_ms);
        let len = m.len();
        if len > MAX_PINS {
            let mut ages: Vec<(u64, String)> =
                m.iter().map(|(k, p)| (p.created_ms, k.clone())).collect();
            ages.sort();
            let drop = len - MAX_PINS * 9 / 10;
            for (_, k) in ages.into_iter().take(drop) {
                m.remove(&k);
            }
        }
        self.evicting.store(0, Ordering::Release);
    }

    pub fn len(&self) -> usize {
        self.map.pin().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_expires_after_ttl() {
        let s = Sessions::default();
        s.pin("smart", "abc", "openai/gpt-4o", 10, 1_000);
        assert_eq!(
            s.get("smart", "abc", 5_000).as_deref(),
            Some("openai/gpt-4o")
        );
        assert_eq!(s.get("smart", "abc", 11_001), None);
        assert_eq!(s.get("other", "abc", 5_000), None);
    }

    #[test]
    fn table_is_bounded() {
        let s = Sessions::default();
        for i in 0..(MAX_PINS + 50) {
            s.pin("v", &i.to_string(), "t", 3600, i as u64);
        }
        assert!(s.len() <= MAX_PINS);
        // The newest survive.
        assert!(s.get("v", &(MAX_PINS + 49).to_string(), 100).is_some());
    }
}

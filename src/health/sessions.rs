//! Session pins: a session key (scoped by virtual model and caller path) keeps its first target
//! for a TTL while that target stays eligible. Bounded: at most `MAX_PINS` pins (give or take
//! the pins being made at that instant), the oldest evicted.
//!
//! Backed by `papaya`, a lock-free hash map, so pinning takes no lock on the request path.
//! Eviction is O(1) per pin: a ring of `MAX_PINS` slots remembers the keys in pinning order, and
//! each new pin takes the next slot, evicting the pin that slot remembered (made `MAX_PINS` pins
//! earlier) unless that key has been pinned again since. Nothing ever walks or sorts the map.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

pub const MAX_PINS: usize = 10_000;

#[derive(Debug, Clone)]
struct Pin {
    target: String,
    expires_ms: u64,
    /// The pin's place in pinning order (its ring slot is `seq % capacity`).
    seq: u64,
}

/// What a ring slot remembers: the key pinned `seq`-th.
#[derive(Debug)]
struct Slot {
    key: String,
    seq: u64,
}

#[derive(Debug)]
pub struct Sessions {
    map: papaya::HashMap<String, Pin>,
    ring: Box<[ArcSwapOption<Slot>]>,
    next: AtomicU64,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::with_capacity(MAX_PINS)
    }
}

fn key(source: &str, session: &str) -> String {
    let mut k = String::with_capacity(source.len() + session.len() + 1);
    k.push_str(source);
    k.push('\u{0}');
    k.push_str(session);
    k
}

impl Sessions {
    /// A table of at most `capacity` pins (at least 1).
    pub fn with_capacity(capacity: usize) -> Sessions {
        Sessions {
            map: papaya::HashMap::new(),
            ring: (0..capacity.max(1))
                .map(|_| ArcSwapOption::empty())
                .collect(),
            next: AtomicU64::new(0),
        }
    }

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
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        m.insert(
            k.clone(),
            Pin {
                target: target.to_string(),
                expires_ms: now_ms.saturating_add(ttl_s.saturating_mul(1000)),
                seq,
            },
        );
        let slot = &self.ring[(seq % self.ring.len() as u64) as usize];
        if let Some(old) = slot.swap(Some(Arc::new(Slot { key: k, seq }))) {
            // The key may have been pinned again since: then its newer pin stays.
            let _ = m.remove_if(&old.key, |_, p| p.seq == old.seq);
        }
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
        assert_eq!(s.len(), MAX_PINS);
        // The newest survive, the oldest are gone.
        assert!(s.get("v", &(MAX_PINS + 49).to_string(), 100).is_some());
        assert!(s.get("v", "50", 100).is_some());
        assert!(s.get("v", "49", 100).is_none());
        assert!(s.get("v", "0", 100).is_none());
    }

    #[test]
    fn each_new_pin_evicts_exactly_the_oldest() {
        let s = Sessions::with_capacity(4);
        for i in 0..4 {
            s.pin("v", &i.to_string(), "t", 3600, 0);
        }
        for i in 4..20 {
            s.pin("v", &i.to_string(), "t", 3600, 0);
            assert_eq!(s.len(), 4);
            assert!(s.get("v", &(i - 4).to_string(), 0).is_none(), "{i}");
            assert!(s.get("v", &(i - 3).to_string(), 0).is_some(), "{i}");
        }
    }

    #[test]
    fn a_re_pinned_session_counts_from_its_new_pin() {
        let s = Sessions::with_capacity(3);
        s.pin("v", "a", "t1", 3600, 0);
        s.pin("v", "b", "t1", 3600, 0);
        // `a` moves to another target: it is now the newest pin.
        s.pin("v", "a", "t2", 3600, 0);
        s.pin("v", "c", "t1", 3600, 0);
        // `a`'s first slot comes round: its newer pin stays; `b` is the oldest and goes.
        s.pin("v", "d", "t1", 3600, 0);
        assert_eq!(s.get("v", "a", 0).as_deref(), Some("t2"));
        assert!(s.get("v", "b", 0).is_none());
        assert!(s.get("v", "c", 0).is_some() && s.get("v", "d", 0).is_some());
        assert!(s.len() <= 3);
    }

    #[test]
    fn the_same_pin_again_takes_no_slot() {
        let s = Sessions::with_capacity(2);
        s.pin("v", "a", "t", 3600, 0);
        for now in 1..10 {
            s.pin("v", "a", "t", 3600, now);
        }
        s.pin("v", "b", "t", 3600, 10);
        assert!(s.get("v", "a", 10).is_some() && s.get("v", "b", 10).is_some());
    }

    #[test]
    fn concurrent_pinning_stays_bounded() {
        let s = Arc::new(Sessions::with_capacity(64));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        s.pin("v", &format!("{t}-{i}"), "x", 3600, 0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Every slot's last key is live; no other key is.
        assert!(s.len() <= 64 + 4, "{}", s.len());
    }
}

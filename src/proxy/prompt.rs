//! What a request's prompt looks like to routing: its prefix key, for prompt-cache affinity
//! (a hash of the system prompt and the first N messages, so that turns of one conversation
//! land where its prompt cache is), and its estimated size in tokens (input characters / 4),
//! for context windows.
//!
//! Pure functions of the body's bytes. They parse the body, so the proxy calls them only for
//! virtual models that need them (`session_affinity.key: prefix`, a target with a known
//! context window that a large body might exceed). Nothing here pins or routes.

use std::hash::{Hash, Hasher};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::routing::model::Operation;

/// The fields a prefix is made of, borrowed as the client wrote them.
#[derive(Deserialize)]
struct Prefix<'a> {
    /// Anthropic's system prompt.
    #[serde(borrow, default)]
    system: Option<&'a RawValue>,
    /// The Responses API's system prompt.
    #[serde(borrow, default)]
    instructions: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Option<Vec<&'a RawValue>>,
    /// The Responses API's conversation (a string or a list of items).
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Role<'a> {
    #[serde(borrow, default)]
    role: Option<std::borrow::Cow<'a, str>>,
}

/// The prefix key of a request body: a hash of its system prompt (Anthropic's `system`, the
/// Responses API's `instructions`, OpenAI's leading `system`/`developer` messages) and its
/// first `n` other messages, exactly as written. `None` when the body has neither.
pub fn prefix_key(body: &[u8], n: u32) -> Option<u64> {
    let p: Prefix<'_> = serde_json::from_slice(body).ok()?;
    let items: Vec<&RawValue> = match (p.messages, p.input) {
        (Some(m), _) => m,
        (None, Some(i)) => serde_json::from_str::<Vec<&RawValue>>(i.get()).unwrap_or_default(),
        (None, None) => Vec::new(),
    };
    // SipHash with fixed keys: the same prefix gives the same key for the process's life.
    let mut h = std::hash::DefaultHasher::new();
    let mut any = false;
    for system in [p.system, p.instructions].into_iter().flatten() {
        system.get().hash(&mut h);
        any = true;
    }
    let mut taken = 0;
    for item in items {
        let role = serde_json::from_str::<Role<'_>>(item.get())
            .ok()
            .and_then(|r| r.role);
        let is_system = matches!(role.as_deref(), Some("system" | "developer"));
        if !is_system {
            if taken == n {
                break;
            }
            taken += 1;
        }
        item.get().hash(&mut h);
        any = true;
    }
    any.then(|| h.finish())
}

/// The estimated input tokens of a body: the characters of its client text / 4 (rounded
/// up); when it does not parse, its length in bytes / 4.
pub fn input_tokens(body: &[u8], op: Operation) -> u64 {
    let Ok(b) = crate::middleware::Body::parse(body) else {
        return (body.len() as u64).div_ceil(4);
    };
    let mut chars = 0u64;
    crate::middleware::text::for_each(&b, op, &mut |s: &str| chars += s.chars().count() as u64);
    chars.div_ceil(4)
}

/// A cheap bound no estimate exceeds: the body's length / 4 (every character is a byte or
/// more). When it is below every known window, no parse is needed.
pub fn input_tokens_bound(body: &[u8]) -> u64 {
    (body.len() as u64).div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(body: &str, n: u32) -> Option<u64> {
        prefix_key(body.as_bytes(), n)
    }

    #[test]
    fn turns_of_one_conversation_share_their_key() {
        let turn1 = r#"{"model":"m","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Plan a trip"}]}"#;
        let turn2 = r#"{"model":"m","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Plan a trip"},{"role":"assistant","content":"Where?"},{"role":"user","content":"Rome"}]}"#;
        assert_eq!(key(turn1, 1), key(turn2, 1));
        assert!(key(turn1, 1).is_some());
        // Two messages of prefix: the first turn has only one, so it differs.
        assert_ne!(key(turn1, 2), key(turn2, 2));
    }

    #[test]
    fn another_system_prompt_or_first_message_is_another_key() {
        let a = r#"{"messages":[{"role":"system","content":"A"},{"role":"user","content":"x"}]}"#;
        let b = r#"{"messages":[{"role":"system","content":"B"},{"role":"user","content":"x"}]}"#;
        let c = r#"{"messages":[{"role":"system","content":"A"},{"role":"user","content":"y"}]}"#;
        assert_ne!(key(a, 1), key(b, 1));
        assert_ne!(key(a, 1), key(c, 1));
        // The model and sampling settings are not part of the prefix.
        let a2 = r#"{"model":"other","temperature":1,"messages":[{"role":"system","content":"A"},{"role":"user","content":"x"}]}"#;
        assert_eq!(key(a, 1), key(a2, 1));
    }

    #[test]
    fn anthropic_and_responses_system_prompts() {
        let m1 = r#"{"system":"S","messages":[{"role":"user","content":"q"}]}"#;
        let m2 = r#"{"system":"S","messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}"#;
        assert_eq!(key(m1, 1), key(m2, 1));
        let r = r#"{"instructions":"S","input":[{"role":"user","content":"q"}]}"#;
        assert!(key(r, 1).is_some());
        assert_eq!(key(r#"{"model":"m"}"#, 1), None);
        assert_eq!(key("not json", 1), None);
    }

    #[test]
    fn input_is_estimated_from_the_client_text() {
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
            "a".repeat(4000)
        );
        assert_eq!(input_tokens(body.as_bytes(), Operation::Chat), 1000);
        assert!(input_tokens_bound(body.as_bytes()) >= 1000);
        assert_eq!(input_tokens(b"{", Operation::Chat), 1);
    }
}

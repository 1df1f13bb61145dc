//! The two wire dialects a provider speaks, one module each: where each operation lives under a
//! provider's base URL, how a key and the dialect's version travel, which usage keys an answer
//! reports. The request path (`proxy`), the snapshot builder and catalog discovery ask here;
//! none of them spells a dialect's path or header. Pure: no I/O.

pub mod anthropic;
pub mod capability;
pub mod openai;

use crate::routing::model::{Operation, WireFormat};

/// The upstream path of `op` under a provider's base URL, in `format`'s dialect.
pub fn path(op: Operation, format: WireFormat) -> &'static str {
    match format {
        WireFormat::OpenAiChat => openai::path(op),
        WireFormat::AnthropicMessages => anthropic::path(op),
    }
}

/// The header that carries a provider's key in `format`'s dialect, as a name and a value.
pub fn key_header(format: WireFormat, key: &str) -> (&'static str, String) {
    match format {
        WireFormat::OpenAiChat => (openai::KEY_HEADER, format!("Bearer {key}")),
        WireFormat::AnthropicMessages => (anthropic::KEY_HEADER, key.to_string()),
    }
}

/// The API version header the dialect wants with every call (name, default value), if any.
pub fn version_header(format: WireFormat) -> Option<(&'static str, &'static str)> {
    match format {
        WireFormat::OpenAiChat => None,
        WireFormat::AnthropicMessages => Some((anthropic::VERSION_HEADER, anthropic::VERSION)),
    }
}

/// The keys of an answer's `usage` object that count input and output tokens.
pub fn usage_keys(format: WireFormat) -> (&'static str, &'static str) {
    match format {
        WireFormat::OpenAiChat => openai::USAGE_KEYS,
        WireFormat::AnthropicMessages => anthropic::USAGE_KEYS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_operation_has_its_path_in_each_dialect() {
        for op in Operation::ALL {
            for f in WireFormat::ALL {
                assert!(path(op, f).starts_with('/'), "{op:?} {f:?}");
            }
        }
        assert_eq!(
            path(Operation::Chat, WireFormat::OpenAiChat),
            "/chat/completions"
        );
        assert_eq!(
            path(Operation::Chat, WireFormat::AnthropicMessages),
            "/messages"
        );
        assert_eq!(
            path(Operation::Messages, WireFormat::OpenAiChat),
            "/chat/completions"
        );
    }

    #[test]
    fn keys_travel_in_each_dialects_own_header() {
        let (n, v) = key_header(WireFormat::OpenAiChat, "k");
        assert_eq!((n, v.as_str()), ("authorization", "Bearer k"));
        assert_eq!(version_header(WireFormat::OpenAiChat), None);
        let (n, v) = key_header(WireFormat::AnthropicMessages, "k");
        assert_eq!((n, v.as_str()), ("x-api-key", "k"));
        assert_eq!(
            version_header(WireFormat::AnthropicMessages),
            Some(("anthropic-version", anthropic::VERSION))
        );
    }
}

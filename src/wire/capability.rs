//! Which operations a provider can serve: by its wire dialect (the Anthropic dialect has only
//! chat and messages; token counting has no OpenAI route) and by its type where the vendor's
//! API is known to lack one (OpenAI has no rerank, DeepSeek only chat and completions).
//! OpenAI-compatible servers run by their users (vLLM, TEI, llama.cpp, ...) differ by build and
//! model, so they are taken to serve everything they are sent. Pure: no I/O.

use crate::config::providers::ProviderKind;
use crate::routing::model::{Operation, WireFormat};

/// Why a provider cannot serve an operation: a sentence for `resolve` and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    #[error("the Anthropic API serves only chat and messages")]
    AnthropicType,
    #[error("the Anthropic dialect (backend_format) carries only chat and messages")]
    AnthropicDialect,
    #[error("token counting exists only in the Anthropic dialect")]
    CountTokensNeedsAnthropic,
    #[error("OpenAI has no rerank API")]
    OpenAiRerank,
    #[error("this provider type serves only chat, completions and messages")]
    ChatOnly,
}

/// Whether a provider of `kind` spoken to in `format` can serve `op`. The mock answers every
/// operation itself.
pub fn serves(kind: ProviderKind, format: WireFormat, op: Operation) -> Result<(), Unsupported> {
    let conversational = matches!(
        op,
        Operation::Chat | Operation::Messages | Operation::CountTokens
    );
    match kind {
        ProviderKind::Mock => return Ok(()),
        ProviderKind::Anthropic if !conversational => return Err(Unsupported::AnthropicType),
        ProviderKind::OpenAi if op == Operation::Rerank => return Err(Unsupported::OpenAiRerank),
        ProviderKind::Compatible("deepseek") if !conversational && op != Operation::Completion => {
            return Err(Unsupported::ChatOnly)
        }
        ProviderKind::Anthropic | ProviderKind::OpenAi | ProviderKind::Compatible(_) => {}
    }
    match format {
        WireFormat::AnthropicMessages if !conversational => Err(Unsupported::AnthropicDialect),
        WireFormat::OpenAiChat if op == Operation::CountTokens => {
            Err(Unsupported::CountTokensNeedsAnthropic)
        }
        WireFormat::AnthropicMessages | WireFormat::OpenAiChat => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_serves_only_chat_and_messages() {
        let a = ProviderKind::Anthropic;
        for op in [Operation::Chat, Operation::Messages, Operation::CountTokens] {
            assert_eq!(serves(a, WireFormat::AnthropicMessages, op), Ok(()));
        }
        for op in [
            Operation::Transcription,
            Operation::Speech,
            Operation::Rerank,
            Operation::Embedding,
        ] {
            assert_eq!(
                serves(a, WireFormat::AnthropicMessages, op),
                Err(Unsupported::AnthropicType)
            );
        }
    }

    #[test]
    fn openai_serves_audio_images_and_moderation_but_not_rerank() {
        let o = ProviderKind::OpenAi;
        for op in [
            Operation::Transcription,
            Operation::Translation,
            Operation::Speech,
            Operation::Moderation,
            Operation::ImageGeneration,
        ] {
            assert_eq!(serves(o, WireFormat::OpenAiChat, op), Ok(()));
        }
        assert_eq!(
            serves(o, WireFormat::OpenAiChat, Operation::Rerank),
            Err(Unsupported::OpenAiRerank)
        );
        assert_eq!(
            serves(o, WireFormat::OpenAiChat, Operation::CountTokens),
            Err(Unsupported::CountTokensNeedsAnthropic)
        );
    }

    #[test]
    fn self_hosted_servers_and_the_mock_serve_everything() {
        for op in Operation::ALL
            .into_iter()
            .filter(|o| *o != Operation::CountTokens)
        {
            let vllm = ProviderKind::Compatible("vllm");
            assert_eq!(serves(vllm, WireFormat::OpenAiChat, op), Ok(()), "{op:?}");
        }
        for op in Operation::ALL {
            assert_eq!(
                serves(ProviderKind::Mock, WireFormat::OpenAiChat, op),
                Ok(())
            );
        }
    }

    #[test]
    fn an_anthropic_backend_format_carries_only_conversations() {
        let vllm = ProviderKind::Compatible("vllm");
        assert_eq!(
            serves(vllm, WireFormat::AnthropicMessages, Operation::Rerank),
            Err(Unsupported::AnthropicDialect)
        );
    }
}

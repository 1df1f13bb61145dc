//! The record of one finished request that the post-response middlewares receive: what was
//! asked for, what answered, how long it took and what it cost. Filled by the proxy once the
//! last byte reached the client; serialized once per request however many steps use it.

use serde::Serialize;

/// `{request_id, virtual_model, served_model, user_path, status, attempts, duration_ms, ttft_ms,
/// usage: {prompt_tokens, completion_tokens}, cost_usd}`; unknown values are `null`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Record {
    pub request_id: String,
    pub virtual_model: String,
    /// `provider/model` that answered (or was last tried).
    pub served_model: Option<String>,
    pub user_path: Option<String>,
    pub status: u16,
    pub attempts: u32,
    pub duration_ms: u64,
    /// Time to the first response byte.
    pub ttft_ms: Option<u64>,
    pub usage: Usage,
    pub cost_usd: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_every_field_in_the_documented_shape() {
        let r = Record {
            request_id: "r1".into(),
            virtual_model: "smart".into(),
            served_model: Some("openai/gpt-4o".into()),
            user_path: None,
            status: 200,
            attempts: 2,
            duration_ms: 120,
            ttft_ms: Some(40),
            usage: Usage {
                prompt_tokens: Some(10),
                completion_tokens: Some(5),
            },
            cost_usd: Some(0.0001),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap_or_default(),
            r#"{"request_id":"r1","virtual_model":"smart","served_model":"openai/gpt-4o","user_path":null,"status":200,"attempts":2,"duration_ms":120,"ttft_ms":40,"usage":{"prompt_tokens":10,"completion_tokens":5},"cost_usd":0.0001}"#
        );
    }
}

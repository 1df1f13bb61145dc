//! A request's estimate before it goes upstream: input tokens as the body's characters / 4
//! (the JSON around the text counts too: the estimate errs high), plus the output it asks for
//! at most (`max_tokens`, `max_completion_tokens` or `max_output_tokens`) or a default. The
//! body is scanned, not parsed; a name inside a string may be mistaken for the field, which
//! only moves an estimate.

use memchr::memmem;

const FIELDS: [&[u8]; 3] = [
    b"\"max_tokens\"",
    b"\"max_completion_tokens\"",
    b"\"max_output_tokens\"",
];

/// The output limit a body names, when it names one as a whole number.
pub fn max_tokens(body: &[u8]) -> Option<u64> {
    FIELDS.iter().find_map(|f| {
        memmem::find_iter(body, f).find_map(|at| {
            let rest = &body[at + f.len()..];
            let rest = trim(rest).strip_prefix(b":")?;
            let rest = trim(rest);
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
        })
    })
}

fn trim(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

/// (input, output) tokens estimated for a body.
pub fn tokens(body: &[u8], default_max: u64) -> (u64, u64) {
    (
        (body.len() as u64).div_ceil(4),
        max_tokens(body).unwrap_or(default_max),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_output_limit_is_read_in_any_spelling() {
        assert_eq!(max_tokens(br#"{"model":"m","max_tokens": 300}"#), Some(300));
        assert_eq!(
            max_tokens(br#"{"max_completion_tokens" :12,"x":1}"#),
            Some(12)
        );
        assert_eq!(max_tokens(br#"{"max_output_tokens":7}"#), Some(7));
        assert_eq!(max_tokens(br#"{"max_tokens":null}"#), None);
        assert_eq!(max_tokens(br#"{"model":"m"}"#), None);
    }

    #[test]
    fn input_is_a_quarter_of_the_characters() {
        let body = br#"{"model":"m","messages":[]}"#;
        assert_eq!(tokens(body, 100), (7, 100));
    }
}

//! `.env` files read as GoModel reads them (the rules of Go's godotenv), so that a GoModel
//! user's file loads unchanged: an unquoted value is the rest of its line as written, quotes
//! inside it included (`VIRTUAL_MODELS=[{"source":"smart",...}]`, as GoModel's documentation
//! writes it); a shell-style reader would strip those quotes and break the JSON.
//!
//! - blank lines and lines starting with `#` are skipped; a line may start with `export `;
//! - `KEY=value` (or `KEY: value`); spaces around the key and before the value are dropped;
//! - `'single quoted'`: the text as written, over several lines if it has them;
//! - `"double quoted"`: over several lines too, with `\n`, `\r`, `\t`, `\"`, `\\` and `\$`
//!   escapes, and variables expanded;
//! - unquoted: up to the end of the line or a `#` after a space (a comment), trailing spaces
//!   dropped, variables expanded;
//! - after a closing quote, only spaces and a `#` comment may follow.
//!
//! Variables are `${NAME}` or `$NAME` (a name starts with a letter or `_`, so `$5` is text): a
//! variable set earlier in the file, else the process environment, else empty.

/// The variables of `text` in file order; `outer` looks a name up outside the file.
pub fn parse(
    text: &str,
    outer: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out: Vec<(String, String)> = Vec::new();
    let mut rest = text;
    let mut line_no = 0usize;
    while !rest.is_empty() {
        line_no += 1;
        let (line, after) = split_line(rest);
        rest = after;
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let body = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        let Some(at) = body.find(['=', ':']) else {
            return Err(format!(
                "line {line_no}: expected KEY=value, found {:?}",
                line.trim_end()
            ));
        };
        let key = body[..at].trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!("line {line_no}: invalid variable name {key:?}"));
        }
        let value_start = body[at + 1..].trim_start_matches([' ', '\t']);
        let lookup = |name: &str| -> String {
            out.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| outer(name))
                .unwrap_or_default()
        };
        let value = match value_start.chars().next() {
            Some(q @ ('\'' | '"')) => {
                // The value runs to the closing quote, which may be on a later line.
                let opened = line_no;
                let whole = &value_start[1..];
                let mut joined = whole.to_string();
                let close = loop {
                    if let Some(i) = closing_quote(&joined, q) {
                        break i;
                    }
                    if rest.is_empty() {
                        return Err(format!(
                            "line {opened}: {key}: the {q} quote is never closed"
                        ));
                    }
                    let (next, after) = split_line(rest);
                    rest = after;
                    line_no += 1;
                    joined.push('\n');
                    joined.push_str(next);
                };
                let tail = joined[close + 1..].trim();
                if !(tail.is_empty() || tail.starts_with('#')) {
                    return Err(format!(
                        "line {line_no}: {key}: unexpected {tail:?} after the closing quote"
                    ));
                }
                let inner = &joined[..close];
                if q == '\'' {
                    inner.to_string()
                } else {
                    expand(&unescape(inner), &lookup)
                }
            }
            _ => {
                let end = comment_start(value_start).unwrap_or(value_start.len());
                expand(value_start[..end].trim_end(), &lookup)
            }
        };
        out.push((key.to_string(), value));
    }
    Ok(out)
}

/// The first line of `s` (without its `\n` or `\r\n`) and what follows it.
fn split_line(s: &str) -> (&str, &str) {
    match s.find('\n') {
        Some(i) => (s[..i].strip_suffix('\r').unwrap_or(&s[..i]), &s[i + 1..]),
        None => (s, ""),
    }
}

/// Where the closing `q` of a quoted value is (a double quote escaped by `\` does not close).
fn closing_quote(s: &str, q: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if q == '"' && !escaped => escaped = true,
            c if c == q && !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

/// Where a comment starts in an unquoted value: a `#` after a space or tab.
fn comment_start(s: &str) -> Option<usize> {
    s.char_indices()
        .zip(s.chars().skip(1))
        .find(|((_, c), next)| matches!(c, ' ' | '\t') && *next == '#')
        .map(|((i, _), _)| i)
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            // `\$` stays escaped for `expand`, which writes a plain `$`.
            Some('$') => out.push_str("\\$"),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// `${NAME}` and `$NAME` replaced by their values; `\$` is a plain `$`.
fn expand(s: &str, lookup: &impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let b = s.as_bytes();
    let name_char = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while i < b.len() {
        match b[i] {
            b'\\' if b.get(i + 1) == Some(&b'$') => {
                out.push('$');
                i += 2;
            }
            b'$' if b.get(i + 1) == Some(&b'{') => match s[i + 2..].find('}') {
                Some(len) if s[i + 2..i + 2 + len].bytes().all(name_char) && len > 0 => {
                    out.push_str(&lookup(&s[i + 2..i + 2 + len]));
                    i += len + 3;
                }
                _ => {
                    out.push('$');
                    i += 1;
                }
            },
            b'$' if b
                .get(i + 1)
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_') =>
            {
                let len = b[i + 1..].iter().take_while(|c| name_char(**c)).count();
                out.push_str(&lookup(&s[i + 1..i + 1 + len]));
                i += len + 1;
            }
            _ => {
                // Copy one whole character (values may hold any UTF-8).
                let ch = s[i..].chars().next().unwrap_or_default();
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(text: &str) -> Vec<(String, String)> {
        parse(text, |k| (k == "OUTSIDE").then(|| "out".to_string())).unwrap()
    }

    fn one(text: &str) -> String {
        vars(text).pop().unwrap().1
    }

    #[test]
    fn an_unquoted_json_value_keeps_its_quotes() {
        let line = r#"VIRTUAL_MODELS=[{"source":"smart","strategy":"cost","targets":[{"model":"openai/gpt-4o"},{"model":"groq/llama-3.3-70b"}]}]"#;
        assert_eq!(one(line), line.split_once('=').unwrap().1);
    }

    #[test]
    fn quotes_comments_exports_and_blank_lines() {
        let text = "# a comment\n\nexport A=1\nB = two words  # note\nC='single $A \\n'\nD=\"x\\ty\\\"z\\\" $A\"  # after\nE=hash#inside\nF=\nG: colon\r\n";
        assert_eq!(
            vars(text),
            [
                ("A", "1"),
                ("B", "two words"),
                ("C", "single $A \\n"),
                ("D", "x\ty\"z\" 1"),
                ("E", "hash#inside"),
                ("F", ""),
                ("G", "colon"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn quoted_values_may_span_lines() {
        assert_eq!(one("K=\"line one\nline two\"\n"), "line one\nline two");
        assert_eq!(one("K='a\nb' # c\n"), "a\nb");
    }

    #[test]
    fn variables_come_from_the_file_then_outside() {
        let v = vars("A=x\nB=${A}-$A-${OUTSIDE}-$MISSING-\\$A\nC=\"${B}\"\n");
        assert_eq!(v[1].1, "x-x-out--$A");
        assert_eq!(v[2].1, "x-x-out--$A");
        assert_eq!(one("P=cost: $5 and ${} and $"), "cost: $5 and ${} and $");
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("A=1\nnot a pair\n", |_| None).unwrap_err();
        assert!(e.starts_with("line 2: expected KEY=value"), "{e}");
        let e = parse("A=1\nB=\"open\nstill\n", |_| None).unwrap_err();
        assert!(
            e.starts_with("line 2: B: the \" quote is never closed"),
            "{e}"
        );
        let e = parse("A='x' y\n", |_| None).unwrap_err();
        assert!(
            e.contains("unexpected \"y\" after the closing quote"),
            "{e}"
        );
        let e = parse("MY KEY=1\n", |_| None).unwrap_err();
        assert!(e.contains("invalid variable name \"MY KEY\""), "{e}");
    }
}

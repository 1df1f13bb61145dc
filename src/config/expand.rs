//! `${VAR}` and `${VAR:-default}` expansion inside the string values of a parsed config.
//!
//! Expansion runs on parsed YAML scalars, never on raw text, so a value containing YAML syntax
//! cannot change the document's structure. A missing variable without a default expands to "".

use super::env::Env;

/// Expands every `${...}` in `input`. `$$` stays a literal `$`.
pub fn expand(input: &str, env: &Env) -> Result<String, String> {
    if !input.contains('$') {
        return Ok(input.to_string());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {input:?}"))?;
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("${{{inner}}} is not a valid variable reference"));
            }
            match (env.get(name), default) {
                (Some(v), _) => out.push_str(v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {}
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether a document read from `text` can hold a `$` in any string: a `$` in the text, or an
/// escape that decodes to one (JSON's `\u0024`; YAML's `\x24`, `\u0024` and `\U00000024`).
/// When it cannot, `expand_yaml` has nothing to do and its walk over the whole tree (a tenth of
/// the load of 100,000 virtual models) is skipped.
pub fn text_may_hold_variables(text: &str) -> bool {
    text.contains('$')
        || (text.contains('\\')
            && ["\\x24", "\\u0024", "\\U00000024"]
                .iter()
                .any(|escape| text.contains(escape)))
}

/// Expands every string scalar of a YAML document in place; the error names the failing value's
/// path (`providers.openai.api_key`).
pub fn expand_yaml(value: &mut serde_yaml::Value, env: &Env, path: &str) -> Result<(), String> {
    expand_node(value, env).map_err(|(at, e)| {
        let full = match (path.is_empty(), at.is_empty()) {
            (true, _) => at,
            (false, true) => path.to_string(),
            (false, false) => format!("{path}.{at}"),
        };
        format!("{full}: {e}")
    })
}

/// The walk behind `expand_yaml`. Paths are built only on the way out of an error, so a large
/// config (10,000 virtual models) allocates nothing for values without `$`.
fn expand_node(value: &mut serde_yaml::Value, env: &Env) -> Result<(), (String, String)> {
    match value {
        serde_yaml::Value::String(s) if s.contains('$') => {
            let expanded = expand(s, env).map_err(|e| (String::new(), e))?;
            // `port: ${PORT:-8080}` must stay a number: re-type values made by substitution.
            if s.contains("${") {
                if let Ok(v @ (serde_yaml::Value::Number(_) | serde_yaml::Value::Bool(_))) =
                    serde_yaml::from_str::<serde_yaml::Value>(&expanded)
                {
                    *value = v;
                    return Ok(());
                }
            }
            *s = expanded;
        }
        serde_yaml::Value::Sequence(seq) => {
            for (i, v) in seq.iter_mut().enumerate() {
                expand_node(v, env).map_err(|(at, e)| {
                    let sep = if at.is_empty() || at.starts_with('[') {
                        ""
                    } else {
                        "."
                    };
                    (format!("[{i}]{sep}{at}"), e)
                })?;
            }
        }
        serde_yaml::Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                expand_node(v, env).map_err(|(at, e)| {
                    let key = k.as_str().unwrap_or("?");
                    let joined = if at.is_empty() {
                        key.to_string()
                    } else if at.starts_with('[') {
                        format!("{key}{at}")
                    } else {
                        format!("{key}.{at}")
                    };
                    (joined, e)
                })?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env::from_pairs([("KEY", "secret"), ("EMPTY", "")])
    }

    #[test]
    fn only_a_dollar_or_an_escape_of_one_can_hold_a_variable() {
        assert!(!text_may_hold_variables("a: b\nc: [d, 'e']\n"));
        assert!(!text_may_hold_variables(r#"{"a": "\n\u0025"}"#));
        assert!(text_may_hold_variables("key: ${KEY}"));
        assert!(text_may_hold_variables("key: $$"));
        assert!(text_may_hold_variables(r#"{"key": "\u0024{KEY}"}"#));
        assert!(text_may_hold_variables(r#"key: "\x24{KEY}""#));
        assert!(text_may_hold_variables(r#"key: "\U00000024{KEY}""#));
    }

    #[test]
    fn plain_variable_is_replaced() {
        assert_eq!(expand("a ${KEY} b", &env()).unwrap(), "a secret b");
    }

    #[test]
    fn default_applies_when_unset_or_empty() {
        assert_eq!(expand("${NOPE:-x}", &env()).unwrap(), "x");
        assert_eq!(expand("${EMPTY:-y}", &env()).unwrap(), "y");
        assert_eq!(expand("${KEY:-y}", &env()).unwrap(), "secret");
    }

    #[test]
    fn missing_without_default_is_empty() {
        assert_eq!(expand("[${NOPE}]", &env()).unwrap(), "[]");
    }

    #[test]
    fn dollar_dollar_is_literal() {
        assert_eq!(expand("$${KEY}", &env()).unwrap(), "${KEY}");
    }

    #[test]
    fn errors_name_the_path_of_the_value() {
        let mut doc: serde_yaml::Value =
            serde_yaml::from_str("providers:\n  openai:\n    models: [a, \"${BAD\"]\n").unwrap();
        let err = expand_yaml(&mut doc, &env(), "").unwrap_err();
        assert!(
            err.starts_with("providers.openai.models[1]: unclosed"),
            "{err}"
        );
    }

    #[test]
    fn substituted_numbers_stay_numbers() {
        let mut doc: serde_yaml::Value = serde_yaml::from_str("port: ${NOPE:-8080}\n").unwrap();
        expand_yaml(&mut doc, &env(), "").unwrap();
        assert_eq!(doc["port"], serde_yaml::Value::from(8080));
    }

    #[test]
    fn unclosed_reference_is_an_error() {
        assert!(expand("${KEY", &env()).unwrap_err().contains("unclosed"));
    }
}

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

/// Expands every string scalar of a YAML document in place; `path` names the failing value.
pub fn expand_yaml(value: &mut serde_yaml::Value, env: &Env, path: &str) -> Result<(), String> {
    match value {
        serde_yaml::Value::String(s) => {
            let expanded = expand(s, env).map_err(|e| format!("{path}: {e}"))?;
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
                expand_yaml(v, env, &format!("{path}[{i}]"))?;
            }
        }
        serde_yaml::Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = k.as_str().unwrap_or("?");
                let child = if path.is_empty() {
                    key.to_string()
                } else {
                    format!("{path}.{key}")
                };
                expand_yaml(v, env, &child)?;
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
    fn unclosed_reference_is_an_error() {
        assert!(expand("${KEY", &env()).unwrap_err().contains("unclosed"));
    }
}

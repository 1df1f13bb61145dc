//! Pattern replacement shared by `guard` (request text) and `redact` (answer text, whole or
//! streamed): a list of `{pattern, replacement}` rules applied together in one pass.
//!
//! Semantics, the same for a whole text and for a stream: scanning left to right, the leftmost
//! match of any rule is replaced (on a tie the earlier rule wins), and scanning resumes after it.
//! `scan` with a window is the streaming form: it replaces only matches it can no longer get
//! wrong and keeps back the last `window` characters, so a match shorter than the window that
//! is split across events is still found. Never allocates when nothing matches.

use std::borrow::Cow;

use regex::{Regex, RegexSet};
use serde::Deserialize;

use super::build::{FieldProblem, Problem};

/// `{pattern, replacement}` as written in config; `replacement` defaults to `[REDACTED]` and may
/// name groups (`$1`, `${name}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleSpec {
    pub pattern: String,
    #[serde(default = "default_replacement")]
    pub replacement: String,
}

fn default_replacement() -> String {
    "[REDACTED]".into()
}

/// Compiles one pattern; one that matches the empty string is refused, since it would match
/// between every two characters.
pub(super) fn compile_regex(pattern: &str, field: &str) -> Result<Regex, FieldProblem> {
    let regex = Regex::new(pattern).map_err(|e| {
        FieldProblem::new(
            field,
            Problem::Regex {
                pattern: pattern.into(),
                error: e.to_string(),
            },
        )
    })?;
    if regex.is_match("") {
        return Err(FieldProblem::invalid(
            field,
            format!("pattern {pattern:?} matches the empty string; it would match everywhere"),
        ));
    }
    Ok(regex)
}

/// Tells whether any of several patterns matches a text, and which ones.
///
/// The question asked of nearly every piece of text is "does anything match?", and the answer
/// is nearly always no. A `RegexSet` answers it slowly on long texts: its prefilter merges every
/// pattern's literals (a case-insensitive word alone is dozens of case variants), and on a
/// 200 KB body it costs about 18 instructions per byte, against about 1 for one regex that is
/// the alternation of the patterns (`benches/middleware.rs`, "guard"; BENCHMARKS.md). So the
/// alternation answers that question and the set is asked which patterns matched only for the
/// rare text that matches. Patterns that cannot be joined into one (two name the same group)
/// are each asked in turn.
#[derive(Debug)]
pub(super) struct AnyOf {
    quick: Quick,
    set: RegexSet,
}

#[derive(Debug)]
enum Quick {
    Joined(Regex),
    Each(Vec<Regex>),
}

impl AnyOf {
    /// Compiles patterns that each compiled alone already; the error is the set's (patterns
    /// together can still exceed the size limit).
    pub fn new(patterns: &[&str]) -> Result<AnyOf, regex::Error> {
        let set = RegexSet::new(patterns)?;
        let joined = patterns
            .iter()
            .map(|p| format!("(?:{p})"))
            .collect::<Vec<_>>()
            .join("|");
        let quick = match Regex::new(&joined) {
            Ok(regex) => Quick::Joined(regex),
            Err(_) => Quick::Each(
                patterns
                    .iter()
                    .map(|p| Regex::new(p))
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(AnyOf { quick, set })
    }

    pub fn is_match(&self, text: &str) -> bool {
        match &self.quick {
            Quick::Joined(regex) => regex.is_match(text),
            Quick::Each(regexes) => regexes.iter().any(|r| r.is_match(text)),
        }
    }

    /// The index of the first pattern (in the order given) that matches `text`.
    pub fn first_match(&self, text: &str) -> Option<usize> {
        if !self.is_match(text) {
            return None;
        }
        self.set.matches(text).iter().next()
    }
}

#[derive(Debug)]
struct Rule {
    regex: Regex,
    replacement: String,
    /// The replacement names groups, so the match's captures are needed.
    expands: bool,
}

/// A compiled rule list.
#[derive(Debug)]
pub(super) struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// `field` names the list (`redact`, `patterns`) for errors: `patterns[2].pattern`.
    pub fn compile(specs: &[RuleSpec], field: &str) -> Result<Rules, Vec<FieldProblem>> {
        let mut rules = Vec::new();
        let mut problems = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            match compile_regex(&spec.pattern, &format!("{field}[{i}].pattern")) {
                Ok(regex) => rules.push(Rule {
                    regex,
                    expands: spec.replacement.contains('$'),
                    replacement: spec.replacement.clone(),
                }),
                Err(p) => problems.push(p),
            }
        }
        if problems.is_empty() {
            Ok(Rules { rules })
        } else {
            Err(problems)
        }
    }

    /// Replaces every match in `text`; borrows it when nothing matches.
    pub fn replace_all<'t>(&self, text: &'t str) -> Cow<'t, str> {
        if !self.rules.iter().any(|r| r.regex.is_match(text)) {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        self.scan(text, &mut out, None);
        Cow::Owned(out)
    }

    /// Appends `text` with its matches replaced to `out` and returns how many bytes of `text`
    /// that covers. With `hold: Some(w)` the text that a longer stream could still match
    /// differently stays out (at most the last `w` characters): the caller keeps it and passes
    /// it again in front of the next piece. With `None` all of `text` is covered.
    pub fn scan(&self, text: &str, out: &mut String, hold: Option<usize>) -> usize {
        // Matches starting before `limit` are final: at least `w` characters follow their
        // start, and a match shorter than the window cannot change with more text. Text before
        // `limit` that no match covers can no longer be part of one.
        let limit = match hold {
            None | Some(0) => text.len(),
            Some(w) => text.char_indices().rev().nth(w - 1).map_or(0, |(i, _)| i),
        };
        // Each rule's next match at or after the cursor, searched again only once passed (a
        // rule with no match from an earlier cursor has none from a later one either).
        let mut next: Vec<Option<regex::Match<'_>>> = vec![None; self.rules.len()];
        let mut searched = vec![false; self.rules.len()];
        let mut pos = 0;
        loop {
            let mut best: Option<(usize, regex::Match<'_>)> = None;
            for (i, rule) in self.rules.iter().enumerate() {
                if !searched[i] || next[i].is_some_and(|m| m.start() < pos) {
                    next[i] = rule.regex.find_at(text, pos);
                    searched[i] = true;
                }
                if let Some(m) = next[i] {
                    if best.is_none_or(|(_, b)| m.start() < b.start()) {
                        best = Some((i, m));
                    }
                }
            }
            match best {
                Some((i, m)) if m.start() < limit => {
                    out.push_str(&text[pos..m.start()]);
                    let rule = &self.rules[i];
                    if rule.expands {
                        if let Some(caps) = rule.regex.captures_at(text, m.start()) {
                            caps.expand(&rule.replacement, out);
                        }
                    } else {
                        out.push_str(&rule.replacement);
                    }
                    pos = m.end();
                }
                _ => {
                    let end = limit.max(pos);
                    out.push_str(&text[pos..end]);
                    return end;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(specs: &[(&str, &str)]) -> Rules {
        let specs: Vec<RuleSpec> = specs
            .iter()
            .map(|(p, r)| RuleSpec {
                pattern: p.to_string(),
                replacement: r.to_string(),
            })
            .collect();
        Rules::compile(&specs, "patterns").expect("valid patterns")
    }

    #[test]
    fn any_of_finds_the_first_matching_pattern_joined_or_each() {
        let any = AnyOf::new(&["(?i)ignore (all|previous) instructions", "sk-[a-z]{4}"])
            .expect("patterns");
        assert!(matches!(any.quick, Quick::Joined(_)));
        assert_eq!(any.first_match("nothing here"), None);
        assert_eq!(any.first_match("key sk-abcd"), Some(1));
        assert_eq!(any.first_match("IGNORE ALL INSTRUCTIONS, sk-abcd"), Some(0));
        // The flag of one pattern does not leak into the next.
        assert_eq!(any.first_match("SK-ABCD"), None);
        // Two patterns naming the same group cannot be joined: each is asked in turn.
        let any = AnyOf::new(&["(?P<k>a+)b", "(?P<k>c+)d"]).expect("patterns");
        assert!(matches!(any.quick, Quick::Each(_)));
        assert_eq!(any.first_match("xxccd"), Some(1));
        assert_eq!(any.first_match("xx"), None);
    }

    #[test]
    fn the_leftmost_match_of_any_rule_wins_and_ties_go_to_the_earlier_rule() {
        let r = rules(&[("bc", "1"), ("ab", "2"), ("b", "3")]);
        assert_eq!(r.replace_all("abc bc b"), "2c 1 3");
    }

    #[test]
    fn replacements_may_name_groups() {
        let r = rules(&[(r"(\w+)@(\w+)\.com", "$1 at ${2}")]);
        assert_eq!(
            r.replace_all("mail ann@corp.com now"),
            "mail ann at corp now"
        );
    }

    #[test]
    fn no_match_borrows() {
        let r = rules(&[("secret", "x")]);
        assert!(matches!(r.replace_all("all clear"), Cow::Borrowed(_)));
        assert_eq!(r.replace_all(""), "");
    }

    #[test]
    fn an_invalid_or_empty_matching_pattern_is_refused_with_its_index() {
        let specs = vec![
            RuleSpec {
                pattern: "ok".into(),
                replacement: "x".into(),
            },
            RuleSpec {
                pattern: "(unclosed".into(),
                replacement: "x".into(),
            },
            RuleSpec {
                pattern: "a*".into(),
                replacement: "x".into(),
            },
        ];
        let problems = Rules::compile(&specs, "patterns").unwrap_err();
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].field, "patterns[1].pattern");
        assert!(problems[0]
            .problem
            .to_string()
            .starts_with("invalid regular expression \"(unclosed\""));
        assert_eq!(problems[1].field, "patterns[2].pattern");
        assert!(problems[1].problem.to_string().contains("empty string"));
    }

    #[test]
    fn scan_keeps_back_the_window_and_what_a_match_may_still_cover() {
        let r = rules(&[("secret", "***")]);
        let mut out = String::new();
        // 10 chars, window 4: the last 4 stay back.
        assert_eq!(r.scan("abcdefsecr", &mut out, Some(4)), 6);
        assert_eq!(out, "abcdef");
        out.clear();
        assert_eq!(r.scan("secret and more", &mut out, Some(4)), 11);
        assert_eq!(out, "*** and ");
    }
}

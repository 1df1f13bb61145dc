//! Caller paths (`/team/alpha`): parsing, normalization and whole-segment matching.
//!
//! A `UserPath` is always normalized: leading `/`, no empty segments, no trailing `/`.
//! This module never looks at headers or requests; it only parses strings handed to it.

use std::fmt;

use smol_str::SmolStr;

/// Held as a `SmolStr`: a request's path is cloned into its usage sample and its limits'
/// counters, and a short path (nearly all) clones without allocating.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserPath(SmolStr);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserPathError {
    #[error("user path {0:?} contains a '.' or '..' segment")]
    DotSegment(String),
    #[error("user path {0:?} contains ':'")]
    Colon(String),
    #[error("user path {0:?} contains a control character")]
    Control(String),
}

impl UserPath {
    /// The root path `/`, which covers every caller.
    pub fn root() -> UserPath {
        UserPath(SmolStr::new_static("/"))
    }

    /// Trims, adds the leading `/`, drops empty segments; rejects `.`/`..` segments and `:`.
    pub fn parse(raw: &str) -> Result<UserPath, UserPathError> {
        let t = raw.trim();
        if t.contains(':') {
            return Err(UserPathError::Colon(raw.to_string()));
        }
        if t.chars().any(char::is_control) {
            return Err(UserPathError::Control(raw.to_string()));
        }
        let mut out = String::with_capacity(t.len() + 1);
        for seg in t.split('/').filter(|s| !s.is_empty()) {
            if seg == "." || seg == ".." {
                return Err(UserPathError::DotSegment(raw.to_string()));
            }
            out.push('/');
            out.push_str(seg);
        }
        if out.is_empty() {
            out.push('/');
        }
        Ok(UserPath(SmolStr::from(out)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path as a `SmolStr`, without copying it.
    pub fn to_smol(&self) -> SmolStr {
        self.0.clone()
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// True when `self` equals `caller` or is an ancestor of it by whole segments.
    pub fn covers(&self, caller: &UserPath) -> bool {
        if self.is_root() {
            return true;
        }
        match caller.0.strip_prefix(self.0.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

impl fmt::Display for UserPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a list of allowed paths admits a caller. `/` admits everyone, even callers without
/// a path; any other entry needs a caller path it covers.
pub fn list_admits(list: &[UserPath], caller: Option<&UserPath>) -> bool {
    list.iter().any(|p| match caller {
        _ if p.is_root() => true,
        Some(c) => p.covers(c),
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> UserPath {
        UserPath::parse(s).unwrap()
    }

    #[test]
    fn normalizes_slashes_and_whitespace() {
        assert_eq!(p("  team//alpha/ ").as_str(), "/team/alpha");
        assert_eq!(p("").as_str(), "/");
        assert_eq!(p("///").as_str(), "/");
    }

    #[test]
    fn rejects_dot_segments_and_colons() {
        assert!(matches!(
            UserPath::parse("/a/../b"),
            Err(UserPathError::DotSegment(_))
        ));
        assert!(matches!(
            UserPath::parse("/a/./b"),
            Err(UserPathError::DotSegment(_))
        ));
        assert!(matches!(
            UserPath::parse("/a:b"),
            Err(UserPathError::Colon(_))
        ));
    }

    #[test]
    fn covers_by_whole_segments() {
        assert!(p("/team").covers(&p("/team")));
        assert!(p("/team").covers(&p("/team/x")));
        assert!(!p("/team").covers(&p("/team-x")));
        assert!(!p("/team/x").covers(&p("/team")));
        assert!(p("/").covers(&p("/anything")));
    }

    #[test]
    fn root_in_list_admits_callers_without_path() {
        assert!(list_admits(&[p("/")], None));
        assert!(!list_admits(&[p("/team")], None));
        assert!(list_admits(&[p("/team")], Some(&p("/team/a"))));
    }
}

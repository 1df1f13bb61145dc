//! Where a store lives, parsed once at the edge: `sqlite:PATH` or a PostgreSQL URL
//! (`postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE`), with the form shown in logs, status
//! and errors (never the password).
//!
//! Nothing here opens a file or a connection.

use std::path::PathBuf;

/// A parsed PostgreSQL URL.
#[derive(Clone)]
pub struct PgUrl {
    pub config: tokio_postgres::Config,
    /// The URL without its password.
    pub shown: String,
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Either store, as `store copy` names them.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Sqlite(PathBuf),
    Postgres(Box<PgUrl>),
}

impl Endpoint {
    /// `sqlite:PATH` or `postgres://...` / `postgresql://...`; `what` names the flag or variable
    /// in the error.
    pub fn parse(raw: &str, what: &str) -> Result<Endpoint, String> {
        let t = raw.trim();
        if let Some(path) = t.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(format!(
                    "{what} {raw:?}: sqlite: needs a file path, e.g. sqlite:data/modelgate.db"
                ));
            }
            return Ok(Endpoint::Sqlite(PathBuf::from(path)));
        }
        if t.starts_with("postgres://") || t.starts_with("postgresql://") {
            return PgUrl::parse(t, what).map(|u| Endpoint::Postgres(Box::new(u)));
        }
        Err(format!(
            "{what} {:?} is neither sqlite:PATH nor a postgresql:// URL",
            redact(t)
        ))
    }

    pub fn shown(&self) -> String {
        match self {
            Endpoint::Sqlite(p) => format!("sqlite:{}", p.display()),
            Endpoint::Postgres(u) => u.shown.clone(),
        }
    }
}

impl PgUrl {
    /// Parses a `postgres://` or `postgresql://` URL; `what` names where it came from.
    pub fn parse(raw: &str, what: &str) -> Result<PgUrl, String> {
        let t = raw.trim();
        let hint = "write it as postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE";
        if !(t.starts_with("postgres://") || t.starts_with("postgresql://")) {
            return Err(format!(
                "{what} {:?} is not a PostgreSQL URL; {hint}",
                redact(t)
            ));
        }
        let config: tokio_postgres::Config = t
            .parse()
            .map_err(|e| format!("{what} {:?} is not a valid URL ({e}); {hint}", redact(t)))?;
        if config.get_hosts().is_empty() {
            return Err(format!("{what} {:?} names no host; {hint}", redact(t)));
        }
        if config.get_user().is_none() {
            return Err(format!("{what} {:?} names no user; {hint}", redact(t)));
        }
        if matches!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        ) {
            return Err(format!(
                "{what} {:?} asks for TLS (sslmode=require), which modelgate does not speak to PostgreSQL yet; reach the database over a private network or a local TLS proxy, and drop sslmode",
                redact(t)
            ));
        }
        let shown = show(&config);
        Ok(PgUrl { config, shown })
    }
}

/// `postgresql://user@host:port/db` from a parsed config.
fn show(c: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            };
            match c.get_ports().get(i).or(c.get_ports().first()) {
                Some(p) => format!("{host}:{p}"),
                None => host,
            }
        })
        .collect();
    format!(
        "postgresql://{}@{}/{}",
        c.get_user().unwrap_or(""),
        hosts.join(","),
        c.get_dbname().unwrap_or("")
    )
}

/// A URL with any `user:password@` password replaced, for error messages about text that did
/// not even parse.
pub fn redact(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return raw.to_string();
    };
    match rest.rsplit_once('@') {
        Some((cred, host)) => match cred.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => raw.to_string(),
        },
        None => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_without_its_password() {
        let u = PgUrl::parse(
            "postgresql://app:s3cret@db.internal:6432/gate",
            "POSTGRES_URL",
        )
        .unwrap();
        assert_eq!(u.shown, "postgresql://app@db.internal:6432/gate");
        assert!(!format!("{u:?}").contains("s3cret"));
    }

    #[test]
    fn bad_urls_are_named_with_the_fix() {
        let e = PgUrl::parse("mysql://root@x/db", "POSTGRES_URL").unwrap_err();
        assert!(
            e.starts_with("POSTGRES_URL \"mysql://root@x/db\" is not a PostgreSQL URL"),
            "{e}"
        );
        assert!(e.contains("postgresql://USER"), "{e}");
        let e = PgUrl::parse("postgresql://u:pw@h:notaport/db", "--to").unwrap_err();
        assert!(e.starts_with("--to"), "{e}");
        assert!(!e.contains("pw@"), "{e}");
        let e = PgUrl::parse("postgresql:///db", "POSTGRES_URL").unwrap_err();
        assert!(e.contains("names no host"), "{e}");
        let e = PgUrl::parse("postgresql://u@h/db?sslmode=require", "POSTGRES_URL").unwrap_err();
        assert!(e.contains("asks for TLS (sslmode=require)"), "{e}");
        assert!(PgUrl::parse("postgresql://u@h/db?sslmode=disable", "POSTGRES_URL").is_ok());
    }

    #[test]
    fn endpoints_are_sqlite_paths_or_postgres_urls() {
        assert!(matches!(
            Endpoint::parse("sqlite:data/a.db", "--from").unwrap(),
            Endpoint::Sqlite(p) if p == std::path::Path::new("data/a.db")
        ));
        assert!(matches!(
            Endpoint::parse("postgres://u@h/d", "--to").unwrap(),
            Endpoint::Postgres(_)
        ));
        let e = Endpoint::parse("data/a.db", "--from").unwrap_err();
        assert!(
            e.contains("neither sqlite:PATH nor a postgresql:// URL"),
            "{e}"
        );
        assert!(Endpoint::parse("sqlite:", "--from").is_err());
    }
}

//! The open-files limit. Every open stream holds two descriptors (the client's connection and
//! the upstream's), so a gateway serving tens of thousands of streams needs far more than the
//! 1,024 many systems give a process by default. At start-up the soft limit is raised to the
//! hard one, as nginx's `worker_rlimit_nofile` does; `check` says when even the hard limit is
//! low. Nothing here runs on the request path.

/// Descriptors below which `check` warns: 4x the two descriptors of 10,000 open streams.
pub const WARN_BELOW: u64 = 4 * 2 * 10_000;

/// The soft and hard open-files limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub soft: u64,
    pub hard: u64,
}

/// The process's current open-files limits.
pub fn current() -> std::io::Result<Limits> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Limits {
        soft: r.rlim_cur,
        hard: r.rlim_max,
    })
}

/// Raises the soft limit to the hard one; returns the limits before and after.
pub fn raise() -> std::io::Result<(Limits, Limits)> {
    let before = current()?;
    if before.soft < before.hard {
        let r = libc::rlimit {
            rlim_cur: before.hard,
            rlim_max: before.hard,
        };
        // SAFETY: setrlimit reads the struct we own; raising the soft limit up to the hard one
        // needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((before, current()?))
}

/// `check`'s line about the limit, with a warning when it is low.
pub fn check_line(limits: Limits) -> String {
    let mut line = format!(
        "open files: soft {} / hard {} (serve raises the soft limit to the hard one)",
        limits.soft, limits.hard
    );
    if limits.hard < WARN_BELOW {
        line.push_str(&format!(
            "\nwarning: the hard open-files limit {} allows about {} open streams (two descriptors each); raise it (systemd LimitNOFILE=, ulimit -Hn, the container runtime's nofile) to at least {WARN_BELOW} for heavy streaming",
            limits.hard,
            limits.hard / 2
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_low_hard_limit_is_warned_about_and_a_high_one_is_not() {
        let low = check_line(Limits {
            soft: 1024,
            hard: 4096,
        });
        assert!(
            low.contains("soft 1024 / hard 4096") && low.contains("warning:"),
            "{low}"
        );
        let high = check_line(Limits {
            soft: 1024,
            hard: 1_048_576,
        });
        assert!(!high.contains("warning"), "{high}");
    }

    #[test]
    fn raising_leaves_the_soft_limit_at_the_hard_one() {
        let (_, after) = raise().expect("raise");
        assert_eq!(after.soft, after.hard);
    }
}

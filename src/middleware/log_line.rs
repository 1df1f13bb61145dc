//! `log`: the post-response record as one JSON log line, target `middleware`, at the configured
//! level. Goes through the `log` facade, so the binary's writer thread does the write.

use serde::Deserialize;
use serde_json::Value;

use super::build::{parse_config, FieldProblem};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Level {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl Level {
    fn to_log(self) -> log::Level {
        match self {
            Level::Error => log::Level::Error,
            Level::Warn => log::Level::Warn,
            Level::Info => log::Level::Info,
            Level::Debug => log::Level::Debug,
            Level::Trace => log::Level::Trace,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    level: Level,
}

/// The log target of the lines, for filters such as `RUST_LOG=middleware=info`.
pub const TARGET: &str = "middleware";

#[derive(Debug)]
pub(super) struct LogLine {
    level: log::Level,
}

impl LogLine {
    pub fn compile(config: &Value) -> Result<LogLine, Vec<FieldProblem>> {
        let c: Config = parse_config(config)?;
        Ok(LogLine {
            level: c.level.to_log(),
        })
    }

    pub fn write(&self, record_json: &str) {
        log::log!(target: TARGET, self.level, "{record_json}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_level_defaults_to_info_and_unknown_levels_list_the_known_ones() {
        assert_eq!(
            LogLine::compile(&json!({})).map(|l| l.level).ok(),
            Some(log::Level::Info)
        );
        assert_eq!(
            LogLine::compile(&json!({"level": "warn"}))
                .map(|l| l.level)
                .ok(),
            Some(log::Level::Warn)
        );
        let problems = LogLine::compile(&json!({"level": "loud"})).unwrap_err();
        assert_eq!(problems[0].field, "level");
        assert!(problems[0].problem.to_string().contains("`info`"));
    }
}

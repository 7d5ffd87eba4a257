//! Diagnostic lines on stderr, off unless the user turns them on with `BRIDGE_LOG` (`info` or
//! `debug`; `off`, `error` or unset print nothing). Owns reading that variable; must not be
//! used for results or errors (those go to stdout and `Error`), nor pull in a logging framework.

use std::sync::OnceLock;

/// How much a process logs, from `BRIDGE_LOG`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Off,
    Info,
    Debug,
}

impl Level {
    /// Parses a `BRIDGE_LOG` value; anything unrecognised is `Off`, so a typo never breaks a
    /// run (the variable only adds diagnostics).
    pub fn parse(s: &str) -> Level {
        match s.trim().to_ascii_lowercase().as_str() {
            "info" => Level::Info,
            "debug" | "trace" => Level::Debug,
            _ => Level::Off,
        }
    }
}

static LEVEL: OnceLock<Level> = OnceLock::new();

/// The process's level, read from `BRIDGE_LOG` once.
pub fn level() -> Level {
    *LEVEL.get_or_init(|| Level::parse(&std::env::var("BRIDGE_LOG").unwrap_or_default()))
}

/// Writes `bridgeface: info: {line}` to stderr if `BRIDGE_LOG` is `info` or more.
pub fn info(line: &str) {
    if level() >= Level::Info {
        eprintln!("bridgeface: info: {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::Level;

    #[test]
    fn levels_parse_and_order() {
        assert_eq!(Level::parse("info"), Level::Info);
        assert_eq!(Level::parse(" INFO "), Level::Info);
        assert_eq!(Level::parse("debug"), Level::Debug);
        assert_eq!(Level::parse(""), Level::Off);
        assert_eq!(Level::parse("off"), Level::Off);
        assert_eq!(Level::parse("verbose"), Level::Off);
        assert!(Level::Debug > Level::Info && Level::Info > Level::Off);
    }
}

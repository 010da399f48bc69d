//! Pod Security Standards levels and versions, as the
//! `pod-security.kubernetes.io/*` namespace labels carry them (upstream's
//! `api.ParseLevel` and `api.ParseVersion`): what the simulated cluster
//! enforces and what Drover's templates set and compare.

/// A Pod Security Standards level, ordered from least to most strict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// No restrictions.
    Privileged,
    /// Prevents known privilege escalations.
    Baseline,
    /// Pod hardening best practices (includes baseline).
    Restricted,
}

impl Level {
    /// Parse a level label value: exactly `privileged`, `baseline` or
    /// `restricted` (case-sensitive, as upstream).
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }

    /// The level's name as it appears in labels and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// The version label value (and default) meaning "the newest rules".
pub const VERSION_LATEST: &str = "latest";

/// A version label value as upstream reads it: `latest`, or `v1.N`
/// matching `^v1\.([0-9]|[1-9][0-9]*)$`; anything else (or a minor too
/// large for an int64) is `latest`.
pub fn parse_version(value: &str) -> String {
    let Some(minor) = value.strip_prefix("v1.") else {
        return VERSION_LATEST.to_owned();
    };
    let digits = !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit());
    let canonical = minor == "0" || !minor.starts_with('0');
    match minor.parse::<i64>() {
        Ok(n) if digits && canonical => format!("v1.{n}"),
        _ => VERSION_LATEST.to_owned(),
    }
}

/// Whether a version label value is one upstream accepts: `latest` or
/// `v1.N`.
pub fn valid_version(value: &str) -> bool {
    value == VERSION_LATEST || (value.starts_with("v1.") && parse_version(value) == value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_versions() {
        assert!(Level::parse("restricted") > Level::parse("baseline"));
        assert_eq!(Level::parse("Restricted"), None);
        assert!(valid_version("latest") && valid_version("v1.31") && valid_version("v1.0"));
        assert!(!valid_version("1.31") && !valid_version("v1.") && !valid_version("v1.05"));
        assert_eq!(parse_version("v2.0"), "latest");
    }
}

//! Durations in the configuration file: `"250ms"`, `"30s"`, `"5m"`, `"1h 30m"`, with an
//! error that shows the format when a value is not one.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// What every duration error ends with.
const FORMAT: &str = r#"write a number and a unit, such as "250ms", "30s", "5m" or "1h 30m""#;

/// Parses one duration as the file writes it.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|_| format!("{text:?} is not a duration: {FORMAT}"))
}

/// A duration that keeps its place in the file (with `toml::Spanned`), for checks that
/// point at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HumanDuration(pub(crate) Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_str(DurationVisitor)
            .map(HumanDuration)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize(&self.0, serializer)
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a duration in quotes: {FORMAT}")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        parse(text).map_err(E::custom)
    }
}

/// `#[serde(with = "duration")]` for a `Duration` field.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    deserializer.deserialize_str(DurationVisitor)
}

/// Writes a duration as the file would (`"1m 30s"`).
pub(crate) fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&humantime::format_duration(*value).to_string())
}

/// `#[serde(default, with = "duration::option")]` for an `Option<Duration>` field.
pub(crate) mod option {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<HumanDuration>::deserialize(deserializer).map(|d| d.map(|d| d.0))
    }

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => super::serialize(value, serializer),
            None => serializer.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bad_duration_shows_the_format() {
        assert_eq!(super::parse("1m 30s").unwrap().as_secs(), 90);
        let error = super::parse("30").unwrap_err();
        assert!(error.starts_with(r#""30" is not a duration"#), "{error}");
        assert!(
            error.ends_with(r#"such as "250ms", "30s", "5m" or "1h 30m""#),
            "{error}"
        );
    }
}

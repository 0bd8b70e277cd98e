//! The `grpc-timeout` header: parsing and formatting; and what a status that comes after
//! the deadline means.

use std::time::Duration;

use http::HeaderValue;

/// The `grpc-timeout` header value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed grpc-timeout {0:?}: expected 1 to 8 digits and a unit of H, M, S, m, u or n")]
pub struct InvalidTimeout(pub String);

/// Parses a `grpc-timeout` value such as `100m` (100 ms) or `5S`.
///
/// ```
/// use std::time::Duration;
/// use grpcproxy::deadline::parse_timeout;
///
/// assert_eq!(parse_timeout(&"250m".parse().unwrap()), Ok(Duration::from_millis(250)));
/// assert!(parse_timeout(&"12".parse().unwrap()).is_err());
/// ```
pub fn parse_timeout(value: &HeaderValue) -> Result<Duration, InvalidTimeout> {
    let bytes = value.as_bytes();
    let invalid = || InvalidTimeout(String::from_utf8_lossy(bytes).into_owned());
    let (digits, unit) = match bytes {
        [digits @ .., unit] if (1..=8).contains(&digits.len()) => (digits, *unit),
        _ => return Err(invalid()),
    };
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(invalid());
    }
    let amount: u64 = digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0'));
    Ok(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return Err(invalid()),
    })
}

/// Formats a duration as a `grpc-timeout` value, in the finest unit that fits in 8 digits.
///
/// ```
/// use std::time::Duration;
/// use grpcproxy::deadline::format_timeout;
///
/// assert_eq!(format_timeout(Duration::from_millis(1500)), "1500000u");
/// ```
pub fn format_timeout(timeout: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = timeout.as_nanos();
    let (amount, unit) = [
        (1u128, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ]
    .into_iter()
    .map(|(per, unit)| (nanos.div_ceil(per), unit))
    .find(|(amount, _)| *amount <= MAX)
    .unwrap_or((MAX, 'H'));
    HeaderValue::try_from(format!("{amount}{unit}")).expect("digits and a unit are a valid header")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Duration, InvalidTimeout> {
        parse_timeout(&HeaderValue::from_str(s).unwrap())
    }

    #[test]
    fn every_unit_parses() {
        assert_eq!(parse("2H"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("3M"), Ok(Duration::from_secs(180)));
        assert_eq!(parse("4S"), Ok(Duration::from_secs(4)));
        assert_eq!(parse("5m"), Ok(Duration::from_millis(5)));
        assert_eq!(parse("6u"), Ok(Duration::from_micros(6)));
        assert_eq!(parse("99999999n"), Ok(Duration::from_nanos(99_999_999)));
    }

    #[test]
    fn malformed_values_are_rejected() {
        for bad in ["", "m", "123456789m", "1x", "-1S", "1.5S", " 1S", "S1"] {
            assert!(parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn format_round_trips() {
        for d in [
            Duration::from_nanos(1),
            Duration::from_millis(1500),
            Duration::from_secs(86_400 * 400),
        ] {
            let back = parse_timeout(&format_timeout(d)).unwrap();
            assert!(back >= d, "{d:?} -> {back:?}");
        }
    }
}

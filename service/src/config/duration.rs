//! Human durations in configuration: `"250ms"`, `"10s"`, `"5m"`, `"1h"`, `"1d"`.

use std::time::Duration;

/// Parses `<whole number><unit>` with unit `us`, `ms`, `s`, `m`, `h` or `d`.
/// The error says what is wrong and how to write it instead.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let fix = "write a whole number and a unit, e.g. \"500ms\", \"10s\", \"1m\", \"1h\" or \"1d\"";
    if digits.is_empty() {
        return Err(format!("`{text}` does not start with a number; {fix}"));
    }
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("`{digits}` is too large; {fix}"))?;
    let micros_per_unit: u64 = match unit {
        "us" => 1,
        "ms" => 1_000,
        "s" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        "" => return Err(format!("`{text}` has no unit; {fix}")),
        other => return Err(format!("unknown unit `{other}` in `{text}`; {fix}")),
    };
    let micros = value
        .checked_mul(micros_per_unit)
        .ok_or_else(|| format!("`{text}` is too long; {fix}"))?;
    Ok(Duration::from_micros(micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_duration("7us"), Ok(Duration::from_micros(7)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 10s "), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7_200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
    }

    #[test]
    fn rejects_with_a_fix() {
        for bad in [
            "",
            "10",
            "s",
            "1.5s",
            "10 parsecs",
            "99999999999999999999s",
            "999999999999999d",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("e.g. \"500ms\""), "{bad}: {err}");
        }
    }
}

//! Times on the command line: Kafka's `--to-datetime` form (`YYYY-MM-DDTHH:mm:SS.sss`,
//! optionally with `Z` or `+HH:MM`; UTC when no zone is given), epoch milliseconds, and
//! ISO-8601 durations (`PT30M`, `P1DT2H`, `PT0.5S`) for `--by-duration`.

use super::error::{CliError, Result};

/// Milliseconds since the epoch for a datetime or a plain number of milliseconds.
pub fn parse_datetime(arg: &'static str, text: &str) -> Result<i64> {
    let bad = |reason| CliError::InvalidArgument {
        arg,
        value: text.to_string(),
        reason,
    };
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let expected = "expected YYYY-MM-DDTHH:mm:SS[.sss][Z|+HH:MM] or epoch milliseconds";
    let (date, rest) = text.split_once('T').ok_or_else(|| bad(expected))?;
    let mut ymd = date.split('-');
    let (Some(y), Some(m), Some(d), None) = (ymd.next(), ymd.next(), ymd.next(), ymd.next()) else {
        return Err(bad(expected));
    };
    let number = |s: &str| s.parse::<i64>().map_err(|_| bad(expected));
    let (year, month, day) = (number(y)?, number(m)?, number(d)?);
    // Split off a zone: Z, or +HH:MM / -HH:MM after the time.
    let (time, offset_minutes) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0)
    } else if let Some(at) = rest.rfind(['+', '-']) {
        let (t, zone) = rest.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (h, m) = zone[1..].split_once(':').unwrap_or((&zone[1..], "0"));
        (t, sign * (number(h)? * 60 + number(m)?))
    } else {
        (rest, 0)
    };
    let mut hms = time.split(':');
    let h = number(hms.next().ok_or_else(|| bad(expected))?)?;
    let mi = number(hms.next().unwrap_or("0"))?;
    let seconds = hms.next().unwrap_or("0");
    let (s, frac) = seconds.split_once('.').unwrap_or((seconds, ""));
    let s = number(s)?;
    let millis = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain("000".chars()).take(3).collect();
        number(&digits)?
    };
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || !(0..24).contains(&h)
        || !(0..60).contains(&mi)
        || !(0..=60).contains(&s)
    {
        return Err(bad("a date or time field is out of range"));
    }
    let days = days_from_civil(year, month, day);
    Ok(((days * 24 + h) * 60 + mi - offset_minutes) * 60_000 + s * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Milliseconds in an ISO-8601 duration such as `PT1H30M`, `P2D` or `PT0.5S`.
pub fn parse_duration(arg: &'static str, text: &str) -> Result<i64> {
    let bad = || CliError::InvalidArgument {
        arg,
        value: text.to_string(),
        reason: "expected an ISO-8601 duration such as PT30M, P1DT2H or PT0.5S",
    };
    let upper = text.to_ascii_uppercase();
    let body = upper.strip_prefix('P').ok_or_else(bad)?;
    let (days_part, time_part) = body.split_once('T').unwrap_or((body, ""));
    let mut total = 0f64;
    let mut any = false;
    let mut take = |part: &str, units: &[(char, f64)]| -> Result<()> {
        let mut number = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
                continue;
            }
            let scale = units
                .iter()
                .find(|(u, _)| *u == c)
                .map(|(_, s)| *s)
                .ok_or_else(bad)?;
            let n: f64 = number.parse().map_err(|_| bad())?;
            total += n * scale;
            any = true;
            number.clear();
        }
        if number.is_empty() {
            Ok(())
        } else {
            Err(bad())
        }
    };
    take(days_part, &[('W', 604_800_000.0), ('D', 86_400_000.0)])?;
    take(
        time_part,
        &[('H', 3_600_000.0), ('M', 60_000.0), ('S', 1000.0)],
    )?;
    if !any {
        return Err(bad());
    }
    Ok(total.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_in_kafkas_format_and_with_zones() {
        assert_eq!(parse_datetime("t", "1970-01-01T00:00:00.000").unwrap(), 0);
        assert_eq!(
            parse_datetime("t", "2026-11-23T10:00:00.000").unwrap(),
            1_795_428_000_000
        );
        assert_eq!(
            parse_datetime("t", "2026-11-23T12:00:00+02:00").unwrap(),
            1_795_428_000_000
        );
        assert_eq!(
            parse_datetime("t", "2026-11-23T10:00:00.5Z").unwrap(),
            1_795_428_000_500
        );
        assert_eq!(parse_datetime("t", "1234").unwrap(), 1234);
        assert!(parse_datetime("t", "2026-13-01T00:00:00").is_err());
        assert!(parse_datetime("t", "yesterday").is_err());
    }

    #[test]
    fn iso_durations() {
        assert_eq!(parse_duration("d", "PT30M").unwrap(), 1_800_000);
        assert_eq!(parse_duration("d", "P1DT2H").unwrap(), 93_600_000);
        assert_eq!(parse_duration("d", "PT0.5S").unwrap(), 500);
        assert!(parse_duration("d", "30m").is_err());
        assert!(parse_duration("d", "P").is_err());
        assert!(parse_duration("d", "PT5").is_err());
    }
}

//! RFC 3339 timestamps (`2026-11-26T10:00:00Z`, `2026-11-26T11:00:00+01:00`, fractional seconds
//! ignored) to unix seconds, for `expire --now`.

use relay_civil::{days_from_civil, days_in_month};

fn num(s: &str, what: &str) -> Result<u32, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad {what} {s:?}"));
    }
    s.parse().map_err(|_| format!("bad {what} {s:?}"))
}

/// Parses an RFC 3339 date-time into unix seconds.
///
/// # Errors
/// A description of what is malformed.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (date, rest) = s
        .split_once(['T', 't', ' '])
        .ok_or_else(|| format!("expected YYYY-MM-DDTHH:MM:SS(Z|+HH:MM), got {s:?}"))?;
    let mut dp = date.split('-');
    let (Some(y), Some(mo), Some(d), None) = (dp.next(), dp.next(), dp.next(), dp.next()) else {
        return Err(format!("bad date {date:?}"));
    };
    if y.len() != 4 {
        return Err(format!("bad year {y:?}"));
    }
    let (y, mo, d) = (
        i64::from(num(y, "year")?),
        num(mo, "month")?,
        num(d, "day")?,
    );
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) {
        return Err(format!("no such date {date:?}"));
    }
    let (time, offset) = if let Some(t) = rest.strip_suffix(['Z', 'z']) {
        (t, 0)
    } else {
        let i = rest
            .rfind(['+', '-'])
            .ok_or_else(|| format!("missing time zone in {s:?}"))?;
        let (t, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..]
            .split_once(':')
            .ok_or_else(|| format!("bad offset {off:?}"))?;
        let (oh, om) = (num(oh, "offset")?, num(om, "offset")?);
        if oh > 23 || om > 59 {
            return Err(format!("bad offset {off:?}"));
        }
        (t, sign * i64::from(oh * 3600 + om * 60))
    };
    let time = time.split('.').next().unwrap_or(time);
    let mut tp = time.split(':');
    let (Some(h), Some(mi), Some(sec), None) = (tp.next(), tp.next(), tp.next(), tp.next()) else {
        return Err(format!("bad time {time:?}"));
    };
    let (h, mi, sec) = (num(h, "hour")?, num(mi, "minute")?, num(sec, "second")?);
    if h > 23 || mi > 59 || sec > 60 {
        return Err(format!("bad time {time:?}"));
    }
    let days = days_from_civil(y, mo, d);
    Ok(days * 86_400 + i64::from(h * 3600 + mi * 60 + sec) - offset)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_utc_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00Z").unwrap(), 951_868_800);
        assert_eq!(
            parse_rfc3339("2027-01-15T08:00:00Z").unwrap(),
            1_800_000_000
        );
        assert_eq!(
            parse_rfc3339("2027-01-15T09:00:00.123+01:00").unwrap(),
            1_800_000_000
        );
        assert_eq!(
            parse_rfc3339("2027-01-15T03:30:00-04:30").unwrap(),
            1_800_000_000
        );
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z").unwrap(), -1);
    }

    #[test]
    fn refuses_malformed_times() {
        for bad in [
            "",
            "2026-11-26",
            "2026-11-26T10:00:00",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-26T24:00:00Z",
            "2026-11-26T10:00Z",
            "26-11-26T10:00:00Z",
            "2026-11-26T10:00:00+0100",
            "2026-11-26T1a:00:00Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
        assert!(parse_rfc3339("2024-02-29T00:00:00Z").is_ok());
    }
}

//! IMAP date formats (RFC 3501 §9 `date`, `date-time`): parsed for SEARCH and APPEND, encoded
//! for INTERNALDATE. Day arithmetic is `relay_civil`'s, shared with the bots.

use relay_civil::{civil_from_days, days_from_civil};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `1-Feb-1994` → day number.
pub fn parse_date(s: &str) -> Option<i64> {
    let mut it = s.trim().split('-');
    let d: u32 = it.next()?.trim().parse().ok()?;
    let mon = it.next()?;
    let m = MONTHS
        .iter()
        .position(|x| x.eq_ignore_ascii_case(mon))
        .map(|i| i as u32 + 1)?;
    let y: i64 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(1..=31).contains(&d) || !(1..=9999).contains(&y) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// `17-Jul-1996 02:44:25 -0700` → unix seconds.
pub fn parse_date_time(s: &str) -> Option<i64> {
    let (date, rest) = s.trim_start().split_once(' ')?;
    let day = parse_date(date)?;
    let (time, zone) = rest.split_once(' ')?;
    // `time = 2DIGIT ":" 2DIGIT ":" 2DIGIT`: exactly two digits each (a signed parse took
    // `-2222222222222222212` as an hour, below 23, and the arithmetic below overflowed).
    let mut t = time.split(':').map(two_digits);
    let (h, mi, se) = (t.next()??, t.next()??, t.next()??);
    if t.next().is_some() || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let zb = zone.as_bytes();
    if zb.len() != 5 || !(zb[0] == b'+' || zb[0] == b'-') || !zb[1..].iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let zh: i64 = zone[1..3].parse().ok()?;
    let zm: i64 = zone[3..5].parse().ok()?;
    let off = (zh * 60 + zm) * 60 * if zb[0] == b'-' { -1 } else { 1 };
    Some(day * 86400 + h * 3600 + mi * 60 + se - off)
}

/// The value of exactly two ASCII digits.
fn two_digits(s: &str) -> Option<i64> {
    match s.as_bytes() {
        [a, b] if a.is_ascii_digit() && b.is_ascii_digit() => {
            Some(i64::from((a - b'0') * 10 + (b - b'0')))
        }
        _ => None,
    }
}

/// Unix seconds → `"17-Jul-1996 02:44:25 +0000"` (quoted).
pub fn format_date_time(secs: i64) -> String {
    let day = secs.div_euclid(86400);
    let sod = secs.rem_euclid(86400);
    let (y, m, d) = civil_from_days(day);
    format!(
        "\"{:02}-{}-{:04} {:02}:{:02}:{:02} +0000\"",
        d,
        MONTHS[(m - 1) as usize],
        y,
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date("1-Jan-1970"), Some(0));
        assert_eq!(
            parse_date_time("17-Jul-1996 02:44:25 -0700"),
            Some(837_596_665)
        );
        assert_eq!(
            format_date_time(837_596_665),
            "\"17-Jul-1996 09:44:25 +0000\""
        );
        // A multi-byte character inside the zone must not split a char boundary.
        assert_eq!(parse_date_time("1-Jan-2020 00:00:00 +0\u{e9}0"), None);
        // Found by the imap_command fuzz target: a negative hour passed the range check and
        // overflowed. Time fields are two digits, nothing else.
        let negative = "31-Dec-9999 -2222222222222222212:22:59 -2359";
        assert_eq!(parse_date_time(negative), None);
        for bad in [
            "1:00:00",
            "01:0:00",
            "01:00:+1",
            "-1:00:00",
            "001:00:00",
            "01:00",
        ] {
            assert_eq!(
                parse_date_time(&format!("1-Jan-2020 {bad} +0000")),
                None,
                "{bad}"
            );
        }
        assert_eq!(parse_date_time("1-Jan-1970 00:00:60 +0000"), Some(60));
        for d in [-1000i64, 0, 19_000, 2_932_896] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }
}

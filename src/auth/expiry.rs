//! Expiry formats that token services use: seconds as numbers or strings, Unix epochs, and the date strings of
//! legacy managed-identity endpoints and of Azure tooling. All conversions are to Unix seconds (UTC).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// A non-negative number of seconds given as a JSON number or a numeric string (`3599`, `"3599"`).
pub fn seconds(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Now, in Unix seconds.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// The time from now until `unix` (zero if it has passed).
pub fn until(unix: u64) -> Duration {
    Duration::from_secs(unix.saturating_sub(now_unix()))
}

/// An `expires_on` value: a Unix epoch (number or numeric string), or one of the legacy managed-identity date
/// strings `MM/DD/YYYY HH:MM:SS +00:00` (Linux) and `M/D/YYYY h:mm:ss AM +00:00` (Windows).
pub fn expires_on(v: Option<&Value>) -> Option<u64> {
    let v = v?;
    seconds(Some(v)).or_else(|| v.as_str().and_then(msi_date))
}

/// Parses `MM/DD/YYYY HH:MM:SS +HH:MM` or `M/D/YYYY h:mm:ss AM|PM +HH:MM` (the offset is optional and then UTC).
pub fn msi_date(text: &str) -> Option<u64> {
    let mut parts = text.split_whitespace();
    let date = parts.next()?;
    let time = parts.next()?;
    let mut rest: Vec<&str> = parts.collect();
    let meridiem = match rest.first().map(|s| s.to_ascii_uppercase()) {
        Some(m) if m == "AM" || m == "PM" => {
            rest.remove(0);
            Some(m == "PM")
        }
        _ => None,
    };
    let offset = match rest.as_slice() {
        [] => 0,
        [o] => utc_offset(o)?,
        _ => return None,
    };
    let mut d = date.split('/');
    let (month, day, year) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    if d.next().is_some() {
        return None;
    }
    let mut t = time.split(':');
    let (mut hour, minute, second) = (num(t.next()?)?, num(t.next()?)?, num(t.next()?)?);
    if t.next().is_some() {
        return None;
    }
    if let Some(pm) = meridiem {
        if !(1..=12).contains(&hour) {
            return None;
        }
        hour = match (pm, hour) {
            (false, 12) => 0,
            (true, 12) => 12,
            (true, h) => h + 12,
            (false, h) => h,
        };
    }
    let local = civil_to_unix(year as i64, month, day, hour, minute, second)?;
    u64::try_from(local - offset).ok()
}

/// Parses RFC 3339 (`2038-01-18T00:00:00Z`, `…T00:00:00.123+02:00`).
pub fn rfc3339(text: &str) -> Option<u64> {
    let (date, time) = text.split_once(['T', 't', ' '])?;
    let mut d = date.split('-');
    let (year, month, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    let (clock, offset) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let at = time.rfind(['+', '-'])?;
        (&time[..at], utc_offset(&time[at..])?)
    };
    let clock = clock.split('.').next()?;
    let mut t = clock.split(':');
    let (hour, minute, second) = (num(t.next()?)?, num(t.next()?)?, num(t.next()?)?);
    let local = civil_to_unix(year as i64, month, day, hour, minute, second)?;
    u64::try_from(local - offset).ok()
}

/// A naive `YYYY-MM-DD HH:MM:SS[.ffffff]` as if it were UTC (callers apply the local offset).
pub fn naive_datetime(text: &str) -> Option<i64> {
    let (date, time) = text.trim().split_once([' ', 'T'])?;
    let mut d = date.split('-');
    let (year, month, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    let mut t = time.split('.').next()?.split(':');
    let (hour, minute, second) = (num(t.next()?)?, num(t.next()?)?, num(t.next()?)?);
    civil_to_unix(year as i64, month, day, hour, minute, second)
}

/// `+HH:MM` / `-HHMM` / `+HH` as seconds east of UTC.
fn utc_offset(text: &str) -> Option<i64> {
    let (sign, digits) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let digits: String = digits.chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m) = match digits.len() {
        2 => (num(&digits)?, 0),
        4 => (num(&digits[..2])?, num(&digits[2..])?),
        _ => return None,
    };
    if h > 23 || m > 59 {
        return None;
    }
    Some(sign * (i64::from(h) * 3600 + i64::from(m) * 60))
}

fn num(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 4 {
        return None;
    }
    s.parse().ok()
}

/// Seconds since the epoch of a proleptic-Gregorian civil date-time (H. Hinnant's `days_from_civil`).
pub fn civil_to_unix(
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
) -> Option<i64> {
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_and_strings() {
        assert_eq!(seconds(Some(&json!(3599))), Some(3599));
        assert_eq!(seconds(Some(&json!("3599"))), Some(3599));
        assert_eq!(seconds(Some(&json!(" 86399 "))), Some(86399));
        assert_eq!(seconds(Some(&json!(-1))), None);
        assert_eq!(seconds(Some(&json!("soon"))), None);
        assert_eq!(seconds(None), None);
        assert_eq!(expires_on(Some(&json!("1546469802"))), Some(1_546_469_802));
        assert_eq!(expires_on(Some(&json!(1_546_469_802))), Some(1_546_469_802));
    }

    #[test]
    fn legacy_msi_dates() {
        // 2019-01-02 22:56:42 UTC = 1546469802
        assert_eq!(msi_date("01/02/2019 22:56:42 +00:00"), Some(1_546_469_802));
        assert_eq!(msi_date("1/2/2019 10:56:42 PM +00:00"), Some(1_546_469_802));
        assert_eq!(msi_date("1/2/2019 12:00:00 AM +00:00"), Some(1_546_387_200));
        assert_eq!(msi_date("1/2/2019 12:00:00 PM +00:00"), Some(1_546_430_400));
        assert_eq!(msi_date("01/02/2019 23:56:42 +01:00"), Some(1_546_469_802));
        assert_eq!(
            expires_on(Some(&json!("01/02/2019 22:56:42 +00:00"))),
            Some(1_546_469_802)
        );
        for bad in [
            "",
            "13/01/2019 00:00:00 +00:00",
            "02/30/2019 00:00:00",
            "1/2/2019 13:00:00 PM",
            "1/2/2019 x",
        ] {
            assert_eq!(msi_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339("2038-01-18T00:00:00Z"), Some(2_147_385_600));
        assert_eq!(rfc3339("2019-01-02T22:56:42.123456Z"), Some(1_546_469_802));
        assert_eq!(rfc3339("2019-01-02T23:56:42+01:00"), Some(1_546_469_802));
        assert_eq!(rfc3339("2019-01-02"), None);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_to_unix(1970, 1, 1, 0, 0, 0), Some(0));
        assert_eq!(civil_to_unix(2000, 2, 29, 0, 0, 0), Some(951_782_400));
        assert_eq!(civil_to_unix(2001, 2, 29, 0, 0, 0), None);
        assert_eq!(
            naive_datetime("2019-01-02 22:56:42.000000"),
            Some(1_546_469_802)
        );
    }
}

#[cfg(test)]
mod fixture_tests {
    //! Token-service outputs that no source of this proxy consumes, parsed anyway so the expiry formats they
    //! imply stay covered: the token endpoint's v1/v2 bodies and the Azure Developer CLI's output.

    use super::*;

    fn json_lines(name: &str) -> Vec<Value> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .lines()
            .filter(|l| l.trim_start().starts_with('{'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    #[test]
    fn token_endpoint_v1_and_v2_bodies() {
        let bodies = json_lines("aad_token_endpoint_v1_vs_v2_success.txt");
        let expiries: Vec<(Option<u64>, Option<u64>)> = bodies
            .iter()
            .filter(|b| b.get("access_token").is_some())
            .map(|b| {
                (
                    seconds(b.get("expires_in")),
                    expires_on(b.get("expires_on")),
                )
            })
            .collect();
        assert_eq!(
            expiries,
            [
                (Some(3600), Some(1_546_469_802)),
                (Some(3600), Some(1_573_001_562)),
                (Some(86399), None),
                (Some(3600), None),
            ]
        );
    }

    #[test]
    fn azure_developer_cli_expiry_is_rfc3339_utc() {
        let bodies = json_lines("azd_auth_token_outputs.txt");
        let success: Vec<u64> = bodies
            .iter()
            .filter(|b| b.get("token").is_some())
            .filter_map(|b| b.get("expiresOn").and_then(Value::as_str).and_then(rfc3339))
            .collect();
        assert_eq!(success, [2_147_385_600]);
    }
}

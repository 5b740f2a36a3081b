//! Expiry formats that token services and tools use, and the local time zone that naive times are read in.
//! Everything is converted to Unix seconds (UTC); the calendar and time-zone rules are `jiff`'s.
//!
//! Formats: the date strings of legacy managed-identity endpoints ([`msi_date`]) and the naive local date-time
//! older Azure CLIs print ([`naive_datetime`], resolved with [`local_zone`] and [`local_to_unix`]). Numbers sent
//! as JSON strings are read by the wire types (`auth::lenient_json`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jiff::civil::DateTime;
use jiff::fmt::strtime;
use jiff::tz::TimeZone;

use crate::file_read::{self, Access, FileError};

/// Where zone files live unless `TZDIR` says otherwise.
const ZONEINFO: &str = "/usr/share/zoneinfo";
/// The system's local zone when `TZ` is unset.
const LOCALTIME: &str = "/etc/localtime";
/// Larger files are not zone files (the largest real ones are a few KiB).
const MAX_TZIF_BYTES: u64 = 256 * 1024;
/// What glibc assumes when a POSIX TZ string names daylight time without saying when (the US rule).
const DEFAULT_DST_RULE: &str = ",M3.2.0,M11.1.0";

/// The legacy managed-identity forms: `MM/DD/YYYY HH:MM:SS` (Linux) and `M/D/YYYY h:mm:ss AM` (Windows), each
/// with an offset `+HH:MM`, `+HH` or `+HHMM`, or none (UTC).
const MSI_DATE_FORMATS: [&str; 6] = [
    "%m/%d/%Y %H:%M:%S %:::z",
    "%m/%d/%Y %H:%M:%S %z",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %I:%M:%S %p %:::z",
    "%m/%d/%Y %I:%M:%S %p %z",
    "%m/%d/%Y %I:%M:%S %p",
];

/// `YYYY-MM-DD HH:MM:SS[.ffffff]`, with a space or a `T`.
const NAIVE_FORMATS: [&str; 2] = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"];

/// Now, in Unix seconds.
pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// The time from now until `unix` (zero if it has passed).
pub(crate) fn until(unix: u64) -> Duration {
    Duration::from_secs(unix.saturating_sub(now_unix()))
}

/// Parses a legacy managed-identity date: `MM/DD/YYYY HH:MM:SS` (Linux) or `M/D/YYYY h:mm:ss AM` (Windows), with an
/// offset `+HH:MM`, `+HH` or `+HHMM`, or none (UTC). Instants before 1970 are refused.
pub fn msi_date(text: &str) -> Option<u64> {
    let text = text.trim();
    MSI_DATE_FORMATS.iter().find_map(|format| {
        let parsed = strtime::parse(format, text).ok()?;
        let at = match parsed.offset() {
            Some(_) => parsed.to_timestamp().ok()?,
            None => TimeZone::UTC
                .to_timestamp(parsed.to_datetime().ok()?)
                .ok()?,
        };
        u64::try_from(at.as_second()).ok()
    })
}

/// Parses a naive `YYYY-MM-DD HH:MM:SS[.ffffff]` (or with a `T`); `local_to_unix` places it in a zone.
pub fn naive_datetime(text: &str) -> Option<DateTime> {
    let text = text.trim();
    NAIVE_FORMATS
        .iter()
        .find_map(|format| strtime::parse(format, text).ok()?.to_datetime().ok())
}

/// The instant (Unix seconds) of a naive local date-time in `zone`. A local time that occurs twice (clocks going
/// back) is the earlier instant; one that never occurs (clocks going forward) is read with the offset after the
/// change, which is also the earlier instant. Both are the conservative choice for an expiry time.
pub(crate) fn local_to_unix(zone: &TimeZone, local: DateTime) -> Option<i64> {
    let at = zone.to_ambiguous_timestamp(local).earlier().ok()?;
    Some(at.as_second())
}

/// The zone that `TZ=tz` names, interpreted as glibc does, with zone files under `tzdir` (default
/// `/usr/share/zoneinfo`): unset → `/etc/localtime`; empty → UTC; `:name` or `name` → the zone file `name` (an
/// absolute path is that file); a `name` that is no zone file → a POSIX TZ string such as `EST5EDT,M3.2.0,M11.1.0`
/// or `<+0530>-5:30` (not after `:`). Relative names may not leave `tzdir`. Anything that cannot be read is UTC,
/// with a debug log.
pub(crate) fn local_zone(tz: Option<&str>, tzdir: Option<&str>) -> TimeZone {
    let Some(tz) = tz else {
        return read_tzif(Path::new(LOCALTIME)).unwrap_or_else(|why| {
            tracing::debug!(file = LOCALTIME, reason = %why, "local time zone unknown; reading local times as UTC");
            TimeZone::UTC
        });
    };
    let file_only = tz.starts_with(':');
    let name = tz.strip_prefix(':').unwrap_or(tz);
    if name.is_empty() || matches!(name, "UTC" | "UTC0" | "GMT" | "GMT0" | "Z") {
        return TimeZone::UTC;
    }
    let file = if name.starts_with('/') {
        Some(PathBuf::from(name))
    } else {
        is_zone_name(name).then(|| Path::new(tzdir.unwrap_or(ZONEINFO)).join(name))
    };
    let zone = match file {
        Some(path) => read_tzif(&path),
        None => Err("not a zone name".to_owned()),
    };
    zone.or_else(|why| if file_only { Err(why) } else { posix_zone(name).ok_or(why) })
        .unwrap_or_else(|why| {
            tracing::debug!(tz = %tz, reason = %why, "time zone in TZ unknown; reading local times as UTC");
            TimeZone::UTC
        })
}

/// A POSIX TZ string; one that names daylight time without its dates gets the US rule, as glibc gives it.
fn posix_zone(text: &str) -> Option<TimeZone> {
    if let Ok(zone) = TimeZone::posix(text) {
        return Some(zone);
    }
    if text.contains(',') {
        return None;
    }
    TimeZone::posix(&format!("{text}{DEFAULT_DST_RULE}")).ok()
}

/// Reads a TZif zone file (RFC 8536, any version).
fn read_tzif(path: &Path) -> Result<TimeZone, String> {
    let shown = path.display();
    // A regular file only, bounded in size and time (`TZ` may name any path).
    let bytes = file_read::read(path, MAX_TZIF_BYTES, Access::Any).map_err(|e| match e {
        FileError::TooLarge { .. } => format!("{shown}: too large for a zone file"),
        other => format!("{shown}: {}", other.reason()),
    })?;
    TimeZone::tzif(&path.to_string_lossy(), &bytes).map_err(|e| format!("{shown}: {e}"))
}

/// A relative zone name: `Area/City` made of safe characters, with no empty, `.` or `..` component.
fn is_zone_name(name: &str) -> bool {
    name.split('/')
        .all(|c| !c.is_empty() && c != "." && c != "..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+-.".contains(&b))
}

#[cfg(test)]
mod tests;

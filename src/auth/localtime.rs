//! The local time zone: the UTC offset in effect at a given instant, for tools that print naive local times (the
//! Azure CLI's `expiresOn` before 2.54.0).
//!
//! The zone comes from `TZ` (read by the caller through its `Env`; interpreted like glibc: unset → `/etc/localtime`; empty → UTC;
//! `:name` or `name` → a TZif file under `TZDIR` or `/usr/share/zoneinfo`, an absolute path → that file; a `name`
//! that is no file → a POSIX TZ string such as `EST5EDT,M3.2.0,M11.1.0` or `<+0530>-5:30`). TZif files of every
//! version are read (RFC 8536): the 64-bit section when present, and its POSIX footer for instants after the last
//! transition. Leap-second records are ignored (they shift `right/` zones by at most 27 s). When nothing can be
//! read, local times are taken as UTC, with a debug log.

use std::path::{Path, PathBuf};

use super::expiry::civil_to_unix;

/// Where zone files live unless `TZDIR` says otherwise.
const ZONEINFO: &str = "/usr/share/zoneinfo";
/// The system's local zone when `TZ` is unset.
const LOCALTIME: &str = "/etc/localtime";
/// Larger files are not zone files (the largest real ones are a few KiB).
const MAX_TZIF_BYTES: u64 = 256 * 1024;
/// A TZif header: magic, version, 15 reserved bytes, six 32-bit counts.
const HEADER_LEN: usize = 44;
const DAY: i64 = 86_400;

/// A time zone: transitions with their local time types, then a rule for every later instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Zone {
    /// Transition instants (Unix seconds), strictly ascending.
    transitions: Vec<i64>,
    /// For each transition, the index into `offsets` in effect from it on.
    kinds: Vec<usize>,
    /// UTC offsets (seconds east) of the local time types; the first applies before the first transition.
    offsets: Vec<i32>,
    /// The rule after the last transition (the TZif footer, or the whole zone for a POSIX TZ string).
    rule: Option<Rule>,
}

/// A POSIX TZ rule: standard time, and optionally daylight time between two yearly transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    /// Standard time's offset, seconds east of UTC.
    std_offset: i32,
    dst: Option<Dst>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dst {
    /// Daylight time's offset, seconds east of UTC.
    offset: i32,
    /// When daylight time starts (in local standard time).
    start: YearlyTransition,
    /// When daylight time ends (in local daylight time).
    end: YearlyTransition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct YearlyTransition {
    date: RuleDate,
    /// Seconds after local midnight of `date` (may be negative or beyond 24 h).
    time: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuleDate {
    /// `Jn`: day 1–365, February 29 never counted.
    Julian(u16),
    /// `n`: zero-based day 0–365, February 29 counted.
    ZeroBased(u16),
    /// `Mm.w.d`: weekday `d` (0 = Sunday) of week `w` (1–5, 5 = last) of month `m`.
    MonthWeek { month: u32, week: u32, weekday: u32 },
}

/// The counts of a TZif header.
#[derive(Debug, Clone, Copy)]
struct Header {
    version: u8,
    isutcnt: usize,
    isstdcnt: usize,
    leapcnt: usize,
    timecnt: usize,
    typecnt: usize,
    charcnt: usize,
}

/// A cursor over a POSIX TZ string.
struct Cursor<'a> {
    text: &'a [u8],
    at: usize,
}

// === impl Zone ===

impl Zone {
    /// Coordinated Universal Time.
    pub(crate) fn utc() -> Self {
        Self {
            transitions: Vec::new(),
            kinds: Vec::new(),
            offsets: vec![0],
            rule: None,
        }
    }

    /// The zone that `TZ=tz` names, looking for zone files under `tzdir` (default `/usr/share/zoneinfo`);
    /// `tz = None` is the system's local zone. Anything that cannot be read is UTC (logged at debug level).
    pub(crate) fn load(tz: Option<&str>, tzdir: Option<&str>) -> Self {
        let dir = tzdir.map_or_else(|| PathBuf::from(ZONEINFO), PathBuf::from);
        let Some(tz) = tz else {
            return Self::from_file(Path::new(LOCALTIME)).unwrap_or_else(|why| {
                tracing::debug!(file = LOCALTIME, reason = %why, "local time zone unknown; reading local times as UTC");
                Self::utc()
            });
        };
        let (name, file_only) = match tz.strip_prefix(':') {
            Some(name) => (name, true),
            None => (tz, false),
        };
        if name.is_empty() || matches!(name, "UTC" | "UTC0" | "GMT" | "GMT0" | "Z") {
            return Self::utc();
        }
        let file = if name.starts_with('/') {
            Some(PathBuf::from(name))
        } else {
            is_zone_name(name).then(|| dir.join(name))
        };
        let from_file = match &file {
            Some(path) => Self::from_file(path),
            None => Err("not a zone name".to_owned()),
        };
        let from_rule = || {
            (!file_only)
                .then(|| Rule::parse(name))
                .flatten()
                .map(Self::from_rule)
        };
        match from_file {
            Ok(zone) => zone,
            Err(why) => from_rule().unwrap_or_else(|| {
                tracing::debug!(tz = %tz, reason = %why, "time zone in TZ unknown; reading local times as UTC");
                Self::utc()
            }),
        }
    }

    /// Reads a TZif file.
    pub(crate) fn from_file(path: &Path) -> Result<Self, String> {
        let shown = path.display();
        // A regular file only, bounded in size and time (`TZ` may name any path).
        let bytes = crate::file_read::read(path, MAX_TZIF_BYTES, crate::file_read::Access::Any)
            .map_err(|e| match e {
                crate::file_read::FileError::TooLarge { .. } => {
                    format!("{shown}: too large for a zone file")
                }
                other => format!("{shown}: {}", other.reason()),
            })?;
        Self::from_tzif(&bytes).map_err(|why| format!("{shown}: {why}"))
    }

    /// Parses TZif bytes (RFC 8536, versions 1 to 4). Version 2+ files are read from their 64-bit section and
    /// footer; version 1 files from their 32-bit section.
    pub(crate) fn from_tzif(bytes: &[u8]) -> Result<Self, &'static str> {
        let v1 = Header::parse(bytes)?;
        let body = &bytes[HEADER_LEN..];
        if v1.version < b'2' {
            let (zone, _) = Self::data_block(&v1, body, 4)?;
            return Ok(zone);
        }
        let rest = body
            .get(v1.block_len(4)?..)
            .ok_or("truncated version 1 data")?;
        let v2 = Header::parse(rest)?;
        let (mut zone, used) = Self::data_block(&v2, &rest[HEADER_LEN..], 8)?;
        let footer = &rest[HEADER_LEN + used..];
        let footer = footer
            .strip_prefix(b"\n")
            .and_then(|f| f.iter().position(|&b| b == b'\n').map(|end| &f[..end]))
            .ok_or("missing footer")?;
        if !footer.is_empty() {
            let text = std::str::from_utf8(footer).map_err(|_| "footer is not text")?;
            zone.rule = Some(Rule::parse(text).ok_or("footer is not a POSIX TZ string")?);
        }
        Ok(zone)
    }

    /// A zone described by a POSIX TZ string alone.
    fn from_rule(rule: Rule) -> Self {
        Self {
            transitions: Vec::new(),
            kinds: Vec::new(),
            offsets: vec![rule.std_offset],
            rule: Some(rule),
        }
    }

    /// Reads one data block (`time_size` 4 or 8); returns the zone and the block's length.
    fn data_block(
        h: &Header,
        data: &[u8],
        time_size: usize,
    ) -> Result<(Self, usize), &'static str> {
        let len = h.block_len(time_size)?;
        let data = data.get(..len).ok_or("truncated data")?;
        let (times, rest) = data.split_at(h.timecnt * time_size);
        let (kinds, rest) = rest.split_at(h.timecnt);
        let (types, _) = rest.split_at(h.typecnt * 6);
        let transitions: Vec<i64> = times
            .chunks_exact(time_size)
            .map(|c| match *c {
                [a, b, c, d] => i64::from(i32::from_be_bytes([a, b, c, d])),
                [a, b, c, d, e, f, g, h] => i64::from_be_bytes([a, b, c, d, e, f, g, h]),
                _ => 0,
            })
            .collect();
        if transitions.windows(2).any(|w| w[0] >= w[1]) {
            return Err("transition times are not ascending");
        }
        let kinds: Vec<usize> = kinds.iter().map(|&k| usize::from(k)).collect();
        if kinds.iter().any(|&k| k >= h.typecnt) {
            return Err("transition names a missing time type");
        }
        let offsets = types
            .chunks_exact(6)
            .map(|t| match *t {
                [a, b, c, d, ..] => i32::from_be_bytes([a, b, c, d]),
                _ => 0,
            })
            .collect::<Vec<_>>();
        if offsets.iter().any(|o| o.unsigned_abs() > 26 * 3600) {
            return Err("UTC offset out of range");
        }
        let zone = Self {
            transitions,
            kinds,
            offsets,
            rule: None,
        };
        Ok((zone, len))
    }

    /// The offset from UTC (seconds east) in effect at `unix`.
    pub(crate) fn offset_at(&self, unix: i64) -> i32 {
        let first_type = self.offsets.first().copied().unwrap_or(0);
        let after = self.transitions.partition_point(|&t| t <= unix);
        if after == self.transitions.len()
            && let Some(rule) = &self.rule
        {
            return rule.offset_at(unix);
        }
        match after.checked_sub(1) {
            None => first_type,
            Some(i) => self
                .kinds
                .get(i)
                .and_then(|&k| self.offsets.get(k))
                .copied()
                .unwrap_or(first_type),
        }
    }

    /// The instant (Unix seconds) of a naive local date-time, given as if it were UTC (see
    /// [`super::expiry::naive_datetime`]).
    ///
    /// Tries the offset in effect at the naive time read as UTC, and the offsets a day either side, keeping the
    /// candidates whose offset is the one in effect at the instant they give. A local time that occurs twice
    /// (clocks going back) resolves to the earlier instant; one that never occurs (clocks going forward) to the
    /// earliest candidate. Both are the conservative choice for an expiry time.
    pub(crate) fn local_to_unix(&self, naive: i64) -> i64 {
        let mut offsets = vec![
            self.offset_at(naive),
            self.offset_at(naive.saturating_sub(DAY)),
            self.offset_at(naive.saturating_add(DAY)),
        ];
        // Re-check: the instant the first guess gives may be across a transition from `naive`.
        let first = naive.saturating_sub(i64::from(offsets[0]));
        offsets.push(self.offset_at(first));
        let candidates: Vec<(i64, bool)> = offsets
            .iter()
            .map(|&o| {
                let t = naive.saturating_sub(i64::from(o));
                (t, self.offset_at(t) == o)
            })
            .collect();
        let valid = candidates
            .iter()
            .filter(|(_, ok)| *ok)
            .map(|(t, _)| *t)
            .min();
        valid
            .or_else(|| candidates.iter().map(|(t, _)| *t).min())
            .unwrap_or(naive)
    }
}

/// A relative zone name: `Area/City` made of safe characters, with no empty, `.` or `..` component.
fn is_zone_name(name: &str) -> bool {
    name.split('/')
        .all(|c| !c.is_empty() && c != "." && c != "..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+-.".contains(&b))
}

// === impl Header ===

impl Header {
    fn parse(bytes: &[u8]) -> Result<Self, &'static str> {
        let header = bytes.get(..HEADER_LEN).ok_or("truncated header")?;
        if &header[..4] != b"TZif" {
            return Err("not a TZif file");
        }
        let count = |i: usize| -> usize {
            let at = 20 + 4 * i;
            match header[at..at + 4] {
                [a, b, c, d] => u32::from_be_bytes([a, b, c, d]) as usize,
                _ => 0,
            }
        };
        let h = Self {
            version: header[4],
            isutcnt: count(0),
            isstdcnt: count(1),
            leapcnt: count(2),
            timecnt: count(3),
            typecnt: count(4),
            charcnt: count(5),
        };
        if h.typecnt == 0 {
            return Err("no local time types");
        }
        if (h.isutcnt != 0 && h.isutcnt != h.typecnt)
            || (h.isstdcnt != 0 && h.isstdcnt != h.typecnt)
        {
            return Err("indicator counts do not match the type count");
        }
        Ok(h)
    }

    /// The length of the data block that follows this header.
    fn block_len(&self, time_size: usize) -> Result<usize, &'static str> {
        let parts = [
            self.timecnt.checked_mul(time_size + 1),
            self.typecnt.checked_mul(6),
            Some(self.charcnt),
            self.leapcnt.checked_mul(time_size + 4),
            Some(self.isstdcnt),
            Some(self.isutcnt),
        ];
        parts
            .into_iter()
            .try_fold(0usize, |sum, p| sum.checked_add(p?))
            .ok_or("counts overflow")
    }
}

// === impl Rule ===

impl Rule {
    /// Parses a POSIX TZ string: `std offset [dst [offset] [,start[/time],end[/time]]]`. Names are letters or
    /// `<…>`-quoted; offsets are hours west of UTC (`EST5` is UTC−5); dates are `Jn`, `n` or `Mm.w.d`; times may be
    /// negative or up to 167 h (RFC 8536). Daylight time without dates uses the US rule (as glibc does).
    fn parse(text: &str) -> Option<Self> {
        let mut c = Cursor {
            text: text.as_bytes(),
            at: 0,
        };
        c.name()?;
        let std_offset = -c.hms(24)?;
        if c.done() {
            return Some(Self {
                std_offset,
                dst: None,
            });
        }
        c.name()?;
        let offset = match c.peek() {
            None | Some(b',') => std_offset.checked_add(3600)?,
            Some(_) => -c.hms(24)?,
        };
        let (start, end) = if c.eat(b',') {
            let start = c.transition()?;
            if !c.eat(b',') {
                return None;
            }
            (start, c.transition()?)
        } else {
            let us = |week| YearlyTransition {
                date: RuleDate::MonthWeek {
                    month: if week == 2 { 3 } else { 11 },
                    week,
                    weekday: 0,
                },
                time: 7200,
            };
            (us(2), us(1))
        };
        c.done().then_some(Self {
            std_offset,
            dst: Some(Dst { offset, start, end }),
        })
    }

    /// The offset in effect at `unix`.
    fn offset_at(&self, unix: i64) -> i32 {
        let Some(dst) = &self.dst else {
            return self.std_offset;
        };
        let year = year_of(unix.saturating_add(i64::from(self.std_offset)));
        let (Some(start_day), Some(end_day)) = (dst.start.date.day(year), dst.end.date.day(year))
        else {
            return self.std_offset;
        };
        let start = start_day + i64::from(dst.start.time) - i64::from(self.std_offset);
        let end = end_day + i64::from(dst.end.time) - i64::from(dst.offset);
        let in_dst = if start <= end {
            start <= unix && unix < end
        } else {
            // Southern hemisphere: daylight time spans the new year.
            unix < end || start <= unix
        };
        if in_dst { dst.offset } else { self.std_offset }
    }
}

// === impl RuleDate ===

impl RuleDate {
    /// Local midnight of this date in `year`, in seconds as if local time were UTC.
    fn day(self, year: i64) -> Option<i64> {
        let jan1 = civil_to_unix(year, 1, 1, 0, 0, 0)?;
        match self {
            RuleDate::Julian(n) => {
                let skip_leap_day = is_leap(year) && n >= 60;
                Some(jan1 + (i64::from(n) - 1 + i64::from(skip_leap_day)) * DAY)
            }
            RuleDate::ZeroBased(n) => Some(jan1 + i64::from(n) * DAY),
            RuleDate::MonthWeek {
                month,
                week,
                weekday,
            } => {
                let first = civil_to_unix(year, month, 1, 0, 0, 0)?;
                // 1970-01-01 was a Thursday (4).
                let first_weekday = (first.div_euclid(DAY) + 4).rem_euclid(7);
                let mut mday = 1
                    + (i64::from(weekday) - first_weekday).rem_euclid(7)
                    + 7 * (i64::from(week) - 1);
                let days = days_in_month(year, month);
                while mday > days {
                    mday -= 7;
                }
                Some(first + (mday - 1) * DAY)
            }
        }
    }
}

// === impl Cursor ===

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn done(&self) -> bool {
        self.at == self.text.len()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.at += 1;
        }
        hit
    }

    /// A zone abbreviation: three or more letters, or `<…>` with three or more of `[A-Za-z0-9+-]`.
    fn name(&mut self) -> Option<()> {
        let quoted = self.eat(b'<');
        let start = self.at;
        while let Some(b) = self.peek() {
            let ok = b.is_ascii_alphabetic()
                || (quoted && (b.is_ascii_digit() || b == b'+' || b == b'-'));
            if !ok {
                break;
            }
            self.at += 1;
        }
        let long_enough = self.at - start >= 3;
        (long_enough && (!quoted || self.eat(b'>'))).then_some(())
    }

    /// `[+-]h[h[h]][:mm[:ss]]` in seconds, hours at most `max_hours`.
    fn hms(&mut self, max_hours: i64) -> Option<i32> {
        let sign = if self.eat(b'-') {
            -1
        } else {
            self.eat(b'+');
            1
        };
        let hours = self.number(3)?;
        let (mut minutes, mut seconds) = (0, 0);
        if self.eat(b':') {
            minutes = self.number(2)?;
            if self.eat(b':') {
                seconds = self.number(2)?;
            }
        }
        if hours > max_hours || minutes > 59 || seconds > 59 {
            return None;
        }
        i32::try_from(sign * (hours * 3600 + minutes * 60 + seconds)).ok()
    }

    /// One to `max_digits` decimal digits.
    fn number(&mut self, max_digits: usize) -> Option<i64> {
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) && self.at - start < max_digits {
            self.at += 1;
        }
        std::str::from_utf8(&self.text[start..self.at])
            .ok()
            .filter(|s| !s.is_empty())?
            .parse()
            .ok()
    }

    /// `date[/time]`, the time defaulting to 02:00.
    fn transition(&mut self) -> Option<YearlyTransition> {
        let date = if self.eat(b'J') {
            let n = self.number(3)?;
            (1..=365)
                .contains(&n)
                .then_some(RuleDate::Julian(n as u16))?
        } else if self.eat(b'M') {
            let month = self.number(2)?;
            let dot1 = self.eat(b'.');
            let week = self.number(1)?;
            let dot2 = self.eat(b'.');
            let weekday = self.number(1)?;
            let ok = dot1
                && dot2
                && (1..=12).contains(&month)
                && (1..=5).contains(&week)
                && (0..=6).contains(&weekday);
            ok.then_some(RuleDate::MonthWeek {
                month: month as u32,
                week: week as u32,
                weekday: weekday as u32,
            })?
        } else {
            let n = self.number(3)?;
            (0..=365)
                .contains(&n)
                .then_some(RuleDate::ZeroBased(n as u16))?
        };
        let time = if self.eat(b'/') { self.hms(167)? } else { 7200 };
        Some(YearlyTransition { date, time })
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> i64 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 31,
    }
}

/// The proleptic-Gregorian year of a Unix time (H. Hinnant's `civil_from_days`).
fn year_of(unix: i64) -> i64 {
    let z = unix.div_euclid(DAY) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month_is_jan_or_feb = mp >= 10;
    yoe + era * 400 + i64::from(month_is_jan_or_feb)
}

#[cfg(test)]
mod tests;

use jiff::Timestamp;
use jiff::civil::date;

use super::*;
use crate::auth::test_support::utc;
use crate::test_support::TempDir;

const H: i32 = 3600;

/// A naive local date-time.
fn local(y: i16, mo: i8, d: i8, h: i8, mi: i8, s: i8) -> DateTime {
    date(y, mo, d).at(h, mi, s, 0)
}

/// The UTC offset (seconds east) `zone` has at `unix`.
fn offset_at(zone: &TimeZone, unix: i64) -> i32 {
    zone.to_offset(Timestamp::from_second(unix).unwrap())
        .seconds()
}

/// The zone `TZ=text` names when no zone file has that name: a POSIX TZ string.
fn rule(text: &str) -> TimeZone {
    let zone = local_zone(Some(text), Some("/nonexistent-tzdir"));
    assert_ne!(zone, TimeZone::UTC, "{text:?} should parse");
    zone
}

/// A local time type of a TZif file: UTC offset, daylight time or not, abbreviation.
type Kind = (i32, bool, &'static str);

/// A version-2 TZif file: `kinds` (the first applies before any transition), `transitions` (instant, index into
/// `kinds`), then the POSIX `footer` for later instants. The 32-bit section is a UTC stub that readers of
/// version 2 files skip.
fn tzif(transitions: &[(i64, u8)], kinds: &[Kind], footer: &str) -> Vec<u8> {
    fn header(out: &mut Vec<u8>, timecnt: usize, typecnt: usize, charcnt: usize) {
        out.extend(b"TZif2");
        out.extend([0u8; 15]);
        // isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt
        for count in [0, 0, 0, timecnt, typecnt, charcnt] {
            out.extend((count as u32).to_be_bytes());
        }
    }
    let mut out = Vec::new();
    header(&mut out, 0, 1, 4);
    out.extend([0u8; 6]);
    out.extend(b"UTC\0");
    let mut names = Vec::new();
    let mut types = Vec::new();
    for (offset, dst, name) in kinds {
        types.extend(offset.to_be_bytes());
        types.extend([u8::from(*dst), names.len() as u8]);
        names.extend(name.as_bytes());
        names.push(0);
    }
    header(&mut out, transitions.len(), kinds.len(), names.len());
    for (at, _) in transitions {
        out.extend(at.to_be_bytes());
    }
    out.extend(transitions.iter().map(|(_, kind)| kind));
    out.extend(types);
    out.extend(names);
    out.push(b'\n');
    out.extend(footer.as_bytes());
    out.push(b'\n');
    out
}

/// A fresh directory to use as `TZDIR`.
fn zone_dir() -> (TempDir, String) {
    let dir = TempDir::new();
    let path = dir.path().to_str().unwrap().to_owned();
    (dir, path)
}

/// Berlin as a zone file: CET/CEST with the 2021 transitions, then the EU rule.
fn berlin_file() -> Vec<u8> {
    tzif(
        &[
            (utc(2021, 3, 28, 1, 0, 0), 1),
            (utc(2021, 10, 31, 1, 0, 0), 0),
        ],
        &[(H, false, "CET"), (2 * H, true, "CEST")],
        "CET-1CEST,M3.5.0,M10.5.0/3",
    )
}

// --- date formats ---

#[test]
fn legacy_msi_dates() {
    // 2019-01-02 22:56:42 UTC = 1546469802
    assert_eq!(msi_date("01/02/2019 22:56:42 +00:00"), Some(1_546_469_802));
    assert_eq!(msi_date("1/2/2019 10:56:42 PM +00:00"), Some(1_546_469_802));
    assert_eq!(msi_date("1/2/2019 12:00:00 AM +00:00"), Some(1_546_387_200));
    assert_eq!(msi_date("1/2/2019 12:00:00 PM +00:00"), Some(1_546_430_400));
    assert_eq!(msi_date("01/02/2019 23:56:42 +01:00"), Some(1_546_469_802));
    assert_eq!(msi_date("01/02/2019 23:56:42 +0100"), Some(1_546_469_802));
    assert_eq!(msi_date("01/02/2019 23:56:42 +01"), Some(1_546_469_802));
    assert_eq!(msi_date(" 01/02/2019 22:56:42 "), Some(1_546_469_802));
    assert_eq!(msi_date("1/2/2019 10:56:42 pm"), Some(1_546_469_802));
    assert_eq!(msi_date("05/22/2021 17:18:21 +00:00"), Some(1_621_703_901));
    assert_eq!(msi_date("5/22/2021 5:18:21 PM +00:00"), Some(1_621_703_901));
    assert_eq!(msi_date("11/05/2021 15:18:31 +00:00"), Some(1_636_125_511));
    for bad in [
        "",
        "13/01/2019 00:00:00 +00:00",
        "02/30/2019 00:00:00",
        "1/2/2019 13:00:00 PM",
        "1/2/2019 x",
        "01/01/1969 00:00:00 +00:00",
    ] {
        assert_eq!(msi_date(bad), None, "{bad}");
    }
}

#[test]
fn naive_dates() {
    for text in ["2019-01-02 22:56:42.000000", "2019-01-02T22:56:42"] {
        assert_eq!(naive_datetime(text), Some(local(2019, 1, 2, 22, 56, 42)));
    }
    assert_eq!(
        local_to_unix(
            &TimeZone::UTC,
            naive_datetime("2019-01-02 22:56:42.000000").unwrap()
        ),
        Some(1_546_469_802)
    );
    assert_eq!(utc(1970, 1, 1, 0, 0, 0), 0);
    assert!(naive_datetime("2000-02-29 00:00:00").is_some());
    for bad in [
        "2001-02-29 00:00:00",
        "2019-01-02",
        "2019-13-01 00:00:00",
        "soon",
    ] {
        assert_eq!(naive_datetime(bad), None, "{bad}");
    }
}

// --- POSIX TZ strings ---

#[test]
fn us_rule_by_default_and_explicit() {
    for text in [
        "EST5EDT",
        "EST5EDT,M3.2.0,M11.1.0",
        "EST+5EDT4,M3.2.0/2,M11.1.0/02:00:00",
    ] {
        let z = rule(text);
        assert_eq!(offset_at(&z, utc(2021, 3, 14, 6, 59, 59)), -5 * H, "{text}");
        assert_eq!(offset_at(&z, utc(2021, 3, 14, 7, 0, 0)), -4 * H, "{text}");
        assert_eq!(offset_at(&z, utc(2021, 11, 7, 5, 59, 59)), -4 * H, "{text}");
        assert_eq!(offset_at(&z, utc(2021, 11, 7, 6, 0, 0)), -5 * H, "{text}");
    }
}

#[test]
fn fixed_offsets_and_a_southern_rule() {
    assert_eq!(offset_at(&rule("<+0530>-5:30"), 0), 5 * H + 1800);
    assert_eq!(offset_at(&rule("IST-5:30"), 1_700_000_000), 5 * H + 1800);
    assert_eq!(offset_at(&rule("<-03>3"), 0), -3 * H);
    assert_eq!(offset_at(&rule("XXX-1:02:03"), 0), 3723);
    // Southern hemisphere: daylight time spans the new year.
    let sydney = rule("AEST-10AEDT,M10.1.0,M4.1.0/3");
    assert_eq!(offset_at(&sydney, utc(2021, 1, 15, 0, 0, 0)), 11 * H);
    assert_eq!(offset_at(&sydney, utc(2021, 7, 1, 0, 0, 0)), 10 * H);
}

#[test]
fn invalid_posix_strings_are_utc() {
    // The US rule is added only to a string that names daylight time without dates, never to a broken one.
    for text in [
        "EST",
        "ES5",
        "EST25",
        "EST5x",
        "<+05-5",
        "EST5EDT,M3.2.0",
        "EST5EDT,M13.1.0,M11.1.0",
        "EST5EDT,M3.2.0/168,M11.1.0",
    ] {
        assert_eq!(posix_zone(text), None, "{text:?}");
        assert_eq!(
            local_zone(Some(text), Some("/nonexistent-tzdir")),
            TimeZone::UTC,
            "{text:?}"
        );
    }
}

// --- naive local time to instant ---

#[test]
fn local_to_unix_resolves_folds_and_gaps_conservatively() {
    let (dir, tzdir) = zone_dir();
    dir.write("Test/Berlin", &berlin_file());
    let berlin = [
        ((2021, 7, 1, 12, 0, 0), (2021, 7, 1, 10, 0, 0)),
        ((2021, 1, 1, 12, 0, 0), (2021, 1, 1, 11, 0, 0)),
        // 02:30 happens twice on 2021-10-31: the earlier (CEST) instant wins.
        ((2021, 10, 31, 2, 30, 0), (2021, 10, 31, 0, 30, 0)),
        ((2021, 10, 31, 3, 0, 0), (2021, 10, 31, 2, 0, 0)),
        // 02:30 never happens on 2021-03-28: the earliest candidate.
        ((2021, 3, 28, 2, 30, 0), (2021, 3, 28, 0, 30, 0)),
        ((2021, 3, 28, 3, 0, 0), (2021, 3, 28, 1, 0, 0)),
        ((2021, 3, 28, 1, 59, 59), (2021, 3, 28, 0, 59, 59)),
        // Years after the file's last transition follow its footer.
        ((2100, 7, 1, 12, 0, 0), (2100, 7, 1, 10, 0, 0)),
    ];
    let new_york = [
        // 01:30 happens twice on 2021-11-07: EDT.
        ((2021, 11, 7, 1, 30, 0), (2021, 11, 7, 5, 30, 0)),
        ((2021, 11, 7, 2, 0, 0), (2021, 11, 7, 7, 0, 0)),
        ((2001, 2, 3, 4, 5, 6), (2001, 2, 3, 9, 5, 6)),
    ];
    let kolkata = [((2021, 1, 1, 5, 30, 0), (2021, 1, 1, 0, 0, 0))];
    let utc_zone = [((1970, 1, 1, 0, 2, 3), (1970, 1, 1, 0, 2, 3))];
    let zones = [
        (rule("CET-1CEST,M3.5.0,M10.5.0/3"), &berlin[..]),
        (
            local_zone(Some("Test/Berlin"), Some(tzdir.as_str())),
            &berlin[..],
        ),
        (rule("EST5EDT"), &new_york[..]),
        (rule("<+0530>-5:30"), &kolkata[..]),
        (TimeZone::UTC, &utc_zone[..]),
    ];
    for (zone, cases) in zones {
        for &((y, mo, d, h, mi, s), (uy, umo, ud, uh, umi, us)) in cases {
            let naive = local(y, mo, d, h, mi, s);
            assert_eq!(
                local_to_unix(&zone, naive),
                Some(utc(uy, umo, ud, uh, umi, us)),
                "{naive} in {zone:?}"
            );
        }
    }
}

// --- where the zone comes from ---

#[test]
fn tz_names_files_and_rules() {
    let july = utc(2021, 7, 1, 0, 0, 0);
    let (dir, tzdir) = zone_dir();
    let berlin = dir.write("Europe/Berlin", &berlin_file());
    let tzdir = Some(tzdir.as_str());
    for tz in ["UTC", "", ":", "GMT0"] {
        assert_eq!(local_zone(Some(tz), tzdir), TimeZone::UTC, "{tz:?}");
    }
    assert_eq!(
        offset_at(&local_zone(Some("<+0530>-5:30"), tzdir), july),
        5 * H + 1800
    );
    assert_eq!(
        local_zone(Some(":<+0530>-5:30"), tzdir),
        TimeZone::UTC,
        "':' names a file only"
    );
    for tz in [
        "../../etc/passwd",
        "Europe/../../../etc/passwd",
        "Nowhere/Atlantis",
        "/nonexistent/zone",
    ] {
        assert_eq!(local_zone(Some(tz), tzdir), TimeZone::UTC, "{tz:?}");
    }
    let berlin = berlin.to_str().unwrap();
    for tz in [
        "Europe/Berlin",
        ":Europe/Berlin",
        berlin,
        &format!(":{berlin}"),
    ] {
        assert_eq!(offset_at(&local_zone(Some(tz), tzdir), july), 2 * H, "{tz}");
    }
    // Without TZDIR, names are looked up in the system's zone directory (when this machine has one).
    if Path::new(ZONEINFO).join("Asia/Kolkata").exists() {
        let z = local_zone(Some("Asia/Kolkata"), None);
        assert_eq!(offset_at(&z, july), 5 * H + 1800);
    }
}

#[test]
fn tzdir_holds_hand_built_zones() {
    let (dir, tzdir) = zone_dir();
    dir.write(
        "Test/Zone",
        &tzif(
            &[(0, 0)],
            &[(-5 * H, false, "EST")],
            "EST5EDT,M3.2.0,M11.1.0",
        ),
    );
    dir.write("Test/Junk", b"TZif2 but not really");
    let z = local_zone(Some("Test/Zone"), Some(tzdir.as_str()));
    assert_eq!(offset_at(&z, utc(2021, 7, 1, 0, 0, 0)), -4 * H);
    assert_eq!(offset_at(&z, utc(2021, 1, 1, 0, 0, 0)), -5 * H);
    assert_eq!(
        local_zone(Some("Test/Junk"), Some(tzdir.as_str())),
        TimeZone::UTC
    );
    let huge = dir.write("Test/Huge", &vec![b'T'; MAX_TZIF_BYTES as usize + 1]);
    assert!(read_tzif(&huge).unwrap_err().contains("too large"));
}

#[test]
fn system_local_zone_loads() {
    // Whatever /etc/localtime is here, loading it must not fail loudly and must give a sane offset.
    let z = local_zone(None, None);
    assert!(offset_at(&z, 1_700_000_000).unsigned_abs() <= 14 * 3600);
}

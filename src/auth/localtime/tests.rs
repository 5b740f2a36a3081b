use super::*;

const H: i32 = 3600;

/// A UTC civil time as Unix seconds.
fn utc(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    civil_to_unix(y, mo, d, h, mi, s).unwrap()
}

/// One TZif data block, for hand-built files.
#[derive(Default, Clone)]
struct Block {
    times: Vec<i64>,
    kinds: Vec<u8>,
    /// `(utoff, isdst)`.
    types: Vec<(i32, u8)>,
    /// Dummy leap-second records to skip.
    leaps: usize,
    /// Emit isstd/isut indicators (one per type).
    indicators: bool,
}

impl Block {
    fn header(&self, version: u8) -> Vec<u8> {
        let mut out = b"TZif".to_vec();
        out.push(version);
        out.extend([0u8; 15]);
        let ind = if self.indicators { self.types.len() } else { 0 };
        for count in [ind, ind, self.leaps, self.times.len(), self.types.len(), 4] {
            out.extend((count as u32).to_be_bytes());
        }
        out
    }

    fn data(&self, time_size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for &t in &self.times {
            if time_size == 4 {
                out.extend((t as i32).to_be_bytes());
            } else {
                out.extend(t.to_be_bytes());
            }
        }
        out.extend(&self.kinds);
        for &(off, dst) in &self.types {
            out.extend(off.to_be_bytes());
            out.extend([dst, 0]);
        }
        out.extend(b"XXX\0");
        for i in 0..self.leaps {
            if time_size == 4 {
                out.extend((i as i32).to_be_bytes());
            } else {
                out.extend((i as i64).to_be_bytes());
            }
            out.extend(1i32.to_be_bytes());
        }
        if self.indicators {
            out.extend(vec![0u8; 2 * self.types.len()]);
        }
        out
    }
}

/// A version-1 file.
fn tzif_v1(b: &Block) -> Vec<u8> {
    let mut out = b.header(0);
    out.extend(b.data(4));
    out
}

/// A version-2+ file: a (possibly decoy) 32-bit block, the 64-bit block and the footer.
fn tzif_v2(version: u8, v1: &Block, v2: &Block, footer: &str) -> Vec<u8> {
    let mut out = v1.header(version);
    out.extend(v1.data(4));
    out.extend(v2.header(version));
    out.extend(v2.data(8));
    out.push(b'\n');
    out.extend(footer.as_bytes());
    out.push(b'\n');
    out
}

fn utc_block() -> Block {
    Block {
        types: vec![(0, 0)],
        ..Block::default()
    }
}

fn rule(text: &str) -> Zone {
    Zone::from_rule(Rule::parse(text).unwrap_or_else(|| panic!("{text:?} should parse")))
}

/// The system's zone file, or `None` (and a note) when this machine lacks it.
fn system(name: &str) -> Option<Zone> {
    let path = Path::new(ZONEINFO).join(name);
    if !path.exists() {
        eprintln!("skipping: {} is not installed", path.display());
        return None;
    }
    Some(Zone::from_file(&path).unwrap())
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aml-localtime-{}", crate::ids::uuid_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// --- hand-built TZif ---

#[test]
fn version_1_file() {
    let zone = Zone::from_tzif(&tzif_v1(&Block {
        times: vec![1000, 2000],
        kinds: vec![1, 0],
        types: vec![(H, 0), (2 * H, 1)],
        leaps: 2,
        indicators: true,
    }))
    .unwrap();
    assert_eq!(
        zone.offset_at(-5_000_000_000),
        H,
        "before the first: type 0"
    );
    assert_eq!(zone.offset_at(999), H);
    assert_eq!(zone.offset_at(1000), 2 * H);
    assert_eq!(zone.offset_at(1999), 2 * H);
    assert_eq!(zone.offset_at(2000), H);
    assert_eq!(zone.offset_at(4_000_000_000), H, "no footer: the last type");
}

#[test]
fn version_2_reads_the_64_bit_section_and_footer() {
    // The 32-bit block is a decoy (UTC); only the 64-bit block has the transition past 2038.
    let v2 = Block {
        times: vec![-3_000_000_000, 3_000_000_000],
        kinds: vec![0, 1],
        types: vec![(0, 0), (-3 * H, 0)],
        ..Block::default()
    };
    for version in [b'2', b'3', b'4'] {
        let zone = Zone::from_tzif(&tzif_v2(version, &utc_block(), &v2, "<+0530>-5:30")).unwrap();
        assert_eq!(zone.offset_at(2_999_999_999), 0);
        assert_eq!(zone.offset_at(-3_000_000_001), 0);
        // After the last transition the footer rules, not the last type.
        assert_eq!(zone.offset_at(3_000_000_000), 5 * H + 1800);
    }
}

#[test]
fn footer_rule_after_the_last_transition() {
    let v2 = Block {
        times: vec![0],
        kinds: vec![0],
        types: vec![(H, 0), (2 * H, 1)],
        ..Block::default()
    };
    let zone = Zone::from_tzif(&tzif_v2(
        b'2',
        &utc_block(),
        &v2,
        "CET-1CEST,M3.5.0,M10.5.0/3",
    ))
    .unwrap();
    assert_eq!(zone.offset_at(utc(2021, 3, 28, 0, 59, 59)), H);
    assert_eq!(zone.offset_at(utc(2021, 3, 28, 1, 0, 0)), 2 * H);
    assert_eq!(zone.offset_at(utc(2021, 10, 31, 0, 59, 59)), 2 * H);
    assert_eq!(zone.offset_at(utc(2021, 10, 31, 1, 0, 0)), H);
    assert_eq!(zone.offset_at(utc(2250, 7, 1, 0, 0, 0)), 2 * H);
}

#[test]
fn empty_footer_keeps_the_last_type() {
    let v2 = Block {
        times: vec![100],
        kinds: vec![1],
        types: vec![(0, 0), (-7 * H, 0)],
        ..Block::default()
    };
    let zone = Zone::from_tzif(&tzif_v2(b'2', &utc_block(), &v2, "")).unwrap();
    assert_eq!(zone.offset_at(99), 0);
    assert_eq!(zone.offset_at(5_000_000_000), -7 * H);
}

#[test]
fn malformed_tzif_is_rejected() {
    let good = tzif_v1(&Block {
        times: vec![10],
        kinds: vec![0],
        types: vec![(H, 0)],
        ..Block::default()
    });
    assert!(Zone::from_tzif(&good).is_ok());
    assert!(Zone::from_tzif(b"").is_err());
    assert!(Zone::from_tzif(&good[..30]).is_err(), "truncated header");
    assert!(
        Zone::from_tzif(&good[..good.len() - 1]).is_err(),
        "truncated data"
    );
    let mut magic = good.clone();
    magic[0] = b'X';
    assert!(Zone::from_tzif(&magic).is_err());
    let bad_kind = tzif_v1(&Block {
        times: vec![10],
        kinds: vec![1],
        types: vec![(H, 0)],
        ..Block::default()
    });
    assert!(
        Zone::from_tzif(&bad_kind).is_err(),
        "type index out of range"
    );
    let unordered = tzif_v1(&Block {
        times: vec![20, 10],
        kinds: vec![0, 0],
        types: vec![(H, 0)],
        ..Block::default()
    });
    assert!(Zone::from_tzif(&unordered).is_err());
    assert!(
        Zone::from_tzif(&tzif_v1(&Block::default())).is_err(),
        "no types"
    );
    let huge_offset = tzif_v1(&Block {
        types: vec![(30 * H, 0)],
        ..Block::default()
    });
    assert!(Zone::from_tzif(&huge_offset).is_err());
    let mut no_footer = tzif_v2(b'2', &utc_block(), &utc_block(), "UTC0");
    no_footer.truncate(no_footer.len() - 1);
    assert!(Zone::from_tzif(&no_footer).is_err(), "unterminated footer");
    assert!(Zone::from_tzif(&tzif_v2(b'2', &utc_block(), &utc_block(), "nonsense")).is_err());
    let mut v2_truncated = tzif_v2(b'2', &utc_block(), &utc_block(), "UTC0");
    v2_truncated.truncate(60);
    assert!(Zone::from_tzif(&v2_truncated).is_err());
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
        assert_eq!(z.offset_at(utc(2021, 3, 14, 6, 59, 59)), -5 * H, "{text}");
        assert_eq!(z.offset_at(utc(2021, 3, 14, 7, 0, 0)), -4 * H, "{text}");
        assert_eq!(z.offset_at(utc(2021, 11, 7, 5, 59, 59)), -4 * H, "{text}");
        assert_eq!(z.offset_at(utc(2021, 11, 7, 6, 0, 0)), -5 * H, "{text}");
    }
}

#[test]
fn southern_hemisphere_rule() {
    let z = rule("AEST-10AEDT,M10.1.0,M4.1.0/3");
    assert_eq!(z.offset_at(utc(2021, 1, 15, 0, 0, 0)), 11 * H);
    assert_eq!(z.offset_at(utc(2021, 4, 3, 15, 59, 59)), 11 * H);
    assert_eq!(z.offset_at(utc(2021, 4, 3, 16, 0, 0)), 10 * H);
    assert_eq!(z.offset_at(utc(2021, 7, 1, 0, 0, 0)), 10 * H);
    assert_eq!(z.offset_at(utc(2021, 10, 2, 15, 59, 59)), 10 * H);
    assert_eq!(z.offset_at(utc(2021, 10, 2, 16, 0, 0)), 11 * H);
    assert_eq!(
        z.offset_at(utc(2021, 12, 31, 13, 30, 0)),
        11 * H,
        "new year's eve"
    );
}

#[test]
fn fixed_offsets() {
    assert_eq!(rule("<+0530>-5:30").offset_at(0), 5 * H + 1800);
    assert_eq!(rule("IST-5:30").offset_at(1_700_000_000), 5 * H + 1800);
    assert_eq!(rule("<-03>3").offset_at(0), -3 * H);
    assert_eq!(rule("UTC0").offset_at(0), 0);
    assert_eq!(rule("XXX-1:02:03").offset_at(0), 3723);
}

#[test]
fn julian_and_zero_based_days() {
    // 2024 is a leap year: J60 is March 1, zero-based 59 is February 29.
    let j = rule("XXX0YYY,J60/0,J300/0");
    assert_eq!(j.offset_at(utc(2024, 2, 29, 23, 59, 59)), 0);
    assert_eq!(j.offset_at(utc(2024, 3, 1, 0, 0, 0)), H);
    let n = rule("XXX0YYY,59/0,300/0");
    assert_eq!(n.offset_at(utc(2024, 2, 28, 23, 59, 59)), 0);
    assert_eq!(n.offset_at(utc(2024, 2, 29, 0, 0, 0)), H);
    assert_eq!(
        n.offset_at(utc(2023, 3, 1, 0, 0, 0)),
        H,
        "no Feb 29 in 2023"
    );
}

#[test]
fn daylight_time_all_year_and_negative_times() {
    let all_year = rule("EST5EDT,0/0,J365/25");
    for t in [
        utc(2021, 1, 1, 5, 0, 30),
        utc(2021, 7, 1, 0, 0, 0),
        utc(2021, 12, 31, 23, 0, 0),
    ] {
        assert_eq!(all_year.offset_at(t), -4 * H);
    }
    // America/Nuuk's footer: daylight time starts at -1:00 local (Saturday 23:00).
    let nuuk = rule("<-02>2<-01>,M3.5.0/-1,M10.5.0/0");
    assert_eq!(nuuk.offset_at(utc(2023, 3, 26, 0, 59, 59)), -2 * H);
    assert_eq!(nuuk.offset_at(utc(2023, 3, 26, 1, 0, 0)), -H);
}

#[test]
fn invalid_posix_strings() {
    for text in [
        "",
        "EST",
        "5",
        "ES5",
        "EST25",
        "EST5x",
        "<+05>",
        "<+05-5",
        "EST5EDT,M13.1.0,M11.1.0",
        "EST5EDT,M3.6.0,M11.1.0",
        "EST5EDT,M3.2.7,M11.1.0",
        "EST5EDT,M3.2.0",
        "EST5EDT,J0,J365",
        "EST5EDT,366,0",
        "EST5EDT,M3.2.0/168,M11.1.0",
    ] {
        assert_eq!(Rule::parse(text), None, "{text:?}");
    }
}

// --- the system's zone files ---

#[test]
fn berlin_across_daylight_saving() {
    let Some(z) = system("Europe/Berlin") else {
        return;
    };
    assert_eq!(z.offset_at(utc(2021, 3, 28, 0, 59, 59)), H);
    assert_eq!(z.offset_at(utc(2021, 3, 28, 1, 0, 0)), 2 * H);
    assert_eq!(z.offset_at(utc(2021, 10, 31, 0, 59, 59)), 2 * H);
    assert_eq!(z.offset_at(utc(2021, 10, 31, 1, 0, 0)), H);
    assert_eq!(z.offset_at(utc(2100, 7, 1, 0, 0, 0)), 2 * H, "footer era");
    assert_eq!(z.offset_at(utc(2100, 1, 1, 0, 0, 0)), H);
}

#[test]
fn new_york_across_daylight_saving() {
    let Some(z) = system("America/New_York") else {
        return;
    };
    assert_eq!(z.offset_at(utc(2021, 3, 14, 6, 59, 59)), -5 * H);
    assert_eq!(z.offset_at(utc(2021, 3, 14, 7, 0, 0)), -4 * H);
    assert_eq!(z.offset_at(utc(2021, 11, 7, 5, 59, 59)), -4 * H);
    assert_eq!(z.offset_at(utc(2021, 11, 7, 6, 0, 0)), -5 * H);
    assert_eq!(z.offset_at(utc(2001, 2, 3, 4, 5, 6)), -5 * H);
    assert_eq!(z.offset_at(utc(2077, 7, 4, 12, 0, 0)), -4 * H);
}

#[test]
fn utc_and_kolkata() {
    if let Some(z) = system("UTC") {
        assert_eq!(z.offset_at(utc(2021, 6, 1, 0, 0, 0)), 0);
        assert_eq!(z.offset_at(utc(2200, 6, 1, 0, 0, 0)), 0);
    }
    if let Some(z) = system("Asia/Kolkata") {
        assert_eq!(z.offset_at(utc(2021, 6, 1, 0, 0, 0)), 5 * H + 1800);
        assert_eq!(z.offset_at(utc(2021, 12, 1, 0, 0, 0)), 5 * H + 1800);
    }
}

// --- naive local time to instant ---

#[test]
fn local_to_unix_resolves_folds_and_gaps_conservatively() {
    for z in [
        system("Europe/Berlin"),
        Some(rule("CET-1CEST,M3.5.0,M10.5.0/3")),
    ]
    .into_iter()
    .flatten()
    {
        assert_eq!(
            z.local_to_unix(utc(2021, 7, 1, 12, 0, 0)),
            utc(2021, 7, 1, 10, 0, 0)
        );
        assert_eq!(
            z.local_to_unix(utc(2021, 1, 1, 12, 0, 0)),
            utc(2021, 1, 1, 11, 0, 0)
        );
        // 02:30 happens twice on 2021-10-31: the earlier (CEST) instant wins.
        assert_eq!(
            z.local_to_unix(utc(2021, 10, 31, 2, 30, 0)),
            utc(2021, 10, 31, 0, 30, 0)
        );
        assert_eq!(
            z.local_to_unix(utc(2021, 10, 31, 3, 0, 0)),
            utc(2021, 10, 31, 2, 0, 0)
        );
        // 02:30 never happens on 2021-03-28: the earliest candidate.
        assert_eq!(
            z.local_to_unix(utc(2021, 3, 28, 2, 30, 0)),
            utc(2021, 3, 28, 0, 30, 0)
        );
        assert_eq!(
            z.local_to_unix(utc(2021, 3, 28, 3, 0, 0)),
            utc(2021, 3, 28, 1, 0, 0)
        );
        assert_eq!(
            z.local_to_unix(utc(2021, 3, 28, 1, 59, 59)),
            utc(2021, 3, 28, 0, 59, 59)
        );
    }
    for z in [system("America/New_York"), Some(rule("EST5EDT"))]
        .into_iter()
        .flatten()
    {
        assert_eq!(
            z.local_to_unix(utc(2021, 11, 7, 1, 30, 0)),
            utc(2021, 11, 7, 5, 30, 0)
        );
        assert_eq!(
            z.local_to_unix(utc(2021, 11, 7, 2, 0, 0)),
            utc(2021, 11, 7, 7, 0, 0)
        );
        assert_eq!(
            z.local_to_unix(utc(2001, 2, 3, 4, 5, 6)),
            utc(2001, 2, 3, 9, 5, 6)
        );
    }
    assert_eq!(Zone::utc().local_to_unix(123), 123);
    assert_eq!(
        rule("<+0530>-5:30").local_to_unix(utc(2021, 1, 1, 5, 30, 0)),
        utc(2021, 1, 1, 0, 0, 0)
    );
}

// --- where the zone comes from ---

#[test]
fn tz_names_files_and_rules() {
    let july = utc(2021, 7, 1, 0, 0, 0);
    assert_eq!(Zone::load(Some("UTC"), None), Zone::utc());
    assert_eq!(Zone::load(Some(""), None), Zone::utc());
    assert_eq!(Zone::load(Some(":"), None), Zone::utc());
    assert_eq!(
        Zone::load(Some("<+0530>-5:30"), None).offset_at(july),
        5 * H + 1800
    );
    assert_eq!(
        Zone::load(Some(":<+0530>-5:30"), None),
        Zone::utc(),
        "':' names a file only"
    );
    assert_eq!(Zone::load(Some("../../etc/passwd"), None), Zone::utc());
    assert_eq!(Zone::load(Some("Nowhere/Atlantis"), None), Zone::utc());
    assert_eq!(Zone::load(Some("/nonexistent/zone"), None), Zone::utc());
    if system("Europe/Berlin").is_some() {
        for tz in [
            "Europe/Berlin",
            ":Europe/Berlin",
            "/usr/share/zoneinfo/Europe/Berlin",
        ] {
            assert_eq!(Zone::load(Some(tz), None).offset_at(july), 2 * H, "{tz}");
        }
    }
    if system("Asia/Kolkata").is_some() {
        let z = Zone::load(Some(":/usr/share/zoneinfo/Asia/Kolkata"), None);
        assert_eq!(z.offset_at(july), 5 * H + 1800);
    }
}

#[test]
fn tzdir_holds_hand_built_zones() {
    let dir = temp_dir();
    std::fs::create_dir_all(dir.join("Test")).unwrap();
    let bytes = tzif_v2(
        b'2',
        &utc_block(),
        &Block {
            times: vec![0],
            kinds: vec![0],
            types: vec![(-5 * H, 0)],
            ..Block::default()
        },
        "EST5EDT,M3.2.0,M11.1.0",
    );
    std::fs::write(dir.join("Test/Zone"), bytes).unwrap();
    std::fs::write(dir.join("Test/Junk"), b"TZif2 but not really").unwrap();
    let z = Zone::load(Some("Test/Zone"), Some(&dir.display().to_string()));
    assert_eq!(z.offset_at(utc(2021, 7, 1, 0, 0, 0)), -4 * H);
    assert_eq!(z.offset_at(utc(2021, 1, 1, 0, 0, 0)), -5 * H);
    assert_eq!(
        Zone::load(Some("Test/Junk"), Some(&dir.display().to_string())),
        Zone::utc()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn system_local_zone_loads() {
    // Whatever /etc/localtime is here, loading it must not fail loudly and must give a sane offset.
    let z = Zone::load(None, None);
    assert!(z.offset_at(1_700_000_000).unsigned_abs() <= 14 * 3600);
}

#[test]
fn year_of_matches_civil_dates() {
    assert_eq!(year_of(0), 1970);
    assert_eq!(year_of(-1), 1969);
    assert_eq!(year_of(utc(2024, 12, 31, 23, 59, 59)), 2024);
    assert_eq!(year_of(utc(2025, 1, 1, 0, 0, 0)), 2025);
    assert_eq!(year_of(utc(2000, 2, 29, 12, 0, 0)), 2000);
}

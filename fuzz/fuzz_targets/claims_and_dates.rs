//! Expiry date formats (`auth::expiry::{msi_date, naive_datetime}`) and claims documents
//! (`auth::claims::{decode_claims_challenge, with_capabilities}`) on the input's text.

#![no_main]

use aml_auth_proxy::fuzzing::{
    CP1, decode_claims_challenge, msi_date, naive_datetime, with_capabilities,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Unix seconds to a proleptic-Gregorian civil date-time (H. Hinnant's `civil_from_days`).
fn civil(t: i64) -> (i64, u32, u32, u32, u32, u32) {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    (year, month, day, h as u32, m as u32, s as u32)
}

fn dates(text: &str) {
    // Each parser's result, written back in that parser's own format, parses to the same instant (years that the
    // formats can hold: four digits).
    if let Some(t) = msi_date(text) {
        let (y, mo, d, h, mi, s) = civil(t as i64);
        if y <= 9999 {
            let back = format!("{mo:02}/{d:02}/{y:04} {h:02}:{mi:02}:{s:02} +00:00");
            assert_eq!(
                msi_date(&back),
                Some(t),
                "msi_date {text:?} -> {t} -> {back:?}"
            );
            let h12 = if h % 12 == 0 { 12 } else { h % 12 };
            let am_pm = if h < 12 { "AM" } else { "PM" };
            let windows = format!("{mo}/{d}/{y} {h12}:{mi:02}:{s:02} {am_pm} +00:00");
            assert_eq!(
                msi_date(&windows),
                Some(t),
                "msi_date {text:?} -> {t} -> {windows:?}"
            );
        }
    }
    if let Some(dt) = naive_datetime(text) {
        if dt.year() >= 0 {
            for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
                let back = dt.strftime(format).to_string();
                assert_eq!(
                    naive_datetime(&back),
                    Some(dt),
                    "naive {text:?} -> {dt} -> {back:?}"
                );
            }
        }
    }
}

fn claims(text: &str) {
    if let Ok(json) = decode_claims_challenge(text) {
        match serde_json::from_str::<Value>(&json) {
            Ok(v) => assert!(v.is_object(), "decoded claims {json:?} are not an object"),
            Err(e) => panic!("decoded claims {json:?} are not JSON: {e}"),
        }
    }
    // Without capabilities the claims go out untouched.
    assert_eq!(with_capabilities(Some(text), &[]).as_deref(), Some(text));
    for capabilities in [&[CP1][..], &[CP1, "cp2"][..]] {
        let Some(merged) = with_capabilities(Some(text), capabilities) else {
            panic!("capabilities dropped for {text:?}");
        };
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(_)) => {
                let v: Value = match serde_json::from_str(&merged) {
                    Ok(v) => v,
                    Err(e) => panic!("merged claims {merged:?} are not JSON: {e}"),
                };
                let values = v["access_token"]["xms_cc"]["values"].as_array();
                for c in capabilities {
                    assert!(
                        values.is_some_and(|vs| vs.iter().any(|x| x.as_str() == Some(c))),
                        "{c} missing from {merged:?}"
                    );
                }
                // Merging again changes nothing.
                assert_eq!(
                    with_capabilities(Some(&merged), capabilities).as_deref(),
                    Some(merged.as_str()),
                    "merge is not idempotent"
                );
            }
            _ => assert_eq!(merged, text, "non-object claims are sent as given"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    dates(&text);
    claims(&text);
    // Each line alone too, so seeds can carry several values.
    if text.contains('\n') {
        for line in text.lines() {
            dates(line);
            claims(line);
        }
    }
});

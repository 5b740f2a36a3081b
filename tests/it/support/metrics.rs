//! Reading the proxy's Prometheus exposition: parsed into samples (for label-level checks), or one series read as
//! the proxy writes it, polled until it reaches a value.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::get;

/// One sample of a Prometheus text scrape: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) value: f64,
}

/// Parses the Prometheus text format (enough of it for these tests: no escaped quotes in label values).
pub(crate) fn parse_scrape(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|e| panic!("{e}: {line}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series, BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                    let labels = body
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|pair| {
                            let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                            (k.to_owned(), v.trim_end_matches('"').to_owned())
                        })
                        .collect();
                    (name, labels)
                }
            };
            Sample {
                name: name.to_owned(),
                labels,
                value,
            }
        })
        .collect()
}

/// The value of the sample `name` whose labels include every pair of `labels`, if there is exactly one.
pub(crate) fn value_of(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<&Sample> = matching(samples, name, labels).collect();
    match matching.as_slice() {
        [one] => Some(one.value),
        _ => None,
    }
}

/// The sum of every sample of family `name` whose labels include every pair of `labels`.
pub(crate) fn sum_of(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    matching(samples, name, labels).map(|s| s.value).sum()
}

/// The samples `name` whose labels include every pair of `labels`.
fn matching<'a>(
    samples: &'a [Sample],
    name: &'a str,
    labels: &'a [(&str, &str)],
) -> impl Iterator<Item = &'a Sample> {
    samples.iter().filter(move |s| {
        s.name == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

/// The value of `series`, written exactly as the exposition writes it (`name` or `name{k="v",…}`), if present.
pub(crate) fn series(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// `GET url` (a `/metrics` URL): the exposition text, whatever the status.
pub(crate) async fn scrape(url: &str) -> String {
    String::from_utf8(get(url).await.2.to_vec()).unwrap()
}

/// The value of `series` in the exposition at `url` (a `/metrics` URL), if present.
pub(crate) async fn series_at(url: &str, name: &str) -> Option<f64> {
    series(&scrape(url).await, name)
}

/// Polls `series` at `url` every 20 ms until it reads `want`; returns how long that took. Fails the test once
/// `limit` has passed.
pub(crate) async fn series_reaches(url: &str, name: &str, want: f64, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let now = series_at(url, name).await;
        if now == Some(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() <= limit,
            "{name} is {now:?} after {limit:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

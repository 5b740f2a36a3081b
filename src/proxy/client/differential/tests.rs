use super::*;

/// The body a `POST` sends.
const POST_BODY: &[u8] = br#"{"input":[1,2,3]}"#;

/// Which requests an answer is compared under.
#[derive(Debug, Clone, Copy)]
enum Asked {
    /// `GET` without a body and `POST` with one.
    GetAndPost,
    /// `HEAD` (whose answer has no body whatever its fields say), and `GET` for contrast.
    Head,
}

struct Case {
    name: &'static str,
    answer: Vec<u8>,
    asked: Asked,
}

fn case(name: &'static str, answer: impl Into<Vec<u8>>) -> Case {
    Case {
        name,
        answer: answer.into(),
        asked: Asked::GetAndPost,
    }
}

fn head_case(name: &'static str, answer: impl Into<Vec<u8>>) -> Case {
    Case {
        name,
        answer: answer.into(),
        asked: Asked::Head,
    }
}

/// `n` header fields.
fn fields(n: usize) -> String {
    (0..n).map(|i| format!("X-F{i}: v{i}\r\n")).collect()
}

/// Upstream answers that exercise framing: what the own exchange reads, and everything it leaves to hyper.
fn table() -> Vec<Case> {
    let body_100k = "b".repeat(100 * 1024);
    vec![
        // Plain answers, read by the own exchange.
        case("cl-0", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        case(
            "cl-small",
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"score\":0.5}",
        ),
        case(
            "cl-100k",
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body_100k}",
                body_100k.len()
            ),
        ),
        case(
            "cl-fields-in-order",
            "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-A: 1\r\nset-cookie: b=2\r\nContent-Length: 2\r\nX-A: 2\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\nok",
        ),
        case(
            "cl-no-reason",
            "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
        ),
        case(
            "cl-odd-reason",
            "HTTP/1.1 200 Fine By Me\r\nContent-Length: 2\r\n\r\nok",
        ),
        case(
            "cl-201",
            "HTTP/1.1 201 Created\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n",
        ),
        case(
            "cl-404",
            "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found",
        ),
        case(
            "cl-500",
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\nConnection: close\r\n\r\noops!",
        ),
        case(
            "cl-599",
            "HTTP/1.1 599 Whatever\r\nContent-Length: 1\r\n\r\nx",
        ),
        case("cl-999", "HTTP/1.1 999 Odd\r\nContent-Length: 1\r\n\r\nx"),
        case(
            "cl-leading-zeros",
            "HTTP/1.1 200 OK\r\nContent-Length: 0005\r\n\r\nhello",
        ),
        case(
            "cl-no-space",
            "HTTP/1.1 200 OK\r\nContent-Length:5\r\n\r\nhello",
        ),
        case(
            "cl-trailing-space",
            "HTTP/1.1 200 OK\r\nContent-Length: 5  \r\n\r\nhello",
        ),
        case(
            "cl-tab-around",
            "HTTP/1.1 200 OK\r\nContent-Length:\t5\t\r\n\r\nhello",
        ),
        case(
            "cl-lowercase-name",
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
        ),
        case(
            "empty-value",
            "HTTP/1.1 200 OK\r\nX-Empty:\r\nContent-Length: 0\r\n\r\n",
        ),
        case(
            "tab-in-value",
            "HTTP/1.1 200 OK\r\nX-Tab: a\tb\r\nContent-Length: 0\r\n\r\n",
        ),
        case(
            "obs-text-value",
            &b"HTTP/1.1 200 OK\r\nX-Name: caf\xe9 \x80\xff\r\nContent-Length: 0\r\n\r\n"[..],
        ),
        case(
            "obs-text-reason",
            &b"HTTP/1.1 200 \xc3\xa7a va\r\nContent-Length: 0\r\n\r\n"[..],
        ),
        case(
            "nul-in-value",
            &b"HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 0\r\n\r\n"[..],
        ),
        case(
            "del-in-value",
            &b"HTTP/1.1 200 OK\r\nX-A: a\x7fb\r\nContent-Length: 0\r\n\r\n"[..],
        ),
        case(
            "connection-close-lower",
            "HTTP/1.1 200 OK\r\nconnection: close\r\nContent-Length: 2\r\n\r\nok",
        ),
        case(
            "connection-close-upper",
            "HTTP/1.1 200 OK\r\nCONNECTION: CLOSE\r\nContent-Length: 2\r\n\r\nok",
        ),
        case(
            "connection-keep-alive",
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok",
        ),
        case(
            "extra-after-body",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA BYTES",
        ),
        case(
            "pipelined-second-answer",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ),
        case(
            "short-body-eof",
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        ),
        case(
            "cl-only-head-eof",
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
        ),
        case("bare-lf", "HTTP/1.1 200 OK\nContent-Length: 5\n\nhello"),
        case(
            "mixed-line-ends",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\nX-A: 1\r\n\nhello",
        ),
        case(
            "leading-empty-lines",
            "\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ),
        case(
            "fields-64",
            format!("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n{}\r\n", fields(63)),
        ),
        case(
            "fields-65",
            format!("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n{}\r\n", fields(64)),
        ),
        case(
            "fields-100",
            format!("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n{}\r\n", fields(99)),
        ),
        case(
            "fields-101",
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n{}\r\n",
                fields(100)
            ),
        ),
        // No body whatever the fields say.
        case("204-no-cl", "HTTP/1.1 204 No Content\r\n\r\n"),
        case(
            "204-cl",
            "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
        ),
        case(
            "204-cl-body-follows",
            "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
        ),
        case(
            "204-bad-cl",
            "HTTP/1.1 204 No Content\r\nContent-Length: abc\r\n\r\n",
        ),
        case(
            "204-chunked",
            "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        case(
            "304-no-cl",
            "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
        ),
        case(
            "304-cl",
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n",
        ),
        // Chunked bodies: hyper's.
        case(
            "chunked",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        case(
            "chunked-extensions",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0;last\r\n\r\n",
        ),
        case(
            "chunked-trailers",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n",
        ),
        case(
            "chunked-bad-size",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        ),
        case(
            "chunked-missing-crlf",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX0\r\n\r\n",
        ),
        case(
            "chunked-lf-only",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
        ),
        case(
            "chunked-cut-off",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        ),
        case(
            "chunked-uppercase",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: CHUNKED\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ),
        case(
            "te-gzip-chunked",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ),
        case(
            "te-not-chunked-last",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nto the end",
        ),
        case(
            "te-gzip",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nto the end",
        ),
        case(
            "cl-and-te",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ),
        case(
            "te-and-cl",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 100\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ),
        // Delimited by the end of the connection: hyper's.
        case(
            "close-delimited",
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nto the end",
        ),
        case("close-delimited-empty", "HTTP/1.1 200 OK\r\n\r\n"),
        case(
            "close-delimited-connection-close",
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end",
        ),
        // HTTP/1.0: hyper's.
        case(
            "http10-cl",
            "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        ),
        case(
            "http10-keep-alive",
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello",
        ),
        case("http10-no-length", "HTTP/1.0 200 OK\r\n\r\nto the end"),
        case(
            "http10-chunked",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ),
        case("http10-204", "HTTP/1.0 204 No Content\r\n\r\n"),
        // Informational answers first: hyper's.
        case(
            "100-continue",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ),
        case(
            "103-early-hints",
            "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ),
        case(
            "100-then-204",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        ),
        case("102-then-eof", "HTTP/1.1 102 Processing\r\n\r\n"),
        case(
            "101-to-plain-request",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nframes",
        ),
        // Content-Length hyper reads differently, or not at all: hyper's.
        case(
            "cl-duplicate-equal",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        ),
        case(
            "cl-duplicate-unequal",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        case(
            "cl-list-equal",
            "HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\nx",
        ),
        case(
            "cl-list-unequal",
            "HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nxy",
        ),
        case("cl-plus", "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx"),
        case("cl-minus", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nx"),
        case("cl-hex", "HTTP/1.1 200 OK\r\nContent-Length: 0x1\r\n\r\nx"),
        case("cl-empty", "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\nx"),
        case(
            "cl-inner-space",
            "HTTP/1.1 200 OK\r\nContent-Length: 1 1\r\n\r\nx",
        ),
        case(
            "cl-huge",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nx",
        ),
        case(
            "cl-u64-max",
            "HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\nx",
        ),
        case(
            "cl-19-digits",
            "HTTP/1.1 200 OK\r\nContent-Length: 9999999999999999999\r\n\r\nx",
        ),
        case(
            "cl-20-digits-small",
            "HTTP/1.1 200 OK\r\nContent-Length: 00000000000000000001\r\n\r\nx",
        ),
        // Heads hyper's parser refuses (with the settings the client uses), or that never end.
        case(
            "obs-fold",
            "HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 0\r\n\r\n",
        ),
        case(
            "space-before-colon",
            "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello",
        ),
        case(
            "bad-name",
            "HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n",
        ),
        case(
            "empty-name",
            "HTTP/1.1 200 OK\r\n: x\r\nContent-Length: 0\r\n\r\n",
        ),
        case(
            "status-099",
            "HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n",
        ),
        case(
            "status-2-digits",
            "HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
        ),
        case(
            "http2-version",
            "HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        ),
        case(
            "http11-lowercase",
            "http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ),
        case("not-http", "hello world\r\n\r\n"),
        case("cr-only", "HTTP/1.1 200 OK\rContent-Length: 0\r\r"),
        case(
            "head-over-64k",
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Big: {}\r\n\r\n",
                "v".repeat(1024 * 1024)
            ),
        ),
        case(
            "head-cut-off",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A",
        ),
        case("status-line-cut-off", "HTTP/1.1 20"),
        case("immediate-eof", ""),
        // Answers to HEAD: no body, whatever the fields say.
        head_case("head-cl", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
        head_case(
            "head-cl-body-follows",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        ),
        head_case("head-cl-0", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        head_case(
            "head-chunked",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        head_case("head-no-length", "HTTP/1.1 200 OK\r\n\r\n"),
        head_case("head-204", "HTTP/1.1 204 No Content\r\n\r\n"),
        head_case(
            "head-404-cl",
            "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\n",
        ),
    ]
}

/// The requests a case is compared under: method and body.
fn requests(asked: Asked) -> &'static [(&'static str, &'static [u8])] {
    match asked {
        Asked::GetAndPost => &[("GET", b""), ("POST", POST_BODY)],
        Asked::Head => &[("HEAD", b""), ("GET", b"")],
    }
}

/// Compares every case under its requests; returns how many cases the own exchange answered under their first
/// request.
fn check_all(cases: &[Case]) -> usize {
    let mut failures = Vec::new();
    let mut by_own = 0;
    for case in cases {
        for (i, &(method, body)) in requests(case.asked).iter().enumerate() {
            match run_both(&case.answer, method, body, &[]) {
                Ok((own, hyper)) => {
                    if i == 0 && own.by_own {
                        by_own += 1;
                    }
                    if hyper.by_own {
                        failures.push(format!(
                            "{} ({method}): hyper's client gave an own answer",
                            case.name
                        ));
                    }
                    if let Err(e) = compare(&own, &hyper) {
                        failures.push(format!("{} ({method}): {e}", case.name));
                    }
                }
                Err(e) => failures.push(format!("{} ({method}): {e}", case.name)),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} disagreement(s):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    by_own
}

#[test]
fn differential_the_table_is_answered_alike() {
    let cases = table();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut names: Vec<_> = cases.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names are unique");
    let by_own = check_all(&cases);
    // Not vacuous: a good part of the table is read by the own exchange and so compared with hyper's reading.
    assert!(
        by_own >= 25,
        "only {by_own} cases were answered by the own exchange"
    );
}

#[test]
fn differential_plain_answers_are_the_own_exchanges() {
    for (answer, method) in [
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "GET"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "POST"),
        ("HTTP/1.1 204 No Content\r\n\r\n", "DELETE"),
        (
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n",
            "GET",
        ),
    ] {
        let (own, hyper) = run_both(answer.as_bytes(), method, b"", &[]).unwrap();
        assert!(own.by_own, "{answer:?} {method}");
        assert!(!hyper.by_own, "{answer:?} {method}");
        compare(&own, &hyper).unwrap();
    }
    for (answer, method) in [
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "HEAD"),
        ("HTTP/1.1 200 OK\r\n\r\nok", "GET"),
        ("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", "GET"),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET",
        ),
    ] {
        let (own, hyper) = run_both(answer.as_bytes(), method, b"", &[]).unwrap();
        assert!(!own.by_own, "{answer:?} {method}");
        compare(&own, &hyper).unwrap();
    }
}

#[test]
fn differential_answers_arriving_in_pieces_are_read_alike() {
    let body = "p".repeat(40 * 1024);
    let big = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let head_len = big.len() - body.len();
    let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let informational =
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    for (answer, pauses, own_expected) in [
        // The body after the head.
        (big.as_str(), vec![head_len], true),
        (
            big.as_str(),
            vec![head_len, head_len + 1000, head_len + 30_000],
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            vec![38],
            true,
        ),
        // The head in pieces, cut inside a field and inside the final empty line.
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            vec![10, 25, 37],
            true,
        ),
        (chunked, vec![20, 49], false),
        (informational, vec![10, 25], false),
        // Short body, then the end.
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello",
            vec![38],
            true,
        ),
    ] {
        for (method, request_body) in [("GET", &b""[..]), ("POST", POST_BODY)] {
            let (own, hyper) = run_both(answer.as_bytes(), method, request_body, &pauses).unwrap();
            assert_eq!(own.by_own, own_expected, "{}", show(answer.as_bytes()));
            if let Err(e) = compare(&own, &hyper) {
                panic!("{e}\n{method} {pauses:?} {}", show(answer.as_bytes()));
            }
        }
    }
}

/// A deterministic mutation of `base` at or after byte `from`: byte flips, insertions of framing bytes,
/// deletions, truncations, and duplicated lines (one to three of them, one most often).
fn mutate(base: &[u8], from: usize, rng: &mut fastrand::Rng) -> Vec<u8> {
    const FRAMING: &[u8] = b"\r\n :;,\t0123456789+-";
    let mut case = base.to_vec();
    let ops = [1, 1, 1, 2, 2, 3][rng.usize(0..6)];
    for _ in 0..ops {
        if case.len() <= from {
            break;
        }
        let at = rng.usize(from..case.len());
        match rng.u8(0..6) {
            0 => case[at] ^= 1 << rng.u8(0..8),
            1 => case.insert(at, FRAMING[rng.usize(0..FRAMING.len())]),
            2 => {
                case.remove(at);
            }
            3 => case.truncate(at),
            4 => {
                // A whole line (the one `at` is in) twice.
                let start = case[..at]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                let end = case[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(case.len(), |i| at + i + 1);
                let line = case[start..end].to_vec();
                case.splice(start..start, line);
            }
            _ => case[at] = FRAMING[rng.usize(0..FRAMING.len())],
        }
    }
    case
}

#[test]
fn differential_mutated_answers_are_answered_alike() {
    // The table's short answers (the 1 MiB head and the 100 KiB body would only slow this down).
    let bases: Vec<Case> = table()
        .into_iter()
        .filter(|c| c.answer.len() < 4096)
        .collect();
    // Every other mutation is of an answer the own exchange reads, so that many mutations stay near its edge.
    let plain: Vec<&Case> = bases
        .iter()
        .filter(|c| run_both(&c.answer, "GET", b"", &[]).is_ok_and(|(own, _)| own.by_own))
        .collect();
    assert!(plain.len() >= 25, "{} plain bases", plain.len());
    let methods = ["GET", "POST", "HEAD", "DELETE"];
    let mut rng = fastrand::Rng::with_seed(0x7570_7374_7265_616d);
    let mut failures = Vec::new();
    let mut by_own = 0;
    let mutations = 1_600;
    for i in 0..mutations {
        let base = if i % 2 == 0 {
            plain[(i / 2) % plain.len()]
        } else {
            &bases[(i / 2) % bases.len()]
        };
        // Mutations of the answers the own exchange reads leave their status line alone half of the time.
        let from = match base.answer.iter().position(|&b| b == b'\n') {
            Some(end) if i % 4 == 0 => end + 1,
            _ => 0,
        };
        let answer = mutate(&base.answer, from, &mut rng);
        let method = methods[rng.usize(0..methods.len())];
        let body = if method == "POST" { POST_BODY } else { b"" };
        match run_both(&answer, method, body, &[]) {
            Ok((own, hyper)) => {
                by_own += usize::from(own.by_own);
                if let Err(e) = compare(&own, &hyper) {
                    failures.push(format!(
                        "mutation {i} of {} ({method}): {e}\nanswer: {}",
                        base.name,
                        show(&answer)
                    ));
                }
            }
            Err(e) => failures.push(format!("mutation {i} of {} ({method}): {e}", base.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} disagreement(s) in {mutations} mutations:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(
        by_own >= 150,
        "only {by_own} mutated answers were read by the own exchange"
    );
}

fn answered(status: u16, headers: &[(&'static str, &'static str)], body: &'static str) -> Outcome {
    Outcome::Answered(Answered {
        status: StatusCode::from_u16(status).unwrap(),
        version: Version::HTTP_11,
        headers: headers
            .iter()
            .map(|&(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
            .collect(),
        body: Bytes::from_static(body.as_bytes()),
        trailers: None,
        error: None,
    })
}

fn run_of(outcome: Outcome) -> Run {
    Run {
        outcome,
        received: Received {
            request: b"GET /score?x=1 HTTP/1.1\r\nhost: a\r\n\r\n".to_vec(),
            after: Vec::new(),
        },
        by_own: false,
    }
}

#[test]
fn differential_a_disagreement_is_reported() {
    let base = run_of(answered(200, &[("content-length", "2")], "ok"));
    compare(&base, &base.clone()).unwrap();
    let mut others = vec![
        run_of(answered(201, &[("content-length", "2")], "ok")),
        run_of(answered(
            200,
            &[("content-length", "2"), ("x-a", "1")],
            "ok",
        )),
        run_of(answered(200, &[("content-length", "3")], "ok")),
        run_of(answered(200, &[("content-length", "2")], "no")),
        run_of(Outcome::Failed("connection closed".into())),
    ];
    let mut version = base.clone();
    if let Outcome::Answered(a) = &mut version.outcome {
        a.version = Version::HTTP_10;
    }
    others.push(version);
    let mut trailers = base.clone();
    if let Outcome::Answered(a) = &mut trailers.outcome {
        a.trailers = Some(vec![(
            HeaderName::from_static("x-t"),
            HeaderValue::from_static("1"),
        )]);
    }
    others.push(trailers);
    let mut cut = base.clone();
    if let Outcome::Answered(a) = &mut cut.outcome {
        a.error = Some("end of file before message length reached".into());
    }
    others.push(cut.clone());
    let mut request = base.clone();
    request.received.request.insert(4, b'/');
    others.push(request);
    let mut after = base.clone();
    after.received.after = b"st: a\r\n\r\n".to_vec();
    others.push(after);
    for other in &others {
        assert!(compare(&base, other).is_err(), "{other:?}");
        assert!(compare(other, &base).is_err(), "{other:?}");
    }
    // Two failures agree whatever their texts; so do two bodies that both fail part-way.
    let failed = run_of(Outcome::Failed("a".into()));
    compare(&failed, &run_of(Outcome::Failed("b".into()))).unwrap();
    let mut cut_elsewhere = cut.clone();
    if let Outcome::Answered(a) = &mut cut_elsewhere.outcome {
        a.error = Some("connection reset".into());
    }
    compare(&cut, &cut_elsewhere).unwrap();
    // Real runs on different answers disagree.
    let (a, _) = run_both(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "GET",
        b"",
        &[],
    )
    .unwrap();
    let (_, b) = run_both(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno",
        "GET",
        b"",
        &[],
    )
    .unwrap();
    assert!(compare(&a, &b).is_err());
    // The description stays short, whatever the answer.
    let long = format!(
        "HTTP/1.1 200 OK\r\nX-Long: {}\r\nContent-Length: 0\r\n\r\n",
        "v".repeat(10_000)
    );
    let (a, _) = run_both(long.as_bytes(), "GET", b"", &[]).unwrap();
    let (_, b) = run_both(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        "GET",
        b"",
        &[],
    )
    .unwrap();
    let e = compare(&a, &b).unwrap_err();
    assert!(e.len() < 2_000, "{} chars", e.len());
}

//! The pre-scan against deep documents, tricks that could hide depth, real configurations, and the parser itself.

use serde_yaml::Value;

use super::*;

fn flow(text: &str) -> usize {
    flow_nesting(text, usize::MAX).depth
}

fn block(text: &str) -> usize {
    block_nesting(text, usize::MAX).depth
}

#[test]
fn deep_flow_and_block_nesting_is_refused_at_once_naming_the_line() {
    let n = 100_000;
    let flow_seq = format!("routes: {}{}\n", "[".repeat(n), "]".repeat(n));
    let flow_map = format!("routes:\n  x: {}1{}\n", "{a: ".repeat(n), "}".repeat(n));
    let dash_chain = format!("routes:\n{}x\n", "- ".repeat(n));
    let question_chain = format!("routes:\n{}x\n", "? ".repeat(n));
    let staircase: String = (0..200)
        .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
        .collect();
    for (text, line, what) in [
        (&flow_seq, 1, "`[`/`{` collections"),
        (&flow_map, 2, "`[`/`{` collections"),
        (&dash_chain, 2, "indented collections"),
        (&question_chain, 2, "indented collections"),
        (&staircase, 65, "indented collections"),
    ] {
        let e = check(text).unwrap_err();
        assert!(e.starts_with(what), "{e}");
        assert!(
            e.contains(&format!("more than 64 levels deep at line {line};")),
            "{e}"
        );
    }
    // The scan stops at the first level past the limit.
    assert_eq!(flow_nesting(&flow_seq, 64), Deepest { depth: 65, line: 1 });
}

#[test]
fn quotes_comments_and_block_scalars_cannot_hide_flow_depth() {
    let deep = "[".repeat(100);
    let tricks = [
        // Closing brackets inside quoted scalars between the openings.
        format!("a: {}\n", "[[ \"]]]]\" ".repeat(50)),
        format!("a: {}\n", "{a: '}}}}', b: ".repeat(70)),
        // Escaped quotes that do not end the scalar.
        format!("a: {}\n", "[ \"\\\"]]\" , 'it''s ]]' , ".repeat(70)),
        // An unterminated quote in a block scalar, a comment and a plain scalar, then real brackets.
        format!("a: |\n  'unterminated\nb: {deep}\n"),
        format!("a: x # 'unterminated\nb: {deep}\n"),
        format!("a: don't\nb: {deep}\n"),
        format!("a: \"x #\" {deep}\n"),
        // Closing brackets in comments inside the collection.
        format!("a: {}\n", "[ # ]]]]\n".repeat(70)),
        // Tags and anchors that contain quote characters.
        format!("a: {}\n", "[ !t'ag &a1 ".repeat(70)),
        // Line breaks other than \n end comments too.
        format!("a: [ # x\u{2028}{deep}\n"),
    ];
    for text in &tricks {
        assert!(flow(text) > MAX_NESTING, "{} for {text:?}", flow(text));
        assert!(check(text).is_err(), "{text:?}");
    }
}

#[test]
fn brackets_in_text_do_not_add_up_in_real_configurations() {
    let text = format!(
        "# routes [optional] {{see README}}\nkey: \"${{A}}\"\nother: ${{B:-x}}\n{}",
        "- { name: \"a[b\", methods: [GET, POST], note: 'x{y' }\n".repeat(200)
    );
    assert!(flow(&text) <= 4, "{}", flow(&text));
    assert!(check(&text).is_ok());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for folder in ["config", "deploy", "examples"] {
        let mut stack = vec![dir.join(folder)];
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(flow(&text) <= 6, "{}: flow {}", path.display(), flow(&text));
                assert!(
                    block(&text) <= 12,
                    "{}: block {}",
                    path.display(),
                    block(&text)
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 9, "only {checked} YAML files found");
}

/// How many flow levels the parser must have opened to build `value` (keys included): a one-entry mapping
/// directly in a sequence may be an implicit one (`[a: b]`), which opens no level, so it is not counted.
fn flow_levels(value: &Value, in_sequence: bool) -> usize {
    match value {
        Value::Sequence(items) => {
            1 + items
                .iter()
                .map(|v| flow_levels(v, true))
                .max()
                .unwrap_or(0)
        }
        Value::Mapping(map) => {
            let inner = map
                .iter()
                .map(|(k, v)| flow_levels(k, false).max(flow_levels(v, false)))
                .max()
                .unwrap_or(0);
            inner + usize::from(!(in_sequence && map.len() == 1))
        }
        Value::Tagged(tagged) => flow_levels(&tagged.value, in_sequence),
        _ => 0,
    }
}

/// Pieces that trip readers up: brackets, quotes, escapes, comment signs and line breaks.
const NOISE: &[&str] = &[
    "[", "]", "{", "}", ",", ": ", ":", "'", "''", "\"", "\\", "\\\"", "#", " #", " ", "\n", "\t",
    "a", "-", "- ", "?", "!", "&", "*", "|", ">", "%", "\u{2028}", "\r\n", "x y",
];

/// A random flow node `levels` deep at most: plain, quoted (with noise inside), sequence or mapping, with
/// comments, line breaks, anchors and tags between tokens.
fn node(rng: &mut fastrand::Rng, levels: usize, out: &mut String) {
    let gap = |rng: &mut fastrand::Rng, out: &mut String| match rng.u8(..10) {
        0 => out.push_str(" # c ] } ' \"\n"),
        1 => out.push('\n'),
        2 => out.push('\u{2028}'),
        3 => out.push('\t'),
        _ => out.push(' '),
    };
    gap(rng, out);
    match rng.u8(..8) {
        0 => out.push_str("&a "),
        1 => out.push_str("!t "),
        2 => out.push_str("!<tag:x> "),
        _ => {}
    }
    let noise = |rng: &mut fastrand::Rng| NOISE[rng.usize(..NOISE.len())];
    match if levels == 0 {
        rng.u8(..3)
    } else {
        rng.u8(..6)
    } {
        0 => {
            out.push('w');
            for _ in 0..rng.usize(..3) {
                out.push_str(["x", "-y", "'q", "\"q", "a#b", "c:d", " e"][rng.usize(..7)]);
            }
        }
        1 => {
            out.push('\'');
            for _ in 0..rng.usize(..4) {
                let piece = noise(rng);
                out.push_str(if piece.contains('\'') { "''" } else { piece });
            }
            out.push('\'');
        }
        2 => {
            out.push('"');
            for _ in 0..rng.usize(..4) {
                let piece = noise(rng);
                out.push_str(match piece {
                    "\"" | "\\\"" => "\\\"",
                    "\\" => "\\\\",
                    other => other,
                });
            }
            out.push('"');
        }
        kind => {
            let (open, close) = if kind == 3 { ('{', '}') } else { ('[', ']') };
            out.push(open);
            for i in 0..rng.usize(..4) {
                if i > 0 {
                    out.push(',');
                }
                node(rng, levels - 1, out);
                if open == '{' || rng.u8(..4) == 0 {
                    out.push_str(": ");
                    node(rng, levels - 1, out);
                }
                gap(rng, out);
            }
            out.push(close);
        }
    }
}

/// Random flow documents: whenever the real parser accepts one, the pre-scan's bounds add up to at least the depth
/// it built. Half are mutated by one random piece, to reach what a generator of valid documents would not. A
/// fixed seed, so a failure reproduces.
#[test]
fn the_flow_bound_is_never_below_what_the_parser_builds() {
    let mut rng = fastrand::Rng::with_seed(0x5eed_f10e);
    let mut accepted = 0;
    for _ in 0..20_000 {
        let mut text = String::from(if rng.bool() { "" } else { "k: " });
        let levels = rng.usize(1..7);
        node(&mut rng, levels, &mut text);
        if rng.bool() {
            let mut at = rng.usize(..=text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text.insert_str(at, NOISE[rng.usize(..NOISE.len())]);
        }
        let Ok(value) = serde_yaml::from_str::<Value>(&text) else {
            continue;
        };
        accepted += 1;
        // A flow collection may also be the key of a block mapping (`[a]: b`), hence the block levels.
        assert!(
            flow(&text) + block(&text) >= flow_levels(&value, false),
            "{text:?}: bound {} + {} < parsed {}",
            flow(&text),
            block(&text),
            flow_levels(&value, false)
        );
    }
    assert!(accepted > 5_000, "only {accepted} documents parsed");
}

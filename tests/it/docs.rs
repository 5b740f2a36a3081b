//! The documentation holds together: every relative link in the Markdown files points at a file that exists, and
//! every `#anchor` at a heading of its target; every example configuration is named in the configuration
//! reference; the README names the test command CI runs; and the manual pages committed in `docs/man/` are the
//! ones the binary generates, so they cannot go stale.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::support::process::BIN;
use crate::support::proxy::TempDir;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Directories never searched for Markdown: build output, VCS data, fuzzing corpora and installed packages.
const SKIPPED_DIRS: &[&str] = &["target", ".git", "node_modules", "corpus", "artifacts"];

fn read(relative: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(relative))
        .unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// Every `*.md` file of the repository, relative to its root.
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, root: &Path, found: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !SKIPPED_DIRS.contains(&name.as_str()) {
                    walk(&path, root, found);
                }
            } else if name.ends_with(".md") {
                found.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let root = Path::new(ROOT);
    let mut found = Vec::new();
    walk(root, root, &mut found);
    found
}

/// The lines of a Markdown file with fenced code blocks and HTML comments blanked (line numbers stay right).
fn outside_code_blocks(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut fence: Option<String> = None;
    let mut in_comment = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(open) = &fence {
            if trimmed.starts_with(open.as_str()) {
                fence = None;
            }
            lines.push(String::new());
            continue;
        }
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            let first = trimmed.chars().next().unwrap_or('`');
            fence = Some(trimmed.chars().take_while(|&c| c == first).collect());
            lines.push(String::new());
            continue;
        }
        let mut kept = String::new();
        let mut rest = line;
        loop {
            if in_comment {
                match rest.find("-->") {
                    Some(end) => {
                        rest = &rest[end + 3..];
                        in_comment = false;
                    }
                    None => break,
                }
            } else {
                match rest.find("<!--") {
                    Some(start) => {
                        kept.push_str(&rest[..start]);
                        rest = &rest[start + 4..];
                        in_comment = true;
                    }
                    None => {
                        kept.push_str(rest);
                        break;
                    }
                }
            }
        }
        lines.push(kept);
    }
    lines
}

/// The text of a Markdown file that can hold links: outside code blocks and comments, with each inline code span
/// replaced by `x`.
fn prose(text: &str) -> Vec<String> {
    outside_code_blocks(text)
        .iter()
        .map(|line| without_code_spans(line))
        .collect()
}

/// Replaces each inline code span (a run of backticks up to the next run of the same length) with `x`.
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let after = &rest[start + ticks..];
        let closing = "`".repeat(ticks);
        match after.find(&closing) {
            Some(end) => {
                out.push('x');
                rest = &after[end + ticks..];
            }
            None => {
                // An unmatched backtick run is literal text.
                out.push_str(&rest[start..start + ticks]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The destinations of the inline links (`[text](destination)` and images) on a line of prose.
fn link_destinations(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let end = after
            .find(|c: char| c == ')' || c.is_whitespace())
            .unwrap_or(after.len());
        let destination = after[..end].trim_start_matches('<').trim_end_matches('>');
        found.push(destination.to_owned());
        rest = &after[end..];
    }
    found
}

/// GitHub's anchor for a heading: lower case; everything but letters, digits, `_`, `-` and spaces removed;
/// spaces become `-`. Link syntax keeps only its text.
fn slug(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    // `[text](url)` → `text`.
    while let Some(open) = rest.find('[') {
        match rest[open..].find("](").map(|i| open + i) {
            Some(mid) => {
                let close = rest[mid..].find(')').map_or(rest.len(), |i| mid + i + 1);
                text.push_str(&rest[..open]);
                text.push_str(&rest[open + 1..mid]);
                rest = &rest[close..];
            }
            None => break,
        }
    }
    text.push_str(rest);
    text.to_lowercase()
        .chars()
        .filter(|&c| c.is_alphanumeric() || c == '_' || c == '-' || c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings, with GitHub's `-1`, `-2`… for repeated ones.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = BTreeSet::new();
    for line in outside_code_blocks(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(line[hashes..].trim());
        let count = seen.entry(base.clone()).or_insert(0);
        let anchor = if *count == 0 {
            base.clone()
        } else {
            format!("{base}-{count}")
        };
        *count += 1;
        anchors.insert(anchor);
    }
    anchors
}

/// Resolves `target` (relative to the file `from`, both relative to the root) to a path relative to the root, or
/// `None` when it climbs out of the repository.
fn resolve(from: &Path, target: &str) -> Option<PathBuf> {
    let mut path = from.parent().unwrap_or(Path::new("")).to_path_buf();
    for component in Path::new(target).components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::ParentDir => {
                if !path.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(path)
}

#[test]
fn every_relative_link_in_the_markdown_files_points_at_an_existing_file_and_anchor() {
    let root = Path::new(ROOT);
    let files = markdown_files();
    for expected in ["README.md", "SECURITY.md", "docs/configuration.md"] {
        assert!(
            files.iter().any(|f| f == Path::new(expected)),
            "{expected} not found among {files:?}"
        );
    }
    let mut anchor_cache: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    let mut anchors_of = |file: &Path| -> BTreeSet<String> {
        anchor_cache
            .entry(file.to_path_buf())
            .or_insert_with(|| anchors(&read(&file.to_string_lossy())))
            .clone()
    };
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = read(&file.to_string_lossy());
        for (number, line) in prose(&text).iter().enumerate() {
            for destination in link_destinations(line) {
                if destination.contains("://") || destination.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (path, fragment) = match destination.split_once('#') {
                    Some((path, fragment)) => (path, Some(fragment)),
                    None => (destination.as_str(), None),
                };
                let target = if path.is_empty() {
                    Some(file.clone())
                } else {
                    resolve(file, path)
                };
                let place = format!("{}:{}: ({destination})", file.display(), number + 1);
                let Some(target) = target else {
                    broken.push(format!("{place} leaves the repository"));
                    continue;
                };
                if !root.join(&target).exists() {
                    broken.push(format!("{place}: {} does not exist", target.display()));
                    continue;
                }
                if let Some(fragment) = fragment {
                    if target.extension().is_none_or(|e| e != "md") {
                        broken.push(format!(
                            "{place}: an anchor into a file that is not Markdown"
                        ));
                    } else if !anchors_of(&target).contains(fragment) {
                        broken.push(format!(
                            "{place}: no heading with anchor #{fragment} in {}",
                            target.display()
                        ));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked > 100, "only {checked} relative links found");
}

#[test]
fn heading_anchors_follow_github() {
    assert_eq!(slug("Who can use the proxy"), "who-can-use-the-proxy");
    assert_eq!(
        slug("Service principal with a client secret — CI jobs, servers"),
        "service-principal-with-a-client-secret--ci-jobs-servers"
    );
    assert_eq!(slug("`run`"), "run");
    assert_eq!(slug("`cae: false`"), "cae-false");
    assert_eq!(
        slug("1. Entra ID refuses the proxy a token"),
        "1-entra-id-refuses-the-proxy-a-token"
    );
    assert_eq!(slug("See [the list](other.md#x) here"), "see-the-list-here");
    let repeated = anchors("# A\n## Notes\n```\n# not a heading\n```\n## Notes\n");
    assert_eq!(
        repeated,
        BTreeSet::from(["a".to_owned(), "notes".to_owned(), "notes-1".to_owned()])
    );
}

#[test]
fn link_extraction_skips_code() {
    let lines = prose(
        "see [a](a.md) and `[b](b.md)`\n```\n[c](c.md)\n```\n<!-- [d](d.md) -->\n[e](e.md#x)",
    );
    let found: Vec<String> = lines.iter().flat_map(|l| link_destinations(l)).collect();
    assert_eq!(found, ["a.md", "e.md#x"]);
}

#[test]
fn every_example_configuration_is_named_in_the_configuration_reference() {
    let reference = read("docs/configuration.md");
    let mut examples = Vec::new();
    for entry in std::fs::read_dir(Path::new(ROOT).join("config")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") {
            examples.push(name);
        }
    }
    assert!(examples.len() >= 7, "{examples:?}");
    let missing: Vec<&String> = examples
        .iter()
        .filter(|name| !reference.contains(&format!("](../config/{name})")))
        .collect();
    assert!(
        missing.is_empty(),
        "config/ examples not linked from docs/configuration.md: {missing:?}"
    );
}

#[test]
fn the_readme_names_the_test_command_ci_runs() {
    const COMMAND: &str = "cargo nextest run --locked";
    assert!(read("README.md").contains(COMMAND), "README.md: {COMMAND}");
    assert!(
        read(".ci/run").lines().any(|l| l.trim() == COMMAND),
        ".ci/run: {COMMAND}"
    );
}

/// A manual page without the build lines of its VERSION section (`commit:`, `target:`, `profile:`, `rustc:`):
/// they describe the binary that wrote the page, not the page.
fn without_build_lines(page: &str) -> String {
    const BUILD: [&str; 4] = ["commit: ", "target: ", "profile: ", "rustc: "];
    const SECTION: &str = ".SH VERSION\n";
    let body_start = if page.starts_with(SECTION) {
        SECTION.len()
    } else {
        match page.find(&format!("\n{SECTION}")) {
            Some(at) => at + 1 + SECTION.len(),
            None => return page.to_owned(),
        }
    };
    let version_end = page[body_start..]
        .find('\n')
        .map_or(page.len(), |i| body_start + i + 1);
    let mut out = page[..version_end].to_owned();
    let mut lines = page[version_end..].lines().peekable();
    while let Some(line) = lines.peek() {
        let is_build = *line == ".br" || BUILD.iter().any(|prefix| line.starts_with(prefix));
        if !is_build {
            break;
        }
        lines.next();
    }
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The `*.1` files of a directory: name → content.
fn man_pages(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "1"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).unwrap();
            (name, without_build_lines(&text))
        })
        .collect()
}

#[test]
fn the_committed_man_pages_are_the_generated_ones() {
    let dir = TempDir::new();
    let out = Command::new(BIN)
        .args(["man", "--out-dir"])
        .arg(dir.path())
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "man --out-dir: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = man_pages(dir.path());
    let committed = man_pages(&Path::new(ROOT).join("docs/man"));
    assert!(generated.contains_key("aml-auth-proxy.1"), "{generated:?}");
    assert_eq!(
        committed.keys().collect::<Vec<_>>(),
        generated.keys().collect::<Vec<_>>(),
        "docs/man/ holds other pages than `aml-auth-proxy man --out-dir` writes; regenerate with \
         `cargo run --quiet -- man --out-dir docs/man` (and remove stale pages)"
    );
    for (name, text) in &generated {
        assert!(
            committed[name] == *text,
            "docs/man/{name} is stale; regenerate with `cargo run --quiet -- man --out-dir docs/man`"
        );
    }
}

#[test]
fn build_lines_are_the_only_part_of_a_man_page_ignored() {
    let page = ".TH x 1\n.SH VERSION\n0.1.0\n.br\ncommit: abc1234\n.br\ntarget: x86_64\n.br\nprofile: debug\n.br\nrustc: rustc 1.95.0\n";
    assert_eq!(without_build_lines(page), ".TH x 1\n.SH VERSION\n0.1.0\n");
    let other = ".SH VERSION\n0.1.0\n.br\ncommit: abc\n.SH EXTRA\ntext\n";
    assert_eq!(
        without_build_lines(other),
        ".SH VERSION\n0.1.0\n.SH EXTRA\ntext\n"
    );
    assert_ne!(
        without_build_lines(".SH VERSION\n0.1.0\n"),
        without_build_lines(".SH VERSION\n0.2.0\n")
    );
}

use super::*;
use crate::proxy::admission::check_path;
use http::Method;

fn refused(path: &str) -> bool {
    check_path(&Method::GET, path).is_err()
}

#[test]
fn red_team_spellings_are_refused() {
    for path in [
        // Matrix parameters.
        "/restricted/public/..;/secret",
        "/restricted/public/..;jsessionid=x/secret",
        "/a/.;x/b",
        "/a/..;",
        "/a/.;",
        // Repeated percent-decoding, mixed case.
        "/a/%252e%252e/b",
        "/a/%252E%252e/b",
        "/a/%25252e%25252e/b",
        "/a/.%252e/b",
        "/a/%25%32%65%25%32%65/b",
        "/a/%252f",
        "/a/b%252fc",
        "/a/b%255cc",
        "/a/%2500",
        // IIS %u escapes, either case, at any depth.
        "/a/%u002e%u002e/b",
        "/a/%U002E%U002E/b",
        "/a/b%u002fc",
        "/a/b%u005cc",
        "/a/%25u002e/b",
        "/a/%u0041",
        // Overlong UTF-8 (and any other invalid UTF-8 once decoded).
        "/a/%c0%ae%c0%ae/b",
        "/a/%C0%AE./b",
        "/a/%e0%80%ae%e0%80%ae/b",
        "/a/%f0%80%80%ae%f0%80%80%ae/b",
        "/a/b%c0%afc",
        "/a/b%c1%9cc",
        "/a/%c0%2e",
        "/a/%25c0%25ae",
        "/a/%ff",
        // Unicode compatibility forms, raw and encoded.
        "/a/\u{ff0e}\u{ff0e}/b",
        "/a/%ef%bc%8e%ef%bc%8e/b",
        "/a/%EF%BC%8E./b",
        "/a/\u{2025}/b",
        "/a/\u{2024}\u{2024}/b",
        "/a/\u{fe52}/b",
        "/a/\u{2026}/b",
        "/a/\u{fe30}/b",
        "/a/\u{3002}\u{3002}/b",
        "/a/b\u{ff0f}c",
        "/a/b%ef%bc%8fc",
        "/a/b\u{ff3c}c",
        "/a/b\u{fe68}c",
        "/a/b\u{2215}c",
        "/a/b\u{2044}c",
        "/a/b\u{2216}c",
        "/a/b\u{a5}c",
        "/a/b\u{2100}",
        "/a/..\u{ff1b}x/b",
        "/a/..\u{37e}x/b",
        "/a/..\u{ff1f}",
        "/a/..\u{bf}",
        "/a/\u{ff05}2e\u{ff05}2e/b",
        "/a/%\u{ff12}\u{ff45}%\u{ff12}\u{ff45}/b",
        "/a/\u{fe6a}2e./b",
        // Dots with what trimming drops, and decoded cut characters.
        "/a/..%20/b",
        "/a/%20..%20/b",
        "/a/..%09/b",
        "/a/.%0a",
        "/a/..%c2%a0/b",
        "/a/..%e2%80%8b/b",
        "/a/.%cc%81/b",
        "/a/.../b",
        "/a/..../b",
        "/a/..%3f/b",
        "/a/..%3Bx/b",
        "/a/..%23/b",
        "/a/..%253b/b",
        // Encoded too many times to be a real client.
        "/a/%2525252541",
    ] {
        assert!(refused(path), "{path} was accepted");
        let e = check_path(&Method::GET, path).unwrap_err();
        assert_eq!(e.code(), "BadRequest", "{path}");
        assert!(e.to_string().contains("path"), "{path}: {e}");
    }
}

#[test]
fn names_that_only_look_alike_are_accepted() {
    for path in [
        "/a..b/c.d",
        "/v1.0/x",
        "/mlflow/v2.0/api/2.0/mlflow/runs/get",
        "/a/...x/x.../.x/x.",
        "/a/;/b",
        "/a/b;c=d/e",
        "/a/;../b",
        "/a/x;..",
        "/a/%20/b",
        "/a/%2520b",
        "/a/%25",
        "/a/%zz",
        "/a/%",
        "/a/100%25",
        "/a/caf%C3%A9",
        "/a/caf\u{e9}",
        "/a/\u{65e5}\u{672c}\u{8a9e}",
        "/a/\u{ff21}\u{ff22}",
        "/a/x\u{2024}y",
        "/a/oeidp:23329d4e-9b5f-403d-a218-c4e4f8323f5a:aed27aba-8ccf-4ff7-b49c-ed5627669f2e",
        "/a/x:batch",
        "/a/x@y/(z)/'q'/$batch/~u/!b/*/+",
        "/a/%252541",
    ] {
        assert!(
            !refused(path),
            "{path} was refused: {:?}",
            check_path(&Method::GET, path)
        );
    }
}

#[test]
fn decoding_and_mapping_reach_a_fixed_point() {
    assert_eq!(lenient_view("%252e%252e").unwrap(), "..");
    assert_eq!(lenient_view("%ef%bc%8e").unwrap(), ".");
    assert_eq!(lenient_view("\u{ff05}\u{ff12}\u{ff45}").unwrap(), ".");
    assert_eq!(lenient_view("a%2520b").unwrap(), "a b");
    assert_eq!(lenient_view("%zz%").unwrap(), "%zz%");
    assert!(lenient_view("%2525252541").is_err());
    assert_eq!(percent_decode("plain"), None);
    assert_eq!(percent_decode("%41%4a%4A%g1").unwrap(), b"AJJ%g1");
    assert!(has_iis_escape("x%U00aE") && !has_iis_escape("%u00a") && !has_iis_escape("%u00ag"));
}

#[test]
fn the_table_maps_only_to_path_characters() {
    // Every entry maps to text made of `.`, `/`, `\`, `;`, `?`, `#`, `%` and letters around a `/`.
    for cp in 0x80..=0x10FFFF {
        let Some(c) = char::from_u32(cp) else {
            continue;
        };
        if let Some(ascii) = compat(c) {
            assert!(ascii.is_ascii() && !ascii.is_empty(), "{c:?}");
            assert!(
                ascii.contains(['.', '/', '\\', ';', '?', '#', '%']),
                "U+{cp:04X} maps to {ascii:?}"
            );
        }
    }
    assert_eq!(
        map_compat("a\u{ff0e}\u{ff0f}\u{ff3c}\u{ff5e}\u{ff01}"),
        "a./\\~!"
    );
    assert_eq!(map_compat("\u{2025}\u{2026}"), ".....");
    assert!(matches!(map_compat("ascii"), Cow::Borrowed("ascii")));
}

/// Request paths recorded from ARM and Azure ML (online endpoints, listKeys, workspaces, MLflow tracking URIs,
/// long-running operations), with their queries cut off.
#[test]
fn recorded_arm_and_azure_ml_paths_are_accepted() {
    let mut seen = 0;
    for text in [
        include_str!("../../../../tests/fixtures/aml_online_endpoint_get_and_token_recorded.json"),
        include_str!(
            "../../../../tests/fixtures/aml_online_endpoint_list_keys_regenerate_documented.txt"
        ),
        include_str!("../../../../tests/fixtures/aml_workspace_get_discovery_and_config_json.txt"),
    ] {
        let ends = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ')' | '?');
        let token = |rest: &str| rest[..rest.find(ends).unwrap_or(rest.len())].to_owned();
        let urls = text.match_indices("://").filter_map(|(i, _)| {
            let url = token(&text[i + 3..]);
            url.find('/').map(|slash| url[slash..].to_owned())
        });
        let ids = text
            .match_indices("\"/subscriptions/")
            .map(|(i, _)| token(&text[i + 1..]));
        for path in urls.chain(ids) {
            // Placeholders and elisions of the documentation (`<sub>`, `{name}`, a `...` segment).
            if path.contains(['<', '>', '{', '}']) || path.split('/').any(|s| s == "...") {
                continue;
            }
            assert!(
                !refused(&path),
                "{path}: {:?}",
                check_path(&Method::GET, &path)
            );
            seen += 1;
        }
    }
    assert!(seen >= 20, "only {seen} recorded paths");
}

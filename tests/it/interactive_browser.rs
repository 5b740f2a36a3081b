//! Browser sign-in (`interactive_browser`, `login --browser`) end to end: the real binary, the in-process
//! aml-azure-emulator as Entra ID (authorize with PKCE and loopback redirects, the token endpoint), and a browser.
//!
//! The browser is either real — headless Chromium, kept on loopback (a throwaway profile, no background
//! networking, every host but localhost/127.0.0.1 unresolvable, a proxy on a closed port) — or scripted: `$BROWSER`
//! is a script that writes the URL to a file and the test plays the browser's part over HTTP, which lets it forge
//! what a real browser would not (another `state`, a stray `/favicon.ico`). The Chromium test skips when Chromium
//! is not installed, unless `CI_REQUIRE_CHROMIUM=1` (set by `.ci/run`, which installs it) makes that a failure.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aml_auth_proxy::emulator::Emulator;
use http::{Method, StatusCode};
use serde_json::Value;

use crate::emulator::{fault, start};
use crate::support::process::{ChildProc, ClosedPort, EXIT_TIMEOUT, Output, RunningProxy, command};
use crate::support::proxy::TempDir;
use crate::support::{get, json_body, request, trace_init};

const ML: &str = "https://ml.azure.com/.default";

/// How long a browser (real or scripted) may take to show up; generous, it only bounds a hang.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// A test bed: the emulator, a directory, and a configuration with an `interactive_browser` credential `me`
/// (emulator authority, `login_hint`) whose route goes to the emulator's echoing upstream.
struct Bed {
    emulator: Emulator,
    dir: TempDir,
    config: PathBuf,
    imds: ClosedPort,
}

impl Bed {
    async fn new(extra: &str) -> Self {
        let emulator = start().await;
        let dir = TempDir::new();
        let yaml = format!(
            "authority_host: {authority}\ncredentials:\n  me:\n    interactive_browser: {{ cache_file: {cache}, login_hint: ada@contoso.example{extra} }}\nroutes:\n  - name: ml\n    path_prefix: /\n    upstream: {upstream}\n    scope: {ML}\n    credential: me\n",
            authority = emulator.urls().authority_host,
            upstream = emulator.urls().upstream,
            cache = dir.path().join("tokens.json").display(),
        );
        let config = dir.file("config.yaml", &yaml, 0o600);
        Self {
            emulator,
            dir,
            config,
            imds: ClosedPort::new(),
        }
    }

    fn cache_file(&self) -> PathBuf {
        self.dir.path().join("tokens.json")
    }

    /// `login --config <file> <args>` with `$BROWSER` set to `browser` (if any), started.
    fn login(&self, browser: Option<&Path>, args: &[&str]) -> ChildProc {
        let mut cmd = command(self.dir.path(), &self.imds);
        cmd.arg("login")
            .arg("--config")
            .arg(&self.config)
            .args(args);
        if let Some(browser) = browser {
            cmd.env("BROWSER", browser);
        }
        ChildProc::spawn(cmd)
    }

    /// A `$BROWSER` that only writes the URL it is given to `url` in the test directory.
    fn scripted_browser(&self) -> PathBuf {
        let url = self.dir.path().join("url");
        let script = format!("#!/bin/sh\nprintf '%s\\n' \"$1\" > '{}'\n", url.display());
        self.dir.file("browser.sh", &script, 0o700)
    }

    /// The URL the scripted browser was given.
    async fn opened_url(&self) -> String {
        let file = self.dir.path().join("url");
        let deadline = tokio::time::Instant::now() + BROWSER_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&file)
                && text.ends_with('\n')
            {
                return text.trim().to_owned();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the browser was never opened"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stats(&self) -> Value {
        self.emulator.stats()
    }
}

/// What Entra ID's authorize page sends the browser back with: the form's action and its hidden fields.
async fn authorize(url: &str) -> (String, Vec<(String, String)>) {
    let (status, _, body) = get(url).await;
    let page = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(status, StatusCode::OK, "{page}");
    let action = attribute(page.split("<form ").nth(1).unwrap(), "action");
    let fields = page
        .split("<input type=\"hidden\" ")
        .skip(1)
        .map(|input| (attribute(input, "name"), attribute(input, "value")))
        .collect();
    (action, fields)
}

fn attribute(tag: &str, name: &str) -> String {
    let start = tag.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
    tag[start..start + tag[start..].find('"').unwrap()].replace("&amp;", "&")
}

/// POSTs `fields` to the loopback listener as the auto-posting form would.
async fn form_post(action: &str, fields: &[(String, String)]) -> (StatusCode, String) {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let (status, _, page) = request(
        Method::POST,
        action,
        &[("content-type", "application/x-www-form-urlencoded")],
        body,
    )
    .await;
    (status, String::from_utf8(page.to_vec()).unwrap())
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn assert_private_cache(file: &Path) -> Value {
    let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", file.display());
    let cache: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert_eq!(cache["version"], 1);
    assert_eq!(cache["tenant"], "organizations");
    assert_eq!(cache["client_id"], "04b07795-8ddb-461a-bbee-02f9e1bf7b46");
    assert!(!cache["refresh_token"].as_str().unwrap().is_empty());
    cache
}

/// Chromium's absolute path, if it is installed; panics when it is required (`CI_REQUIRE_CHROMIUM=1`) but absent.
fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .flat_map(|d| [d.join("chromium"), d.join("chromium-browser")])
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert_ne!(
            std::env::var("CI_REQUIRE_CHROMIUM").as_deref(),
            Ok("1"),
            "CI_REQUIRE_CHROMIUM=1 but chromium is not on the PATH"
        );
        eprintln!("chromium is not installed: skipping the real-browser sign-in");
    }
    found
}

/// A `$BROWSER` that runs headless Chromium on the URL, kept on loopback, dumping the final page to `page.html`
/// and its exit status to `chromium.exit`.
fn chromium_browser(dir: &TempDir, chromium: &Path, closed: &ClosedPort) -> PathBuf {
    let d = dir.path().display();
    let sandbox = if rustix::process::geteuid().is_root() {
        "--no-sandbox "
    } else {
        ""
    };
    let script = format!(
        "#!/bin/sh\nPATH=/usr/local/bin:/usr/bin:/bin; export PATH\n\
         '{chromium}' --headless {sandbox}--disable-gpu --user-data-dir='{d}/chromium-profile' \
         --disable-background-networking --disable-component-update --disable-sync --no-first-run \
         --host-resolver-rules='MAP * ~NOTFOUND , EXCLUDE localhost, EXCLUDE 127.0.0.1' \
         --proxy-server='http://{proxy}' --dump-dom \"$1\" > '{d}/page.html' 2> '{d}/chromium.log'\n\
         echo $? > '{d}/chromium.exit'\n",
        chromium = chromium.display(),
        proxy = closed.addr(),
    );
    dir.file("chromium.sh", &script, 0o700)
}

/// Waits for the Chromium script to finish (so no browser outlives the test) and returns the page it showed.
async fn chromium_page(dir: &TempDir) -> String {
    let exit = dir.path().join("chromium.exit");
    let deadline = tokio::time::Instant::now() + BROWSER_TIMEOUT;
    while !exit.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromium did not finish; its log:\n{}",
            std::fs::read_to_string(dir.path().join("chromium.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::read_to_string(dir.path().join("page.html")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_signs_in_and_the_proxy_then_serves_that_users_token() {
    let _trace = trace_init();
    let Some(chromium) = chromium() else {
        return;
    };
    let bed = Bed::new("").await;
    let closed = ClosedPort::new();
    let browser = chromium_browser(&bed.dir, &chromium, &closed);

    let out = bed.login(Some(&browser), &[]).finish(EXIT_TIMEOUT).await;
    let page = chromium_page(&bed.dir).await;
    assert_eq!(out.code(), Some(0), "{out:#?}\nchromium showed:\n{page}");
    assert!(out.stdout.is_empty(), "{out:#?}");
    // The URL is printed whether or not a browser opens; the result is one line.
    let url = out
        .stderr
        .lines()
        .find(|l| l.contains("/oauth2/v2.0/authorize?"))
        .unwrap_or_else(|| panic!("no authorize URL on stderr: {out:#?}"));
    assert_eq!(
        query_param(url, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(
        query_param(url, "response_mode").as_deref(),
        Some("form_post")
    );
    let redirect = query_param(url, "redirect_uri").unwrap();
    assert!(
        redirect.starts_with("http://localhost:") && redirect.ends_with('/'),
        "{redirect}"
    );
    assert!(
        out.stderr
            .contains("signed in (credential me, tenant organizations)"),
        "{out:#?}"
    );
    // Chromium followed the authorize page's form_post to the proxy's listener and shows its answer.
    assert!(
        page.contains("return to the terminal"),
        "chromium showed:\n{page}"
    );
    assert_private_cache(&bed.cache_file());

    // The stand-in saw S256 and a verifier that matched it (it refuses a mismatch with AADSTS501481).
    let stats = bed.stats();
    assert_eq!(stats["authorize_requests"]["total"], 1, "{stats:#}");
    assert_eq!(stats["authorize_requests"]["by_pkce"]["s256"], 1);
    assert_eq!(
        stats["authorize_requests"]["by_response_mode"]["form_post"],
        1
    );
    assert_eq!(
        stats["token_requests"]["by_grant"]["authorization_code"], 1,
        "{stats:#}"
    );
    assert!(
        stats["token_requests"]["by_outcome"]
            .get("pkce_mismatch")
            .is_none(),
        "{stats:#}"
    );

    // `run` serves requests with that user's token from the saved refresh token, without another sign-in.
    let yaml = std::fs::read_to_string(&bed.config).unwrap();
    let proxy = RunningProxy::start(&bed.dir, &bed.imds, &yaml, &[], &[]).await;
    let (status, _, body) = get(&proxy.url("/through/the/proxy")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let echo = json_body(&body);
    let claims = &echo["authorization"]["claims"];
    assert_eq!(claims["preferred_username"], "ada@contoso.example");
    assert_eq!(claims["aud"], "https://ml.azure.com");
    assert_eq!(claims["idtyp"], "user");
    let stats = bed.stats();
    assert_eq!(stats["authorize_requests"]["total"], 1, "no second sign-in");
    assert!(
        stats["token_requests"]["by_grant"]["refresh_token"]
            .as_u64()
            .unwrap()
            >= 1,
        "{stats:#}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_follows_an_access_denied_redirect_and_login_exits_1_naming_it() {
    let _trace = trace_init();
    let Some(chromium) = chromium() else {
        return;
    };
    let bed = Bed::new("").await;
    bed.emulator
        .add_fault(fault("conditional-access,on=authorize"));
    let closed = ClosedPort::new();
    let browser = chromium_browser(&bed.dir, &chromium, &closed);
    let out = bed.login(Some(&browser), &[]).finish(EXIT_TIMEOUT).await;
    let page = chromium_page(&bed.dir).await;
    assert_eq!(out.code(), Some(1), "{out:#?}\nchromium showed:\n{page}");
    assert!(
        out.stderr
            .contains("Entra ID refused the sign-in: access_denied: AADSTS53003"),
        "{out:#?}"
    );
    assert!(page.contains("Sign-in failed"), "chromium showed:\n{page}");
    assert!(!bed.cache_file().exists(), "nothing is saved");
    let stats = bed.stats();
    assert_eq!(
        stats["authorize_requests"]["by_outcome"]["conditional_access"], 1,
        "{stats:#}"
    );
    assert!(
        stats["token_requests"]["by_grant"]
            .get("authorization_code")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scripted_browser_signs_in_over_a_query_redirect_and_stray_requests_are_ignored() {
    let _trace = trace_init();
    let bed = Bed::new(", domain_hint: contoso.example").await;
    let browser = bed.scripted_browser();
    let child = bed.login(Some(&browser), &[]);
    let url = bed.opened_url().await;
    assert_eq!(
        query_param(&url, "login_hint").as_deref(),
        Some("ada@contoso.example")
    );
    assert_eq!(
        query_param(&url, "domain_hint").as_deref(),
        Some("contoso.example")
    );
    assert_eq!(
        query_param(&url, "scope").as_deref(),
        Some("https://ml.azure.com/.default openid profile offline_access")
    );
    // `cae` is on by default: the authorize request declares CP1.
    assert_eq!(
        query_param(&url, "claims").as_deref(),
        Some(r#"{"access_token":{"xms_cc":{"values":["CP1"]}}}"#)
    );
    let (action, fields) = authorize(&url).await;
    // A browser asking for its icon (no code, no error) gets a 404; the sign-in keeps waiting.
    let (status, _, _) = get(&format!("{action}favicon.ico")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = get(&action).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no code and no error");
    // The same response as a plain query-string redirect (response_mode=query) is accepted too.
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&fields)
        .finish();
    let (status, _, page) = get(&format!("{action}?{query}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&page).contains("return to the terminal"));
    let out = child.finish(EXIT_TIMEOUT).await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
    assert_private_cache(&bed.cache_file());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_access_denied_redirect_exits_1_naming_it() {
    let _trace = trace_init();
    let bed = Bed::new("").await;
    bed.emulator
        .add_fault(fault("conditional-access,on=authorize"));
    let browser = bed.scripted_browser();
    let child = bed.login(Some(&browser), &[]);
    let url = bed.opened_url().await;
    let (action, fields) = authorize(&url).await;
    assert!(
        fields
            .iter()
            .any(|(k, v)| k == "error" && v == "access_denied")
    );
    let (status, page) = form_post(&action, &fields).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("access_denied"), "{page}");
    let out: Output = child.finish(EXIT_TIMEOUT).await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(
        out.stderr
            .contains("Entra ID refused the sign-in: access_denied: AADSTS53003"),
        "{out:#?}"
    );
    assert!(!bed.cache_file().exists(), "nothing is saved");
    assert!(
        bed.stats()["token_requests"]["by_grant"]
            .get("authorization_code")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_with_another_state_is_refused_and_its_code_never_redeemed() {
    let _trace = trace_init();
    let bed = Bed::new("").await;
    let browser = bed.scripted_browser();
    let child = bed.login(Some(&browser), &[]);
    let url = bed.opened_url().await;
    let (action, mut fields) = authorize(&url).await;
    for (k, v) in &mut fields {
        if k == "state" {
            *v = "forged-state".to_owned();
        }
    }
    let (status, page) = form_post(&action, &fields).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("State mismatch"), "{page}");
    let out = child.finish(EXIT_TIMEOUT).await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(
        out.stderr
            .contains("carried a state that this sign-in did not send"),
        "{out:#?}"
    );
    assert!(!bed.cache_file().exists());
    assert!(
        bed.stats()["token_requests"]["by_grant"]
            .get("authorization_code")
            .is_none(),
        "the code was never redeemed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sign_in_not_completed_in_time_exits_1() {
    let _trace = trace_init();
    let bed = Bed::new(", timeout: 1s").await;
    let browser = bed.scripted_browser();
    let out = bed.login(Some(&browser), &[]).finish(EXIT_TIMEOUT).await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(
        out.stderr
            .contains("the browser sign-in was not completed within 1s"),
        "{out:#?}"
    );
    assert!(!bed.cache_file().exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_browser_the_sign_in_falls_back_to_a_device_code() {
    let _trace = trace_init();
    let bed = Bed::new("").await;
    // No BROWSER and no graphical session; then --device-code asks for it explicitly.
    for args in [&[][..], &["--device-code"][..]] {
        let _ = std::fs::remove_file(bed.cache_file());
        let out = bed.login(None, args).finish(EXIT_TIMEOUT).await;
        assert_eq!(out.code(), Some(0), "{args:?}: {out:#?}");
        if args.is_empty() {
            assert!(
                out.stderr
                    .contains("no browser can be opened (BROWSER is not set"),
                "{out:#?}"
            );
        }
        assert!(out.stderr.contains("enter the code"), "{out:#?}");
        assert_private_cache(&bed.cache_file());
    }
    let stats = bed.stats();
    assert!(stats["authorize_requests"]["total"].as_u64().unwrap_or(0) == 0);
    assert_eq!(stats["device_code_requests"]["total"], 2, "{stats:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn login_browser_signs_a_device_code_credential_in_with_a_browser() {
    let _trace = trace_init();
    let emulator = start().await;
    let dir = TempDir::new();
    let cache = dir.path().join("tokens.json");
    // The only route uses another credential: the first token is for Azure Resource Manager.
    let yaml = format!(
        "authority_host: {authority}\ncredentials:\n  me:\n    device_code: {{ cache_file: {cache} }}\n  mi:\n    managed_identity: {{}}\nroutes:\n  - name: up\n    path_prefix: /\n    upstream: {upstream}\n    scope: {ML}\n    credential: mi\n",
        authority = emulator.urls().authority_host,
        upstream = emulator.urls().upstream,
        cache = cache.display()
    );
    let config = dir.file("config.yaml", &yaml, 0o600);
    let url_file = dir.path().join("url");
    let browser = dir.file(
        "browser.sh",
        &format!(
            "#!/bin/sh\nprintf '%s\\n' \"$1\" > '{}'\n",
            url_file.display()
        ),
        0o700,
    );
    let imds = ClosedPort::new();
    let mut cmd = command(dir.path(), &imds);
    cmd.arg("login")
        .arg("--config")
        .arg(&config)
        .arg("--browser")
        .env("BROWSER", &browser);
    let mut child = ChildProc::spawn(cmd);
    let deadline = tokio::time::Instant::now() + BROWSER_TIMEOUT;
    let url = loop {
        if let Ok(text) = std::fs::read_to_string(&url_file)
            && text.ends_with('\n')
        {
            break text.trim().to_owned();
        }
        assert!(
            child.try_exit().is_none(),
            "login exited: {}",
            child.stderr_so_far()
        );
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        query_param(&url, "scope").as_deref(),
        Some("https://management.azure.com/.default openid profile offline_access")
    );
    let (action, fields) = authorize(&url).await;
    let (status, _) = form_post(&action, &fields).await;
    assert_eq!(status, StatusCode::OK);
    let out = child.finish(EXIT_TIMEOUT).await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
    assert_private_cache(&cache);
}

//! The federated token file of workload identity (F6): rotated (kubelet's atomic `..data` swap), missing,
//! unreadable, or refused by the token service as expired. A rotation is what the next exchange sends; an
//! "assertion expired" answer makes the credential re-read the file once, at once; while the file is missing or
//! unreadable, the cached token keeps serving.
//!
//! The fake Entra ID here accepts a client assertion only if it equals the *current* content of the tenant's
//! federated token file (anything else gets AADSTS700024, "assertion expired"); the file is laid out as the
//! kubelet does it (`token → ..data/token`, `..data → ..<timestamp>`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aml_auth_proxy::auth::{
    CredentialError, TokenCredential, TokenRequest, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};
use aml_auth_proxy::env::MapEnv;
use aml_auth_proxy::metrics::Metrics;
use aml_auth_proxy::token_cache::{CachePolicy, TokenCache, TokenSource};
use http::StatusCode;
use tokio::time::Instant;

use crate::support::metrics::{parse_scrape, sum_of};
use crate::support::proxy::TempDir;
use crate::support::scripted::{bearer, cache_key};
use crate::support::{
    ARM_SCOPE, ServeOptions, Server, ServerHandle, entra_client, json_response, read_body,
    trace_init,
};

const EXPIRED: &str = r#"{"error":"invalid_client","error_description":"AADSTS700024: Client assertion is not within its valid time range.\r\nTrace ID: t\r\nCorrelation ID: c","error_codes":[700024]}"#;

/// The fake token endpoint.
struct Sts {
    url: String,
    /// Every (tenant, client_assertion) received.
    seen: Arc<Mutex<Vec<(String, String)>>>,
    _server: ServerHandle,
}

impl Sts {
    /// Tokens live `ttl` seconds; `files` maps a tenant to its federated token file.
    async fn start(ttl: u64, files: HashMap<String, PathBuf>) -> Self {
        let server = Server::bind().await;
        let url = format!("http://{}", server.addr());
        let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let files = Arc::new(files);
        let record = seen.clone();
        let count = Arc::new(AtomicU64::new(0));
        let handle = server.spawn(ServeOptions::default(), move |req| {
            let (files, record, count) = (files.clone(), record.clone(), count.clone());
            async move {
                let tenant = req
                    .uri()
                    .path()
                    .trim_start_matches('/')
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let (body, _) = read_body(req.into_body()).await?;
                let assertion = form_urlencoded::parse(&body)
                    .find(|(k, _)| k == "client_assertion")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                record
                    .lock()
                    .unwrap()
                    .push((tenant.clone(), assertion.clone()));
                let current = files
                    .get(&tenant)
                    .and_then(|p| std::fs::read_to_string(p).ok())
                    .map(|t| t.trim().to_owned());
                if current.as_deref() != Some(assertion.as_str()) {
                    return Ok(json_response(
                        StatusCode::BAD_REQUEST,
                        &serde_json::from_str(EXPIRED).unwrap(),
                    ));
                }
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(json_response(
                    StatusCode::OK,
                    &serde_json::json!({"token_type": "Bearer", "expires_in": ttl,
                        "access_token": format!("wi.{tenant}.{n}")}),
                ))
            }
        });
        Self {
            url,
            seen,
            _server: handle,
        }
    }

    fn assertions(&self, tenant: &str) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t == tenant)
            .map(|(_, a)| a.clone())
            .collect()
    }
}

/// A credential for `tenant` reading `file`, exchanging at `sts`.
fn credential(sts: &Sts, tenant: &str, file: &Path) -> WorkloadIdentityCredential {
    let entra = entra_client(&sts.url);
    let options = WorkloadIdentityCredentialOptions {
        tenant_id: Some(tenant.into()),
        client_id: Some("22222222-0000-0000-0000-000000000002".into()),
        token_file: Some(file.to_path_buf()),
    };
    WorkloadIdentityCredential::new(options, &MapEnv::new(), entra)
}

/// A projected service-account token volume, kubelet style.
struct Projected {
    dir: PathBuf,
    generation: u32,
}

impl Projected {
    fn new(dir: &Path, content: &str) -> Self {
        let mut p = Self {
            dir: dir.to_path_buf(),
            generation: 0,
        };
        std::os::unix::fs::symlink("..data/token", dir.join("token")).unwrap();
        p.rotate(content);
        p
    }

    /// The path the credential is configured with.
    fn token(&self) -> PathBuf {
        self.dir.join("token")
    }

    /// Atomically swaps in a new generation holding `content` (`..data` is renamed over).
    fn rotate(&mut self, content: &str) {
        self.generation += 1;
        let name = format!(
            "..2026_01_01_00_00_{:02}.{}",
            self.generation, self.generation
        );
        let gen_dir = self.dir.join(&name);
        std::fs::create_dir(&gen_dir).unwrap();
        std::fs::write(gen_dir.join("token"), content).unwrap();
        self.point_at(&name);
    }

    /// `..data` points at a generation whose `token` is a directory: the file exists but cannot be read.
    fn make_unreadable(&mut self) {
        self.generation += 1;
        let name = format!("..broken.{}", self.generation);
        std::fs::create_dir_all(self.dir.join(&name).join("token")).unwrap();
        self.point_at(&name);
    }

    /// `..data` is gone: `token` dangles, as between two steps of a non-atomic update.
    fn remove(&self) {
        std::fs::remove_file(self.dir.join("..data")).unwrap();
    }

    fn point_at(&self, name: &str) {
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}

/// F6: a rotated file (kubelet's atomic `..data` swap) is what the next exchange sends, once the copy in memory is
/// due for a re-read (5 min in production, 200 ms here); the fake STS accepts only the current file's content.
#[tokio::test]
async fn f06_a_rotated_federated_token_is_used_by_the_next_exchange() {
    let _trace = trace_init();
    let dir = TempDir::new();
    let mut file = Projected::new(dir.path(), "assertion-1\n");
    let sts = Sts::start(
        3600,
        [("wi".to_owned(), file.token())].into_iter().collect(),
    )
    .await;
    let cred = credential(&sts, "wi", &file.token()).with_reread_after(Duration::from_millis(200));
    let request = TokenRequest::new(ARM_SCOPE);
    cred.get_token(&request).await.unwrap();
    for n in 2..=4 {
        file.rotate(&format!("assertion-{n}"));
        tokio::time::sleep(Duration::from_millis(250)).await;
        let token = cred.get_token(&request).await.unwrap();
        assert!(token.token.expose().starts_with("wi.wi."));
    }
    assert_eq!(
        sts.assertions("wi"),
        ["assertion-1", "assertion-2", "assertion-3", "assertion-4"],
        "one exchange per rotation, each with the current file"
    );
}

/// F6: with the production re-read interval, a rotation the credential has not noticed yet is caught by the STS
/// saying the assertion expired (AADSTS700024): the file is re-read once, at once, and the exchange retried —
/// exactly one extra STS call. If the re-read gives nothing new there is no loop: the error is returned.
#[tokio::test]
async fn f06_assertion_expired_700024_rereads_the_file_once_immediately() {
    let _trace = trace_init();
    let dir = TempDir::new();
    let mut file = Projected::new(dir.path(), "assertion-1");
    let sts = Sts::start(
        3600,
        [("wi".to_owned(), file.token())].into_iter().collect(),
    )
    .await;
    let cred = credential(&sts, "wi", &file.token());
    let request = TokenRequest::new(ARM_SCOPE);
    cred.get_token(&request).await.unwrap();
    file.rotate("assertion-2");
    cred.get_token(&request).await.unwrap();
    assert_eq!(
        sts.assertions("wi"),
        ["assertion-1", "assertion-1", "assertion-2"],
        "the cached assertion, refused, then the re-read file"
    );

    // The STS refuses the current file too (clock trouble on its side): one re-read, nothing new, no loop.
    let refuse_all = Sts::start(3600, Default::default()).await;
    let cred = credential(&refuse_all, "wi", &file.token());
    let result = cred.get_token(&request).await;
    let Err(CredentialError::Failed(e)) = result else {
        panic!("expected a failure, got {result:?}");
    };
    assert!(e.message.starts_with("AADSTS700024"), "{}", e.message);
    assert_eq!(refuse_all.assertions("wi"), ["assertion-2"]);
}

/// F6, through the token cache (real time, short tokens): while the federated token file is missing (a dangling
/// `..data`) or unreadable (a directory), refreshes fail as transient outages and the cached token keeps serving
/// with 0 errors; when the file is back the next retry exchanges the new content.
#[tokio::test]
async fn f06_missing_or_unreadable_file_keeps_the_cached_token_serving() {
    let _trace = trace_init();
    let dir_missing = TempDir::new();
    let dir_unreadable = TempDir::new();
    let mut missing = Projected::new(dir_missing.path(), "m-1");
    let mut unreadable = Projected::new(dir_unreadable.path(), "u-1");
    // 3 s tokens: refreshed at ~1.5 s, usable until 2.7 s.
    let sts = Sts::start(
        3,
        [
            ("missing".to_owned(), missing.token()),
            ("unreadable".to_owned(), unreadable.token()),
        ]
        .into_iter()
        .collect(),
    )
    .await;
    let policy = CachePolicy {
        min_retry: Duration::from_millis(200),
        eager_retry: Duration::from_millis(200),
        max_backoff_transient: Duration::from_millis(400),
        ..CachePolicy::default()
    };
    let metrics = Metrics::new().unwrap();
    let cache = TokenCache::new(metrics.tokens.clone(), policy);
    let sources: Vec<TokenSource> = ["missing", "unreadable"]
        .iter()
        .map(|tenant| {
            let file = if *tenant == "missing" {
                missing.token()
            } else {
                unreadable.token()
            };
            let cred = credential(&sts, tenant, &file).with_reread_after(Duration::ZERO);
            cache.source(cache_key(tenant), Arc::new(cred), true)
        })
        .collect();
    for src in &sources {
        src.token().await.unwrap();
    }
    let start = Instant::now();
    missing.remove();
    unreadable.make_unreadable();
    let mut served = 0;
    let mut restored = false;
    while start.elapsed() < Duration::from_millis(3200) {
        if !restored && start.elapsed() >= Duration::from_millis(2000) {
            missing.rotate("m-2");
            unreadable.rotate("u-2");
            restored = true;
        }
        for src in &sources {
            let v = src
                .header_value()
                .await
                .unwrap_or_else(|e| panic!("a client error at {:?}: {e}", start.elapsed()));
            assert!(bearer(&v).starts_with("Bearer wi."));
            served += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served > 200);
    for (tenant, fresh) in [("missing", "m-2"), ("unreadable", "u-2")] {
        let seen = sts.assertions(tenant);
        assert_eq!(seen.last().map(String::as_str), Some(fresh), "{seen:?}");
    }
    let text = String::from_utf8(metrics.render()).unwrap();
    for credential in ["missing", "unreadable"] {
        let failures = sum_of(
            &parse_scrape(&text),
            "aml_auth_proxy_auth_failures_total",
            &[("credential", credential)],
        );
        assert!(
            failures >= 1.0,
            "{credential}: the file was really missing during refreshes: {text}"
        );
    }
}

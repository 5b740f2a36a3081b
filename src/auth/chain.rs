//! A credential chain: sources tried in configured order; `Unavailable` moves on, anything else stops; the first
//! source that produces a token wins and is the only one used afterwards (Go azidentity / Rust
//! DeveloperToolsCredential semantics).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{AccessToken, Credential, CredentialError, TokenCredential, TokenRequest};

const NO_WINNER: usize = usize::MAX;

/// Every built-in source: the first four are the default chain, the first three `prod`, the next three `dev`. All
/// but `device_code` can be selected by `AZURE_TOKEN_CREDENTIALS`.
const BUILT_IN: [ChainSource; 8] = [
    ChainSource::Environment,
    ChainSource::WorkloadIdentity,
    ChainSource::ManagedIdentity,
    ChainSource::AzureCli,
    ChainSource::AzureDeveloperCli,
    ChainSource::AzurePowerShell,
    ChainSource::DeviceCode,
    ChainSource::InteractiveBrowser,
];

/// A chain of named sources.
#[derive(Debug)]
pub struct ChainCredential {
    sources: Vec<(String, Arc<dyn TokenCredential>)>,
    winner: AtomicUsize,
}

/// One entry of a chain: a built-in source, or another credential by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainSource {
    /// `AZURE_*` (secret, certificate, auth file) and `AML_*` environment variables.
    Environment,
    /// Workload identity from the AKS webhook's environment.
    WorkloadIdentity,
    /// Managed identity, found the way the Azure SDKs find it.
    ManagedIdentity,
    /// The Azure CLI.
    AzureCli,
    /// The device-code sign-in cache.
    DeviceCode,
    /// The Azure Developer CLI (`azd auth token`).
    AzureDeveloperCli,
    /// Azure PowerShell (`Get-AzAccessToken`).
    AzurePowerShell,
    /// The browser sign-in cache (`aml-auth-proxy login`; the same file as the device-code one).
    InteractiveBrowser,
    /// Another configured credential, by name.
    Named(String),
}

// === impl ChainCredential ===

impl ChainCredential {
    /// A chain over `sources` (name, credential), tried in order.
    pub fn new(sources: Vec<(String, Arc<dyn TokenCredential>)>) -> Self {
        Self {
            sources,
            winner: AtomicUsize::new(NO_WINNER),
        }
    }
}

/// A leaf source reports under its chain entry name; a nested chain keeps its own (more precise) names.
fn label(slot: &mut String, name: &str, source: &dyn TokenCredential) {
    if source.kind() != "chain" {
        name.clone_into(slot);
    }
}

fn relabel(mut token: AccessToken, name: &str, source: &dyn TokenCredential) -> AccessToken {
    if source.kind() != "chain" {
        token.source = name.into();
    }
    token
}

// === impl ChainSource ===

impl ChainSource {
    /// The name as written in a `chain:` list.
    pub fn name(&self) -> &str {
        match self {
            ChainSource::Environment => "environment",
            ChainSource::WorkloadIdentity => "workload_identity",
            ChainSource::ManagedIdentity => "managed_identity",
            ChainSource::AzureCli => "azure_cli",
            ChainSource::DeviceCode => "device_code",
            ChainSource::AzureDeveloperCli => "azure_developer_cli",
            ChainSource::AzurePowerShell => "azure_powershell",
            ChainSource::InteractiveBrowser => "interactive_browser",
            ChainSource::Named(n) => n,
        }
    }

    /// Parses a chain entry: a built-in source name, else a credential name.
    pub fn parse(name: &str) -> Self {
        BUILT_IN
            .into_iter()
            .find(|source| source.name() == name)
            .unwrap_or_else(|| ChainSource::Named(name.to_owned()))
    }

    /// The built-in default chain.
    pub fn default_chain() -> Vec<ChainSource> {
        BUILT_IN[..4].to_vec()
    }

    /// The built-in default chain as `AZURE_TOKEN_CREDENTIALS` selects it, the way azure-identity reads the
    /// variable (case-insensitive, surrounding blanks ignored): unset or blank → [`Self::default_chain`]; `prod` →
    /// environment, workload identity, managed identity; `dev` → Azure CLI, Azure Developer CLI, Azure
    /// PowerShell; one source's name — this proxy's (`azure_cli`) or azure-identity's (`AzureCliCredential`) —
    /// → that source alone. Anything else is refused with the allowed values.
    pub fn token_credentials_chain(selection: Option<&str>) -> Result<Vec<ChainSource>, String> {
        let value = selection.unwrap_or_default().trim().to_ascii_lowercase();
        match value.as_str() {
            "" => Ok(Self::default_chain()),
            "prod" => Ok(BUILT_IN[..3].to_vec()),
            "dev" => Ok(BUILT_IN[3..6].to_vec()),
            // azure-identity's names are ours without `_`, plus `credential`.
            one => BUILT_IN
                .into_iter()
                .filter(|source| *source != ChainSource::DeviceCode)
                .find(|s| s.name() == one || format!("{}credential", s.name().replace('_', "")) == one)
                .map(|source| vec![source])
                .ok_or_else(|| format!(
                "invalid value {:?}: expected dev, prod, or one source: environment, workload_identity, managed_identity, azure_cli, azure_developer_cli, azure_powershell, interactive_browser (azure-identity's names such as AzureCliCredential are accepted too)",
                selection.unwrap_or_default().trim()
            )),
        }
    }
}

impl Credential for ChainCredential {
    const KIND: &'static str = "chain";

    async fn token(&self, request: &TokenRequest) -> Result<AccessToken, CredentialError> {
        if let Some((name, source)) = self.sources.get(self.winner.load(Ordering::Acquire)) {
            return source
                .get_token(request)
                .await
                .map(|t| relabel(t, name, source.as_ref()))
                .map_err(|e| match e {
                    CredentialError::Failed(mut e) => {
                        label(&mut e.source, name, source.as_ref());
                        CredentialError::Failed(e)
                    }
                    unavailable => unavailable,
                });
        }
        let mut attempts = Vec::new();
        for (index, (name, source)) in self.sources.iter().enumerate() {
            match source.get_token(request).await {
                Ok(token) => {
                    if self
                        .winner
                        .compare_exchange(NO_WINNER, index, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        let skipped = super::Attempt::summary(&attempts);
                        tracing::info!(source = %name, skipped = %skipped, "credential chain: using this source from now on");
                    }
                    return Ok(relabel(token, name, source.as_ref()));
                }
                Err(CredentialError::Unavailable(mut inner)) => {
                    for a in &mut inner {
                        label(&mut a.source, name, source.as_ref());
                    }
                    tracing::debug!(source = %name, reason = %super::Attempt::summary(&inner), "credential chain: source unavailable");
                    attempts.extend(inner);
                }
                Err(CredentialError::Failed(mut e)) => {
                    label(&mut e.source, name, source.as_ref());
                    attempts.push(super::Attempt {
                        source: e.source.clone(),
                        reason: e.message.clone(),
                    });
                    e.attempts = attempts;
                    return Err(CredentialError::Failed(e));
                }
            }
        }
        Err(CredentialError::Unavailable(attempts))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    use super::*;
    use crate::auth::test_support::assert_has;
    use crate::auth::{Secret, TokenErrorKind};

    /// A call-counting fake.
    #[derive(Debug)]
    struct Fake {
        calls: AtomicU32,
        answer: fn() -> Result<AccessToken, CredentialError>,
    }

    impl Fake {
        fn new(answer: fn() -> Result<AccessToken, CredentialError>) -> Arc<Self> {
            Arc::new(Self {
                calls: AtomicU32::new(0),
                answer,
            })
        }
        fn calls(&self) -> u32 {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Credential for Fake {
        const KIND: &'static str = "fake";

        async fn token(&self, _: &TokenRequest) -> Result<AccessToken, CredentialError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            (self.answer)()
        }
    }

    fn ok() -> Result<AccessToken, CredentialError> {
        Ok(AccessToken {
            token: Secret::new("t"),
            expires_in: Duration::from_secs(3600),
            refresh_in: None,
            source: "fake".into(),
        })
    }
    fn unavailable() -> Result<AccessToken, CredentialError> {
        Err(CredentialError::unavailable("fake", "not here"))
    }
    fn rejected() -> Result<AccessToken, CredentialError> {
        Err(CredentialError::rejected("fake", "bad secret"))
    }

    /// The name of the source that won, once one has.
    fn winner(chain: &ChainCredential) -> Option<&str> {
        let at = chain.winner.load(Ordering::Acquire);
        chain.sources.get(at).map(|(name, _)| name.as_str())
    }

    fn chain(fakes: &[&Arc<Fake>]) -> ChainCredential {
        ChainCredential::new(
            fakes
                .iter()
                .enumerate()
                .map(|(i, f)| (format!("s{i}"), Arc::clone(*f) as Arc<dyn TokenCredential>))
                .collect(),
        )
    }

    #[tokio::test]
    async fn falls_through_unavailable_and_sticks_to_the_winner() {
        let (a, b, c) = (Fake::new(unavailable), Fake::new(ok), Fake::new(ok));
        let chain = chain(&[&a, &b, &c]);
        let t = chain.get_token(&TokenRequest::new("s")).await.unwrap();
        assert_eq!(&*t.source, "s1");
        assert_eq!(winner(&chain), Some("s1"));
        chain.get_token(&TokenRequest::new("s")).await.unwrap();
        assert_eq!(
            (a.calls(), b.calls(), c.calls()),
            (1, 2, 0),
            "the winner is the only source used afterwards"
        );
    }

    #[tokio::test]
    async fn stops_on_failure_and_lists_attempts() {
        let (a, b, c) = (Fake::new(unavailable), Fake::new(rejected), Fake::new(ok));
        let chain = chain(&[&a, &b, &c]);
        let Err(CredentialError::Failed(e)) = chain.get_token(&TokenRequest::new("s")).await else {
            panic!("expected a failure");
        };
        assert_eq!(e.kind, TokenErrorKind::CredentialRejected);
        assert_eq!(e.source, "s1");
        assert_eq!(e.attempts.len(), 2);
        assert_eq!(c.calls(), 0, "a failure stops the chain");
        assert_eq!(winner(&chain), None);
    }

    #[test]
    fn azure_token_credentials_selects_sources_as_azure_identity_does() {
        use ChainSource::*;
        let select = |v: Option<&str>| ChainSource::token_credentials_chain(v);
        assert_eq!(select(None).unwrap(), ChainSource::default_chain());
        assert_eq!(select(Some("  ")).unwrap(), ChainSource::default_chain());
        assert_eq!(
            select(Some("prod")).unwrap(),
            [Environment, WorkloadIdentity, ManagedIdentity]
        );
        assert_eq!(
            select(Some("  DeV ")).unwrap(),
            [AzureCli, AzureDeveloperCli, AzurePowerShell]
        );
        for (names, source) in [
            (["environment", "EnvironmentCredential"], Environment),
            (
                ["workload_identity", "WorkloadIdentityCredential"],
                WorkloadIdentity,
            ),
            (
                ["managed_identity", "ManagedIdentityCredential"],
                ManagedIdentity,
            ),
            (["azure_cli", "AzureCliCredential"], AzureCli),
            (
                ["azure_developer_cli", "AzureDeveloperCliCredential"],
                AzureDeveloperCli,
            ),
            (
                ["azure_powershell", "AzurePowershellCredential"],
                AzurePowerShell,
            ),
            (
                ["interactive_browser", "InteractiveBrowserCredential"],
                InteractiveBrowser,
            ),
        ] {
            for name in names {
                assert_eq!(select(Some(name)).unwrap(), vec![source.clone()], "{name}");
            }
        }
        for bad in ["bogus", "sharedtokencachecredential", "prod,dev"] {
            let why = select(Some(bad)).unwrap_err();
            assert!(why.contains(&format!("{bad:?}")), "{why}");
            assert!(why.contains("expected dev, prod, or one source"), "{why}");
        }
    }

    #[tokio::test]
    async fn all_unavailable_lists_every_source() {
        let (a, b) = (Fake::new(unavailable), Fake::new(unavailable));
        let chain = chain(&[&a, &b]);
        let e = chain
            .get_token(&TokenRequest::new("s"))
            .await
            .unwrap_err()
            .into_token_error();
        assert_eq!(e.kind, TokenErrorKind::CredentialUnavailable);
        let sources: Vec<_> = e.attempts.iter().map(|a| a.source.as_str()).collect();
        assert_eq!(sources, ["s0", "s1"]);
        assert_has(&e.message, "s0: not here");
        assert_has(&e.message, "s1: not here");
    }
}

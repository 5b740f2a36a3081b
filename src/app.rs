//! Wires configuration into a running proxy: listeners, credentials, token cache, proxy stack, admin.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;

use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{Admin, RouteReadiness};
use crate::auth::{EntraClient, HttpClientOptions, TokenHttpClient, build_credentials_in};
use crate::azure_ml::arm::ArmClient;
use crate::azure_ml::{AzureMlRoute, ResolveContext};
use crate::config::{Config, ConfigOrigin, Limits, Listen};
use crate::env::Env;
use crate::metrics::Metrics;
use crate::proxy::admission::{Admission, CallerKey, HostAllowlist};
use crate::proxy::client::UpstreamClient;
use crate::proxy::route::{NoRouteToken, Route, RouteAuth};
use crate::proxy::{ProxyService, stack};
use crate::server::per_core::wait_true;
use crate::server::{Listener, Server, ServerOptions, bind, bind_listen, serve_per_core};
use crate::token_cache::{CacheKey, CachePolicy, TokenCache};
use crate::token_service::{SecretFileError, TokenService, TokenServiceParts};

/// Knobs that are not configuration (tests inject these).
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// Where credentials read environment variables.
    pub env: Arc<dyn Env>,
    /// Token cache timing.
    pub cache_policy: CachePolicy,
    /// `None`: the proxy listener is served on the runtime that runs the app. `Some(n)`: on `n` threads of its
    /// own, one single-threaded runtime each ([`crate::server::per_core`]); what `run` does.
    pub proxy_threads: Option<NonZeroUsize>,
    /// The proxy listener serves plain HTTP/1.1 requests with the proxy's own connection loop
    /// ([`crate::server::http1`]), and the upstream client makes plain HTTP/1.1 exchanges itself
    /// (`proxy::client`); `false`: hyper serves every request and makes every exchange.
    pub http1_loop: bool,
}

/// Why the proxy could not start (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("{0}")]
    Bind(#[from] std::io::Error),
    /// TLS could not be configured.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The runtime shut down while the configuration was being built.
    #[error("interrupted while building the configuration: {0}")]
    Interrupted(String),
    /// A route that replaces callers' tokens has no token of its own (configuration that skipped the checks).
    #[error(transparent)]
    NoRouteToken(#[from] NoRouteToken),
    /// The token service's secret file could not be read or created.
    #[error(transparent)]
    TokenServiceSecret(#[from] SecretFileError),
}

/// A bound, ready-to-run proxy.
pub struct App {
    proxy_listener: Listener,
    token_listener: Option<Listener>,
    admin_listener: TcpListener,
    admin: Admin,
    limits: Limits,
    reloader: Reloader,
}

/// What one configuration builds: the proxy stack, what readiness watches, and the token cache (dropping the
/// last clone of a `Live` stops its background refreshers and frees its tokens).
struct Live {
    service: ProxyService,
    token_service: Option<TokenService>,
    readiness: Vec<RouteReadiness>,
    _cache: TokenCache,
}

/// Swaps in a new configuration while the proxy runs (SIGHUP). A bad configuration is refused with one error line
/// and the running one stays; a good one takes effect for new requests at once, while requests in flight finish
/// on the configuration they started with. Listener addresses, `request_header_timeout` and `drain_timeout` need
/// a restart (a reload that changes them says so).
#[derive(Clone)]
pub struct Reloader {
    inner: Arc<ReloadInner>,
}

struct ReloadInner {
    live: ArcSwap<Live>,
    admin: Admin,
    metrics: Metrics,
    options: AppOptions,
    started: Started,
    /// Where the proxy listener actually listens (its port, when configured as 0), for messages to callers.
    served_at: Listen,
    reloading: tokio::sync::Mutex<()>,
}

/// The parts of the configuration that only a restart changes.
#[derive(Debug, Clone, PartialEq)]
struct Started {
    origin: ConfigOrigin,
    listen: Listen,
    admin_listen: SocketAddr,
    token_service_listen: Option<Listen>,
    request_header_timeout: Duration,
    drain_timeout: Duration,
    write_stall_timeout: Duration,
}

/// The service the proxy listener serves: the current configuration's stack.
#[derive(Clone)]
pub struct LiveService {
    inner: Arc<ReloadInner>,
}

/// The service the token-service listener serves: the current configuration's token service.
#[derive(Clone)]
pub struct LiveTokenService {
    inner: Arc<ReloadInner>,
}

// === impl AppOptions ===

impl AppOptions {
    /// Options reading the given environment, with the production cache policy.
    pub fn new(env: Arc<dyn Env>) -> Self {
        Self {
            env,
            cache_policy: CachePolicy::default(),
            proxy_threads: None,
            http1_loop: true,
        }
    }
}

// === impl App ===

impl App {
    /// Binds both listeners, builds credentials and the proxy stack, and starts pre-fetching every route's
    /// token. Requests that arrive before a token is held wait on that same fetch.
    ///
    /// `config` must satisfy [`Config::check_listeners`] (the loader checks it; callers that override listeners
    /// check again).
    pub async fn bind(config: Config, options: AppOptions) -> Result<Self, StartError> {
        let proxy_listener =
            bind_listen(&config.listen, config.unix_allowed_uids.clone(), "proxy").await?;
        let admin_listener = bind(config.admin_listen, "admin").await?;
        let token_listener = match &config.token_service {
            Some(ts) => Some(
                bind_listen(
                    &ts.listen,
                    config.unix_allowed_uids.clone(),
                    "token service",
                )
                .await?,
            ),
            None => None,
        };
        let metrics = Metrics::new()?;
        let started = Started::of(&config);
        let limits = config.limits.clone();
        let hosts = HostAllowlist::new(config.allowed_hosts.clone());
        log_exposure(
            &config.listen,
            config.admin_listen,
            config.caller_auth.as_ref(),
        );
        let served_at = proxy_listener.local();
        let live = Live::build_off_runtime(config, &options, &metrics, &served_at).await?;
        let admin = Admin::new(hosts, metrics.clone(), live.readiness.clone());
        admin.set_token_service(live.token_service.clone());
        let reloader = Reloader {
            inner: Arc::new(ReloadInner {
                live: ArcSwap::from_pointee(live),
                admin: admin.clone(),
                metrics,
                options,
                started,
                served_at,
                reloading: tokio::sync::Mutex::new(()),
            }),
        };
        Ok(Self {
            proxy_listener,
            token_listener,
            admin_listener,
            admin,
            limits,
            reloader,
        })
    }

    /// A handle that reloads the configuration while the app runs.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Where the proxy listens: its TCP address (with the actual port) or its Unix socket path.
    pub fn proxy_listen(&self) -> Listen {
        self.proxy_listener.local()
    }

    /// Where the token service listens, when it is configured.
    pub fn token_service_listen(&self) -> Option<Listen> {
        self.token_listener.as_ref().map(Listener::local)
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until `shutdown` completes, then drains: stops accepting, lets in-flight requests finish for up to
    /// `drain_timeout` (or until `force` completes), and returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()>,
        force: impl Future<Output = ()> + Send + 'static,
    ) {
        tracing::info!(
            proxy = %self.proxy_listen(),
            admin = %self.admin_addr(),
            token_service = %self.token_service_listen().map_or_else(|| "-".to_owned(), |l| l.to_string()),
            workers = self.reloader.inner.options.proxy_threads.map_or_else(
                || tokio::runtime::Handle::current().metrics().num_workers(),
                NonZeroUsize::get,
            ),
            "listening"
        );
        let options = ServerOptions {
            header_read_timeout: self.limits.request_header_timeout,
            write_stall_timeout: self.limits.write_stall_timeout,
            write_stalls: self
                .reloader
                .inner
                .metrics
                .proxy
                .stream_timeouts
                .write_stall
                .clone(),
            http1_loop: false,
        };
        let (stop_proxy, proxy_stopped) = watch::channel(false);
        let (stop_admin, admin_stopped) = watch::channel(false);
        let (deadline_tx, deadline_rx) = watch::channel(false);
        let drain = self.limits.drain_timeout;
        let live = LiveService {
            inner: Arc::clone(&self.reloader.inner),
        };
        // The admin and token-service listeners stay on hyper alone: their traffic is light.
        let proxy_options = ServerOptions {
            http1_loop: self.reloader.inner.options.http1_loop,
            ..options.clone()
        };
        let proxy_server = Server::new(live, proxy_options);
        let proxy = match self.reloader.inner.options.proxy_threads {
            Some(threads) => tokio::spawn(serve_per_core(
                proxy_server,
                self.proxy_listener,
                threads,
                proxy_stopped,
                deadline_rx.clone(),
            )),
            None => tokio::spawn(proxy_server.serve(
                self.proxy_listener,
                proxy_stopped,
                wait_true(deadline_rx.clone()),
            )),
        };
        let (stop_tokens, tokens_stopped) = watch::channel(false);
        let token_server = self.token_listener.map(|listener| {
            let service = LiveTokenService {
                inner: Arc::clone(&self.reloader.inner),
            };
            tokio::spawn(Server::new(service, options.clone()).serve(
                listener,
                tokens_stopped,
                wait_true(deadline_rx.clone()),
            ))
        });
        let admin = tokio::spawn(Server::new(self.admin.clone(), options).serve(
            Listener::Tcp(self.admin_listener),
            admin_stopped,
            wait_true(deadline_rx),
        ));
        shutdown.await;
        tracing::info!(
            drain_timeout_s = drain.as_secs(),
            "shutting down: no new connections, finishing in-flight requests"
        );
        self.admin.set_draining();
        let _ = stop_proxy.send(true);
        let _ = stop_tokens.send(true);
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(drain) => tracing::warn!("drain_timeout reached"),
                () = force => tracing::warn!("second signal: stopping at once"),
            }
            let _ = deadline_tx.send(true);
        });
        let _ = proxy.await;
        if let Some(token_server) = token_server {
            let _ = token_server.await;
        }
        let _ = stop_admin.send(true);
        let _ = admin.await;
        tracing::info!("stopped");
    }
}

/// Says at start-up who can use the proxy, loudly when other hosts can reach it.
fn log_exposure(
    listen: &Listen,
    admin: SocketAddr,
    caller_auth: Option<&crate::config::CallerAuth>,
) {
    let header = caller_auth.map(|a| a.header.as_str());
    if !listen.is_local() || !crate::config::is_loopback(admin.ip()) {
        tracing::warn!(
            proxy = %listen,
            admin = %admin,
            caller_auth_header = header.unwrap_or("-"),
            "expose: true: listening beyond loopback; proxy requests must carry the caller key"
        );
    } else if let Some(header) = header {
        tracing::info!(
            caller_auth_header = header,
            "proxy requests must carry the caller key"
        );
    }
}

// === impl Live ===

impl Live {
    /// Builds credentials, the token cache (starting every route's pre-fetch) and the proxy stack.
    fn build(
        config: Config,
        options: &AppOptions,
        metrics: &Metrics,
        served_at: &Listen,
    ) -> Result<Self, StartError> {
        let tls = Arc::new(crate::tls::client_config(&config.extra_roots)?);
        let http_options = HttpClientOptions {
            connect_timeout: config.limits.upstream_connect_timeout,
            ..HttpClientOptions::default()
        };
        let entra = EntraClient::new(
            TokenHttpClient::new(Arc::clone(&tls), &http_options),
            config.authority_host.clone(),
        );
        let tenants: HashMap<String, String> = config
            .credentials
            .iter()
            .filter_map(|(name, spec)| Some((name.clone(), spec.tenant_id()?.to_owned())))
            .collect();
        let credentials = build_credentials_in(
            config.credentials,
            options.env.as_ref(),
            &entra,
            config.origin.file_for_hints().as_deref(),
        );
        let arm_http = TokenHttpClient::new(Arc::clone(&tls), &http_options);
        // Spans go to this configuration's exporter, which stops once the configuration is replaced and its
        // queue is sent.
        let spans = config
            .telemetry
            .as_ref()
            .map(|otlp| otlp.start(Arc::clone(&tls), metrics.spans.clone()));
        if let Some(otlp) = &config.telemetry {
            tracing::info!(endpoint = %otlp.endpoint, service_name = %otlp.service_name, "exporting spans over OTLP");
        }
        let mut policy = options.cache_policy.clone();
        policy.client_capabilities = config.cae;
        if spans.is_some() {
            policy.spans = spans.clone();
        }
        let cache = TokenCache::new(metrics.tokens.clone(), policy);
        let mut routes = Vec::with_capacity(config.routes.len());
        let mut readiness = Vec::new();
        for route in &config.routes {
            if let Some(target) = &route.azure_ml {
                // Resolved through Resource Manager in the background, starting now.
                let Some((name, credential)) = route
                    .credential
                    .as_ref()
                    .and_then(|name| Some((name, credentials.get(name)?)))
                else {
                    return Err(NoRouteToken {
                        route: route.name.clone(),
                    }
                    .into());
                };
                let tenant: Option<Arc<str>> = tenants.get(name).map(|t| t.as_str().into());
                let arm_tokens = cache.source(
                    CacheKey {
                        credential: name.as_str().into(),
                        tenant: tenant.clone(),
                        scope: config.cloud.management_scope().into(),
                        claims: None,
                    },
                    Arc::clone(&credential),
                    true,
                );
                let resolving = AzureMlRoute::start(
                    target.clone(),
                    ResolveContext {
                        arm: ArmClient::new(
                            arm_http.clone(),
                            config.resource_manager.clone(),
                            arm_tokens.clone(),
                        ),
                        http: arm_http.clone(),
                        cache: cache.clone(),
                        credential,
                        credential_name: name.as_str().into(),
                        tenant,
                        ml_scope: config.cloud.ml_scope().into(),
                        keep_fresh: true,
                    },
                );
                readiness.push(RouteReadiness {
                    route: route.name.clone(),
                    credential: name.clone(),
                    tokens: arm_tokens,
                    azure_ml: Some(resolving.clone()),
                });
                let metrics = metrics.proxy.route(&route.name);
                let auth = RouteAuth::AzureMl(resolving);
                routes.push(Arc::new(Route::new(route, auth, metrics)));
                continue;
            }
            // The route's token source (its pre-fetch starts now), when it names a credential and a scope.
            let tokens = match (&route.credential, &route.scope) {
                (Some(name), Some(scope)) => credentials.get(name).map(|credential| {
                    let key = CacheKey {
                        credential: name.as_str().into(),
                        tenant: tenants.get(name).map(|t| t.as_str().into()),
                        scope: scope.as_str().into(),
                        claims: None,
                    };
                    let tokens = cache.source(key, credential, true);
                    readiness.push(RouteReadiness {
                        route: route.name.clone(),
                        credential: name.clone(),
                        tokens: tokens.clone(),
                        azure_ml: None,
                    });
                    tokens
                }),
                _ => None,
            };
            let auth = RouteAuth::new(&route.name, route.pass_through_authorization, tokens)?;
            let metrics = metrics.proxy.route(&route.name);
            routes.push(Arc::new(Route::new(route, auth, metrics)));
        }
        let caller_key = config.caller_auth.map(CallerKey::new);
        let token_service = match config.token_service {
            Some(mut ts) => {
                let secret = match ts.secret.take() {
                    Some(secret) => secret,
                    None => crate::token_service::load_or_create(&ts.secret_file)?,
                };
                let parts = TokenServiceParts {
                    secret,
                    credentials: &credentials,
                    tenants: &tenants,
                    cache: cache.clone(),
                    hosts: HostAllowlist::new(config.allowed_hosts.clone()),
                    // Callers on this host need only the secret; callers from elsewhere also the caller key.
                    caller_key: caller_key.clone().filter(|_| !ts.listen.is_local()),
                    metrics: metrics.token_service.clone(),
                };
                Some(TokenService::new(&ts, parts))
            }
            None => None,
        };
        let admission =
            Admission::new(caller_key, HostAllowlist::new(config.allowed_hosts.clone()))
                .served_at(served_at);
        let client = UpstreamClient::new(
            Arc::clone(&tls),
            config.limits.upstream_connect_timeout,
            options.http1_loop,
        );
        let service = stack(
            routes,
            admission,
            &client,
            &cache,
            &config.limits,
            &metrics.proxy,
            spans.as_ref(),
        );
        for route in &config.routes {
            if let Some(target) = &route.azure_ml {
                tracing::info!(
                    route = %route.name,
                    path_prefix = %route.path_prefix,
                    azure_ml = %crate::azure_ml::describe(target),
                    resource_manager = %config.resource_manager,
                    credential = route.credential.as_deref().unwrap_or("-"),
                    "route"
                );
                continue;
            }
            tracing::info!(
                route = %route.name,
                path_prefix = %route.path_prefix,
                upstream = %format!("{}{}", route.upstream.origin, route.upstream.base_path),
                credential = route.credential.as_deref().unwrap_or("-"),
                scope = route.scope.as_deref().unwrap_or("-"),
                "route"
            );
        }
        Ok(Self {
            service,
            token_service,
            readiness,
            _cache: cache,
        })
    }

    /// [`Live::build`] on the blocking pool: building reads certificate and sdk-auth files (each bounded by
    /// [`crate::file_read::READ_TIMEOUT`]), which must never hold up an async worker.
    async fn build_off_runtime(
        config: Config,
        options: &AppOptions,
        metrics: &Metrics,
        served_at: &Listen,
    ) -> Result<Self, StartError> {
        let (options, metrics, served_at) = (options.clone(), metrics.clone(), served_at.clone());
        match tokio::task::spawn_blocking(move || {
            Self::build(config, &options, &metrics, &served_at)
        })
        .await
        {
            Ok(built) => built,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(StartError::Interrupted(e.to_string())),
        }
    }

    /// True when every route holds a usable token (and every entry the token service uses).
    fn ready(&self) -> bool {
        let valid = |status: crate::token_cache::TokenStatus| {
            matches!(status, crate::token_cache::TokenStatus::Valid { .. })
        };
        self.readiness.iter().all(|r| valid(r.status()))
            && self
                .token_service
                .iter()
                .flat_map(TokenService::in_use)
                .all(|u| valid(u.tokens.status()))
    }
}

// === impl Started ===

impl Started {
    fn of(config: &Config) -> Self {
        Self {
            origin: config.origin.clone(),
            listen: config.listen.clone(),
            admin_listen: config.admin_listen,
            token_service_listen: config.token_service.as_ref().map(|ts| ts.listen.clone()),
            request_header_timeout: config.limits.request_header_timeout,
            drain_timeout: config.limits.drain_timeout,
            write_stall_timeout: config.limits.write_stall_timeout,
        }
    }
}

// === impl Reloader ===

impl Reloader {
    /// Re-reads the configuration file the proxy started with, and applies it if it is valid. With the built-in
    /// default there is no file: the call says so and changes nothing.
    pub async fn reload(&self) -> Result<(), String> {
        let inner = &*self.inner;
        let ConfigOrigin::File(path) = &inner.started.origin else {
            let message =
                "no configuration file to reload (running the built-in default)".to_owned();
            tracing::warn!("{message}");
            return Err(message);
        };
        // Off the async workers: reading the file and the secrets it names may be slow (each read is bounded by
        // `file_read::READ_TIMEOUT`); requests, /healthz and signals keep being served meanwhile.
        let (file, env) = (path.clone(), Arc::clone(&inner.options.env));
        let loaded =
            match tokio::task::spawn_blocking(move || crate::config::load(&file, env.as_ref()))
                .await
            {
                Ok(loaded) => loaded,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => Err(crate::config::ConfigError::single(
                    Some(path.clone()),
                    "",
                    format!("interrupted: {e}"),
                )),
            };
        match loaded {
            Ok(config) => self.apply(config).await,
            Err(e) => {
                inner.metrics.config_reload_failures.inc();
                let problems: Vec<String> = e.problems.iter().map(ToString::to_string).collect();
                let message = format!("{} problem(s): {}", problems.len(), problems.join("; "));
                tracing::error!(file = %path.display(), problems = %message, "configuration reload refused; the running configuration stays");
                Err(message)
            }
        }
    }

    /// Applies an already loaded configuration: builds it, waits up to a second for its tokens (the running
    /// configuration serves meanwhile), then swaps it in.
    pub async fn apply(&self, config: Config) -> Result<(), String> {
        let inner = &*self.inner;
        let _one_at_a_time = inner.reloading.lock().await;
        let next = Started::of(&config);
        if next.listen != inner.started.listen
            || next.admin_listen != inner.started.admin_listen
            || next.token_service_listen != inner.started.token_service_listen
            || next.request_header_timeout != inner.started.request_header_timeout
            || next.drain_timeout != inner.started.drain_timeout
            || next.write_stall_timeout != inner.started.write_stall_timeout
        {
            tracing::warn!(
                "listen, admin_listen, token_service.listen, request_header_timeout, write_stall_timeout and drain_timeout changes take effect after a restart"
            );
        }
        let live = match Live::build_off_runtime(
            config,
            &inner.options,
            &inner.metrics,
            &inner.served_at,
        )
        .await
        {
            Ok(live) => live,
            Err(e) => {
                inner.metrics.config_reload_failures.inc();
                tracing::error!(error = %e, "configuration reload refused; the running configuration stays");
                return Err(e.to_string());
            }
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while !live.ready() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        inner.admin.set_routes(live.readiness.clone());
        inner.admin.set_token_service(live.token_service.clone());
        inner.live.store(Arc::new(live));
        inner.metrics.config_reloads.inc();
        tracing::info!("configuration reloaded");
        Ok(())
    }
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

// === impl LiveService ===

impl tower::Service<http::Request<crate::server::CallerBody>> for LiveService {
    type Response =
        <ProxyService as tower::Service<http::Request<crate::server::CallerBody>>>::Response;
    type Error = <ProxyService as tower::Service<http::Request<crate::server::CallerBody>>>::Error;
    type Future =
        <ProxyService as tower::Service<http::Request<crate::server::CallerBody>>>::Future;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<crate::server::CallerBody>) -> Self::Future {
        let mut service = self.inner.live.load().service.clone();
        tower::Service::call(&mut service, req)
    }
}

// === impl LiveTokenService ===

impl tower::Service<http::Request<crate::server::CallerBody>> for LiveTokenService {
    type Response = http::Response<crate::proxy::body::ResponseBody>;
    type Error = std::convert::Infallible;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<crate::server::CallerBody>) -> Self::Future {
        // A reload that removes the block leaves the listener open (it closes at restart) but refuses requests.
        match self.inner.live.load().token_service.clone() {
            Some(service) => Box::pin(async move { Ok(service.answer(req).await) }),
            None => Box::pin(std::future::ready(Ok(
                crate::token_service::respond::Refusal::not_found(
                    "the token service is no longer configured (it stops listening at the next restart)",
                )
                .response(),
            ))),
        }
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("proxy", &self.proxy_listen())
            .field("admin", &self.admin_addr())
            .finish_non_exhaustive()
    }
}

//! The loopback listener the browser is redirected to at the end of a sign-in.
//!
//! It answers `/` only, one request per connection (HTTP/1.1, no keep-alive), bodies up to 16 KiB, headers within
//! 10 s. The authorization response is read from a `form_post` body (`application/x-www-form-urlencoded`) or from
//! the query string. Each answer is a small HTML page; the outcome is handed to the waiting sign-in only after the
//! page has been written, so the browser always shows it.

use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::super::device_code::printable;
use super::super::{LoginError, Secret};

/// The largest request body read (an authorization response is well under 4 KiB).
const MAX_BODY_BYTES: usize = 16 * 1024;

/// How long a connection may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest error description kept from a redirect.
const MAX_DESCRIPTION_CHARS: usize = 1000;

/// Listening sockets for the redirect, all on one port.
pub(super) struct RedirectListener {
    listeners: Vec<TcpListener>,
    port: u16,
}

/// What one request to the listener decided: the authorization code for this sign-in, or why there is none.
type Verdict = Result<Secret, LoginError>;

/// Shared by the connections: the state to expect, and where a decisive request's verdict goes.
struct Shared {
    state: String,
    verdicts: mpsc::Sender<Verdict>,
}

// === impl RedirectListener ===

impl RedirectListener {
    /// Listens on `127.0.0.1:port` (0: a free port) and, where the host has IPv6 loopback, on `[::1]` with the same
    /// port, since browsers may resolve `localhost` to either.
    pub(super) async fn bind(port: u16) -> io::Result<Self> {
        let v4 = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
        let port = v4.local_addr()?.port();
        let mut listeners = vec![v4];
        match TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, port))).await {
            Ok(v6) => listeners.push(v6),
            Err(e) => {
                tracing::debug!(error = %e, "no IPv6 loopback listener for the sign-in redirect")
            }
        }
        Ok(Self { listeners, port })
    }

    /// `http://localhost:<port>/`, the redirect URI to send.
    pub(super) fn redirect_uri(&self) -> String {
        format!("http://localhost:{}/", self.port)
    }

    /// Serves the listener until a request decides the sign-in (a code with the right state, an error redirect,
    /// or a wrong state), or `timeout` passes.
    pub(super) async fn wait(self, state: &str, timeout: Duration) -> Verdict {
        let (tx, mut verdicts) = mpsc::channel(4);
        let shared = Arc::new(Shared {
            state: state.to_owned(),
            verdicts: tx,
        });
        // Each listener serves its connections; dropping the set stops them all, and the connections with them.
        let mut listening = tokio::task::JoinSet::new();
        for listener in self.listeners {
            listening.spawn(accept(listener, shared.clone()));
        }
        tokio::select! {
            Some(verdict) = verdicts.recv() => verdict,
            () = tokio::time::sleep(timeout) => Err(LoginError::TimedOut(timeout)),
        }
    }
}

/// Accepts connections on `listener` and answers each in a task of its own, until dropped.
async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve(stream, shared.clone()));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "accepting a sign-in redirect connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Answered connections are reaped as they end.
            Some(_) = connections.join_next() => {}
        }
    }
}

/// Answers one connection (one request); a decisive verdict is sent once the page has been written.
async fn serve(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    let decided: Arc<Mutex<Option<Verdict>>> = Arc::default();
    let (slot, expected) = (decided.clone(), shared.clone());
    let service = service_fn(move |req: Request<Incoming>| {
        let (slot, expected) = (slot.clone(), expected.clone());
        async move {
            let (response, verdict) = answer(req, &expected.state).await;
            if verdict.is_some()
                && let Ok(mut slot) = slot.lock()
            {
                *slot = verdict;
            }
            Ok::<_, Infallible>(response)
        }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "a sign-in redirect connection failed");
    }
    if let Some(verdict) = decided.lock().ok().and_then(|mut v| v.take()) {
        let _ = shared.verdicts.send(verdict).await;
    }
}

/// The page for one request, and its verdict if it decides the sign-in.
async fn answer(req: Request<Incoming>, state: &str) -> (Response<Full<Bytes>>, Option<Verdict>) {
    let ignored = |status, title| (page(status, title, ""), None);
    if req.uri().path() != "/" {
        return ignored(StatusCode::NOT_FOUND, "Not found");
    }
    let query = req.uri().query().unwrap_or_default().to_owned();
    let body = match *req.method() {
        Method::GET => Bytes::from(query),
        Method::POST => match Limited::new(req.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(_) => return ignored(StatusCode::PAYLOAD_TOO_LARGE, "Request too large"),
        },
        _ => return ignored(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
    };
    let fields: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (code, error) = (field("code"), field("error"));
    if code.is_none() && error.is_none() {
        // Not an authorization response (a browser asking for /favicon.ico, say): keep waiting.
        return ignored(StatusCode::NOT_FOUND, "Not found");
    }
    // An error redirect may come without a state (Entra ID echoes it when sent); a code never may.
    let state_ok = field("state") == Some(state);
    if let Some(error) = error
        && (state_ok || field("state").is_none())
    {
        let error = bounded(error);
        let description = field("error_description")
            .map(bounded)
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "(no description)".to_owned());
        let body = format!(
            "<p>Entra ID refused the sign-in: <b>{}</b>: {}</p><p>Return to the terminal for details.</p>",
            crate::html_escape(&error),
            crate::html_escape(&description)
        );
        return (
            page(StatusCode::OK, "Sign-in failed", &body),
            Some(Err(LoginError::Refused { error, description })),
        );
    }
    match code {
        Some(code) if state_ok && !code.is_empty() => (
            page(
                StatusCode::OK,
                "Signed in",
                "<p>Authentication complete. You can close this window and return to the terminal.</p>",
            ),
            Some(Ok(Secret::new(code))),
        ),
        _ => (
            page(
                StatusCode::BAD_REQUEST,
                "State mismatch",
                "<p>This sign-in response does not belong to the sign-in in progress; it was refused. Return to the terminal and run the login command again.</p>",
            ),
            Some(Err(LoginError::StateMismatch)),
        ),
    }
}

/// A small HTML page that is never cached.
fn page(status: StatusCode, title: &str, body: &str) -> Response<Full<Bytes>> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>aml-auth-proxy: {title}</title></head><body><h1>aml-auth-proxy: {title}</h1>{body}</body></html>\n"
    );
    let mut response = Response::new(Full::new(Bytes::from(html)));
    *response.status_mut() = status;
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        let value = header::HeaderValue::from_static(value);
        response.headers_mut().insert(name, value);
    }
    response
}

/// `text` fit for a terminal line and a page: control characters removed, length bounded.
fn bounded(text: &str) -> String {
    let text = printable(text);
    match text.char_indices().nth(MAX_DESCRIPTION_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Sends `request` (raw HTTP/1.1) to the listener's port; returns the status code and the body.
    async fn send(port: u16, request: String) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let text = String::from_utf8_lossy(&answer).into_owned();
        let status = text[9..12].parse().unwrap();
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        (status, body)
    }

    fn get(path: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")
    }

    fn post(body: &str) -> String {
        format!(
            "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[tokio::test]
    async fn stray_requests_are_ignored_and_the_first_decisive_one_ends_the_sign_in() {
        let refused = "/?error=access_denied&error_description=AADSTS65004%3A+User+declined%0D%0A%3Cscript%3E&state=s1";
        for (decisive, status, shown, outcome) in [
            (
                post("code=the-code&state=s1&session_state=z"),
                200,
                "return to the terminal",
                "code the-code",
            ),
            // The description is made printable, and escaped on the page.
            (
                get(refused),
                200,
                "&lt;script&gt;",
                "Entra ID refused the sign-in: access_denied: AADSTS65004: User declined  <script>",
            ),
            (
                post("code=c&state=s2"),
                400,
                "State mismatch",
                "the redirect to the sign-in listener carried a state that this sign-in did not send; refused (nothing was saved)",
            ),
        ] {
            let listener = RedirectListener::bind(0).await.unwrap();
            let port = listener.port;
            assert_eq!(listener.redirect_uri(), format!("http://localhost:{port}/"));
            let waiting = tokio::spawn(listener.wait("s1", Duration::from_secs(30)));
            // Neither code nor error, another path, another method, an oversized body: answered, and ignored.
            assert_eq!(send(port, get("/")).await.0, 404);
            assert_eq!(send(port, get("/favicon.ico?code=x&state=s1")).await.0, 404);
            let put = "PUT / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n";
            assert_eq!(send(port, put.into()).await.0, 405);
            let big = format!("code=c&state=s1&pad={}", "x".repeat(MAX_BODY_BYTES));
            assert_eq!(send(port, post(&big)).await.0, 413);
            let (answered, page) = send(port, decisive).await;
            assert_eq!(answered, status);
            assert!(page.contains(shown), "{page}");
            let verdict = match waiting.await.unwrap() {
                Ok(code) => format!("code {}", code.expose()),
                Err(e) => e.to_string(),
            };
            assert_eq!(verdict, outcome);
        }
    }

    #[tokio::test]
    async fn silence_times_out() {
        let listener = RedirectListener::bind(0).await.unwrap();
        let outcome = listener.wait("s1", Duration::from_millis(50)).await;
        assert!(matches!(outcome, Err(LoginError::TimedOut(_))));
    }
}

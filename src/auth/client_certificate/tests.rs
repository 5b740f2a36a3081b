//! Assertion reuse (time passed in, no sleeping) and `AZURE_CLIENT_SEND_CERTIFICATE_CHAIN` parsing.

use std::sync::Arc;

use super::super::certificate_file::tests::{decode_jwt, pem, pki};
use super::{
    ASSERTION_LIFETIME, ASSERTION_REUSE_MARGIN, AssertionCache, ClientCertificate,
    ClientCertificateCredential, Secret,
};

const AUD: &str = "https://login.example/tenant-1/oauth2/v2.0/token";
const CLIENT: &str = "11111111-2222-3333-4444-555555555555";
const T0: u64 = 1_800_000_000;

fn certificate() -> ClientCertificate {
    let p = pki();
    let file = pem("PRIVATE KEY", &p.leaf_key) + &pem("CERTIFICATE", &p.leaf_der);
    ClientCertificate::from_bytes(file.as_bytes(), None).unwrap()
}

/// The assertion `cache` holds or signs for `audience` at `now`.
fn sign(cache: &AssertionCache, cert: &ClientCertificate, audience: &str, now: u64) -> Arc<Secret> {
    cache
        .get_or_sign(cert, audience, CLIENT, false, now)
        .unwrap()
}

fn jti(jwt: &str) -> String {
    decode_jwt(jwt).1["jti"].as_str().unwrap().to_owned()
}

#[test]
fn assertion_is_reused_until_shortly_before_it_expires() {
    let cert = certificate();
    let cache = AssertionCache::default();
    let first = sign(&cache, &cert, AUD, T0);

    // Still more than the margin left: the same assertion (same jti).
    let last_reuse = T0 + ASSERTION_LIFETIME.as_secs() - ASSERTION_REUSE_MARGIN.as_secs() - 1;
    for now in [T0, T0 + 1, T0 + 300, last_reuse] {
        let again = sign(&cache, &cert, AUD, now);
        assert!(Arc::ptr_eq(&first, &again), "reused at {now}");
    }

    // 60 s before exp: a new assertion with a new jti, fresh times, and it is the one reused from then on.
    let renewal = last_reuse + 1;
    let second = sign(&cache, &cert, AUD, renewal);
    assert_ne!(jti(second.expose()), jti(first.expose()));
    let (_, claims, _) = decode_jwt(second.expose());
    assert_eq!(claims["iat"], renewal);
    assert_eq!(claims["nbf"], renewal);
    assert_eq!(claims["exp"], renewal + ASSERTION_LIFETIME.as_secs());
    let third = sign(&cache, &cert, AUD, renewal + 10);
    assert!(Arc::ptr_eq(&second, &third));
}

#[test]
fn a_new_assertion_with_a_new_jti_for_another_audience_a_clock_step_back_or_after_clear() {
    let cert = certificate();
    let cache = AssertionCache::default();
    let first = sign(&cache, &cert, AUD, T0);

    let other = "https://login.example/tenant-2/oauth2/v2.0/token";
    let for_other = sign(&cache, &cert, other, T0);
    assert_eq!(decode_jwt(for_other.expose()).1["aud"], other);
    assert_ne!(jti(for_other.expose()), jti(first.expose()));

    // The wall clock stepped back before the cached iat: sign anew rather than send a not-yet-valid one.
    let back = sign(&cache, &cert, other, T0 - 5);
    assert!(!Arc::ptr_eq(&for_other, &back));

    cache.clear();
    let fresh = sign(&cache, &cert, other, T0 - 5);
    assert!(!Arc::ptr_eq(&back, &fresh));

    // Every assertion signed gets its own jti.
    let mut seen = std::collections::HashSet::new();
    for i in 0..20 {
        cache.clear();
        let jwt = sign(&cache, &cert, AUD, T0 + i);
        assert!(seen.insert(jti(jwt.expose())));
    }
}

#[test]
fn send_chain_flag_parsing() {
    let parse = ClientCertificateCredential::parse_flag;
    for yes in ["1", "true", "TRUE", "True", "yes", "On", " true "] {
        assert_eq!(parse(yes), Some(true), "{yes:?}");
    }
    for no in ["0", "false", "FALSE", "no", "off", "", "  "] {
        assert_eq!(parse(no), Some(false), "{no:?}");
    }
    // Python enables the chain for any non-empty value, even "false"; here unknown values are recognisable, so
    // the caller can warn (and leave the chain off).
    for odd in ["2", "enable", "y", "t"] {
        assert_eq!(parse(odd), None, "{odd:?}");
    }
}

/// The credential's `Debug` is derived: its certificate and assertion cache must print neither the private key nor a
/// cached assertion.
#[test]
fn debug_shows_neither_the_key_nor_a_cached_assertion() {
    let p = pki();
    let cert = certificate();
    let cache = AssertionCache::default();
    let jwt = sign(&cache, &cert, AUD, T0);
    let text = format!("{cache:?} {cert:?}");
    let signature = jwt.expose().rsplit('.').next().unwrap();
    assert!(!text.contains(signature), "{text}");
    let key = pem("PRIVATE KEY", &p.leaf_key);
    for line in key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!text.contains(line), "{text}");
    }
    assert!(
        text.contains("***"),
        "the assertion is shown redacted: {text}"
    );
}

//! The certificate credential against the mock Entra ID: the form carries a PS256 client assertion that
//! verifies with the certificate's public key, addressed to exactly the token endpoint it is posted to.

use std::path::PathBuf;
use std::sync::OnceLock;

use aml_auth_proxy::auth::{
    ClientCertificateCredential, ClientCertificateCredentialOptions, CredentialError, Secret,
    TokenCredential, TokenErrorKind, TokenRequest,
};
use aws_lc_rs::signature::{RSA_PSS_2048_8192_SHA256, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::StatusCode;
use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::Value;

use crate::support::proxy::TempDir;
use crate::support::{ARM_SCOPE, Behavior, MockAad, trace_init};

const CLIENT_ID: &str = "33333333-0000-0000-0000-000000000003";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A CA (ECDSA: quick to generate) and an RSA client certificate it signed, generated once per test process.
struct Pki {
    ca_der: Vec<u8>,
    ca_pem: String,
    leaf_der: Vec<u8>,
    leaf_pem: String,
    key_der: Vec<u8>,
    key_pem: String,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "it test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "it test client");
        let leaf = params.signed_by(&key, &issuer).unwrap();
        Pki {
            ca_der: ca.der().to_vec(),
            ca_pem: ca.pem(),
            leaf_der: leaf.der().to_vec(),
            leaf_pem: leaf.pem(),
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
        }
    })
}

fn spec(
    tenant: &str,
    file: PathBuf,
    password: Option<&str>,
    chain: bool,
) -> ClientCertificateCredentialOptions {
    ClientCertificateCredentialOptions {
        tenant_id: tenant.to_owned(),
        client_id: CLIENT_ID.to_owned(),
        certificate_file: file,
        password: password.map(Secret::new),
        send_certificate_chain: chain,
    }
}

/// A PKCS#12 file (key, leaf and CA) protected by `password`.
fn pfx(password: &str) -> Vec<u8> {
    let p = pki();
    let certs = [&p.leaf_der, &p.ca_der].map(|d| Certificate::from_der(d).unwrap());
    let chain = PrivateKeyChain::new(
        b"k".as_slice(),
        PrivateKey::from_der(&p.key_der).unwrap(),
        certs,
    );
    let mut store = KeyStore::new();
    store.add_entry("client", KeyStoreEntry::PrivateKeyChain(chain));
    store
        .writer(password)
        .encryption_iterations(1000)
        .mac_iterations(1000)
        .write()
        .unwrap()
}

/// Decodes a JWT's header and claims after verifying its PS256 signature with the leaf certificate's key.
fn verified(jwt: &str) -> (Value, Value) {
    let (signed, signature) = jwt.rsplit_once('.').unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&pki().leaf_der).unwrap();
    UnparsedPublicKey::new(
        &RSA_PSS_2048_8192_SHA256,
        cert.public_key().subject_public_key.data.to_vec(),
    )
    .verify(
        signed.as_bytes(),
        &URL_SAFE_NO_PAD.decode(signature).unwrap(),
    )
    .expect("the assertion's signature verifies with the certificate's public key");
    let (header, claims) = signed.split_once('.').unwrap();
    let json =
        |s: &str| -> Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap() };
    (json(header), json(claims))
}

#[tokio::test]
async fn pem_certificate_sends_a_signed_assertion_for_the_token_endpoint() {
    let _trace = trace_init();
    let aad = MockAad::start().await;
    let dir = TempDir::new();
    let p = pki();
    let file = dir.file("sp.pem", &(p.leaf_pem.clone() + &p.key_pem), 0o600);
    let cred =
        ClientCertificateCredential::new(spec("cert", file, None, false), aad.entra_client());
    assert_eq!(cred.kind(), "client_certificate");

    let token = cred.get_token(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
    assert_eq!(&*token.source, "client_certificate");
    let form = aad.last_request().unwrap().form;
    assert_eq!(form["client_assertion_type"], JWT_BEARER);
    assert_eq!(form["client_id"], CLIENT_ID);
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["scope"], ARM_SCOPE);
    assert!(!form.contains_key("client_secret"));

    let (header, claims) = verified(&form["client_assertion"]);
    assert_eq!(header["alg"], "PS256");
    assert_eq!(header["typ"], "JWT");
    let thumbprint = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &p.leaf_der);
    assert_eq!(
        header["x5t#S256"],
        URL_SAFE_NO_PAD.encode(thumbprint.as_ref())
    );
    assert!(header.get("x5c").is_none());
    assert_eq!(
        claims["aud"],
        format!("{}/cert/oauth2/v2.0/token", aad.base_url())
    );
    assert_eq!(claims["aud"], aad.token_url("cert"));
    assert_eq!(claims["iss"], CLIENT_ID);
    assert_eq!(claims["sub"], CLIENT_ID);
    assert_eq!(claims["jti"].as_str().unwrap().len(), 36);
    let iat = claims["iat"].as_u64().unwrap();
    assert_eq!(claims["nbf"].as_u64(), Some(iat));
    assert_eq!(claims["exp"].as_u64(), Some(iat + 600));
    let now = crate::support::now_unix();
    assert!(iat.abs_diff(now) < 60, "iat {iat} is now ({now})");

    // The next token request reuses the same assertion (same jti) while it has time left.
    cred.get_token(&TokenRequest::new("https://ml.azure.com/.default"))
        .await
        .unwrap();
    let second = aad.last_request().unwrap().form;
    assert_eq!(second["client_assertion"], form["client_assertion"]);
    assert_eq!(aad.count("cert"), 2);
}

#[tokio::test]
async fn pkcs12_certificate_with_send_chain_adds_x5c() {
    let _trace = trace_init();
    let aad = MockAad::start().await;
    let dir = TempDir::new();
    let file = dir.path().join("sp.pfx");
    std::fs::write(&file, pfx("pfx-password")).unwrap();
    let cred = ClientCertificateCredential::new(
        spec("chain", file, Some("pfx-password"), true),
        aad.entra_client(),
    );
    cred.get_token(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
    let form = aad.last_request().unwrap().form;
    let (header, claims) = verified(&form["client_assertion"]);
    let x5c: Vec<Vec<u8>> = header["x5c"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| STANDARD.decode(c.as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(x5c, vec![pki().leaf_der.clone(), pki().ca_der.clone()]);
    assert_eq!(claims["aud"], aad.token_url("chain"));
}

#[tokio::test]
async fn a_rejected_assertion_is_replaced_by_a_new_one() {
    let _trace = trace_init();
    let aad = MockAad::start().await;
    let dir = TempDir::new();
    let p = pki();
    let file = dir.file(
        "sp.pem",
        &(p.key_pem.clone() + &p.leaf_pem + &p.ca_pem),
        0o600,
    );
    let cred =
        ClientCertificateCredential::new(spec("rejected", file, None, false), aad.entra_client());
    let expired = r#"{"error":"invalid_client","error_description":"AADSTS700024: Client assertion is not within its valid time range.","error_codes":[700024]}"#;
    aad.script(
        "rejected",
        [Behavior::json(StatusCode::BAD_REQUEST, expired)],
    );
    let Err(CredentialError::Failed(e)) = cred.get_token(&TokenRequest::new(ARM_SCOPE)).await
    else {
        panic!("expected the scripted rejection");
    };
    assert_eq!(e.kind, TokenErrorKind::CredentialRejected);
    cred.get_token(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
    let requests = aad.requests_for("rejected");
    assert_eq!(requests.len(), 2);
    let jti = |i: usize| verified(&requests[i].form["client_assertion"]).1["jti"].clone();
    assert_ne!(jti(0), jti(1));
}

#[tokio::test]
async fn an_unusable_certificate_is_rejected_without_contacting_entra() {
    let _trace = trace_init();
    let aad = MockAad::start().await;
    let dir = TempDir::new();
    let pfx_file = dir.path().join("sp.pfx");
    std::fs::write(&pfx_file, pfx("canary-PFX-right")).unwrap();
    let cases = [
        (
            spec("t", dir.path().join("missing.pem"), None, false),
            "missing.pem",
            "No such file",
        ),
        (
            spec("t", pfx_file.clone(), Some("canary-PFX-wrong"), false),
            "sp.pfx",
            "wrong password",
        ),
        (
            spec(
                "t",
                dir.file("cert-only.pem", &pki().leaf_pem, 0o600),
                None,
                false,
            ),
            "cert-only.pem",
            "no private key",
        ),
    ];
    for (spec, name, why) in cases {
        let cred = ClientCertificateCredential::new(spec, aad.entra_client());
        let Err(CredentialError::Failed(e)) = cred.get_token(&TokenRequest::new(ARM_SCOPE)).await
        else {
            panic!("{name}: expected a failure");
        };
        assert_eq!(e.kind, TokenErrorKind::CredentialRejected, "{name}");
        assert_eq!(e.source, "client_certificate");
        assert!(e.message.contains(name), "{}", e.message);
        assert!(e.message.contains(why), "{}", e.message);
        assert!(!format!("{e:?} {cred:?}").contains("canary-PFX"));
    }
    assert_eq!(aad.total_count(), 0);
}

#[tokio::test]
async fn environment_certificate_variables_with_a_sane_chain_flag() {
    let _trace = trace_init();
    let aad = MockAad::start().await;
    let dir = TempDir::new();
    let file = dir.path().join("sp.pfx");
    std::fs::write(&file, pfx("env-password")).unwrap();
    for (flag, want_chain) in [
        ("true", true),
        ("1", true),
        ("false", false),
        ("0", false),
        ("", false),
    ] {
        let env = aml_auth_proxy::env::MapEnv::new()
            .with("AZURE_TENANT_ID", "envcert")
            .with("AZURE_CLIENT_ID", CLIENT_ID)
            .with("AZURE_CLIENT_CERTIFICATE_PATH", file.display().to_string())
            .with("AZURE_CLIENT_CERTIFICATE_PASSWORD", "env-password")
            .with("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN", flag);
        let cred = aml_auth_proxy::auth::EnvironmentCredential::from_env(&env, &aad.entra_client());
        let token = cred.get_token(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
        assert_eq!(&*token.source, "environment");
        let form = aad.last_request().unwrap().form;
        assert_eq!(form["client_id"], CLIENT_ID);
        assert!(!form.contains_key("client_secret"));
        let (header, _) = verified(&form["client_assertion"]);
        assert_eq!(
            header.get("x5c").is_some(),
            want_chain,
            "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN={flag:?}"
        );
    }
}

#[tokio::test]
async fn sdk_auth_file_with_a_client_certificate() {
    let _trace = trace_init();
    let aad = MockAad::start().await;
    let dir = TempDir::new();
    let pem = format!("{}{}", pki().key_pem, pki().leaf_pem);
    dir.file("sp.pem", &pem, 0o600);
    let json = serde_json::json!({"clientId": CLIENT_ID, "clientCertificate": "sp.pem", "tenantId": "authcert",
        "activeDirectoryEndpointUrl": aad.base_url()});
    let auth = dir.file("auth.json", &json.to_string(), 0o600);
    let cred = aml_auth_proxy::auth::SdkAuthFileCredential::from_file(
        aml_auth_proxy::auth::SdkAuthFileCredentialOptions { path: auth },
        &aad.entra_client(),
    );
    cred.get_token(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
    let form = aad.last_request().unwrap().form;
    let (_, claims) = verified(&form["client_assertion"]);
    assert_eq!(
        claims["aud"],
        aad.token_url("authcert"),
        "relative certificate path resolved next to the file"
    );
}

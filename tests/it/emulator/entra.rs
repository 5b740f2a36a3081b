//! The emulator's Entra ID: token grants, authorize with PKCE, device code, metadata, and its failure rules.

use aws_lc_rs::rsa::PublicKeyComponents;
use aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{APP, claims, client_credentials, counts, fault, post_form, start, token};
use crate::support::{get, json_body, request, trace_init};

const ML: &str = "https://ml.azure.com/.default";
const ARM: &str = "https://management.azure.com/.default";
const CP1: &str = r#"{"access_token":{"xms_cc":{"values":["CP1"]}}}"#;

#[tokio::test]
async fn client_credentials_tokens_are_rs256_jwts_that_the_published_keys_verify() {
    let _trace = trace_init();
    let emulator = start().await;
    let authority = &emulator.urls().authority_host;
    let (status, headers, body) = client_credentials(&emulator, "contoso", ML, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["cache-control"], "no-store, no-cache");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599, "a JSON number, as v2 sends");
    let access = body["access_token"].as_str().unwrap();

    // The metadata points at the keys; the keys verify the token's signature.
    let (_, _, config) = get(&format!(
        "{authority}/contoso/v2.0/.well-known/openid-configuration"
    ))
    .await;
    let config = json_body(&config);
    assert_eq!(
        config["token_endpoint"],
        format!("{authority}/contoso/oauth2/v2.0/token")
    );
    assert_eq!(config["issuer"], format!("{authority}/contoso/v2.0"));
    let (_, _, jwks) = get(config["jwks_uri"].as_str().unwrap()).await;
    let key = &json_body(&jwks)["keys"][0];
    let n = URL_SAFE_NO_PAD.decode(key["n"].as_str().unwrap()).unwrap();
    let e = URL_SAFE_NO_PAD.decode(key["e"].as_str().unwrap()).unwrap();
    let (signed, signature) = access.rsplit_once('.').unwrap();
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(signed.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], key["kid"]);
    PublicKeyComponents { n: &n, e: &e }
        .verify(
            &RSA_PKCS1_2048_8192_SHA256,
            signed.as_bytes(),
            &URL_SAFE_NO_PAD.decode(signature).unwrap(),
        )
        .expect("the JWKS verifies the token");

    let c = claims(access);
    assert_eq!(c["aud"], "https://ml.azure.com");
    assert_eq!(c["iss"], format!("{authority}/contoso/v2.0"));
    assert_eq!(c["tid"], "contoso");
    assert_eq!(c["appid"], APP);
    assert_eq!(c["azp"], APP);
    assert_eq!(c["appidacr"], "1");
    assert_eq!(c["idtyp"], "app");
    assert_eq!(c["ver"], "2.0");
    assert_eq!(c["sub"], c["oid"]);
    let (iat, nbf, exp) = (
        c["iat"].as_i64().unwrap(),
        c["nbf"].as_i64().unwrap(),
        c["exp"].as_i64().unwrap(),
    );
    assert_eq!(nbf, iat);
    assert!((3599..=3600).contains(&(exp - iat)), "{c}");
    assert!(c.get("xms_cc").is_none(), "no capability was requested");

    // The same app in the same tenant is the same object; CP1 shows up as xms_cc.
    let (_, _, again) = client_credentials(&emulator, "contoso", ARM, &[("claims", CP1)]).await;
    let c2 = claims(again["access_token"].as_str().unwrap());
    assert_eq!(c2["oid"], c["oid"]);
    assert_eq!(c2["aud"], "https://management.azure.com");
    assert_eq!(c2["xms_cc"], json!(["CP1"]));
    // Another tenant, another object id.
    let other = claims(&token(&emulator, "fabrikam", ML).await);
    assert_ne!(other["oid"], c["oid"]);
}

#[tokio::test]
async fn malformed_token_requests_get_entra_errors() {
    let _trace = trace_init();
    let emulator = start().await;
    let authority = emulator.urls().authority_host.clone();
    // A scope that is not `<resource>/.default`: the documented AADSTS70011 body, naming the scope.
    let (status, _, body) =
        client_credentials(&emulator, "contoso", "https://ml.azure.com/score", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_scope");
    assert_eq!(body["error_codes"], json!([70011]));
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("The scope https://ml.azure.com/score isn't valid."),
        "{body}"
    );
    // No secret and no assertion.
    let url = format!("{authority}/contoso/oauth2/v2.0/token");
    let (status, _, body) = post_form(
        &url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("scope", ML),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json_body(&body)["error_codes"], json!([7000218]));
    // An unknown grant, a malformed tenant, malformed claims.
    let (status, _, body) =
        post_form(&url, &[("grant_type", "password"), ("client_id", APP)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json_body(&body)["error"], "unsupported_grant_type");
    let (status, _, body) = post_form(
        &format!("{authority}/bad%20tenant/oauth2/v2.0/token"),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json_body(&body)["error_codes"], json!([900023]));
    let (status, _, body) =
        client_credentials(&emulator, "contoso", ML, &[("claims", "{nope")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_request");

    // The v1 endpoint takes `resource=` and answers every number as a string.
    let (status, _, body) = post_form(
        &format!("{authority}/contoso/oauth2/token"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_secret", "s"),
            ("resource", "https://management.core.windows.net/"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let body = json_body(&body);
    assert!(
        body["expires_in"].is_string() && body["expires_on"].is_string(),
        "{body}"
    );
    assert_eq!(body["resource"], "https://management.core.windows.net/");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["aud"],
        "https://management.core.windows.net/"
    );
}

#[tokio::test]
async fn conditional_access_mfa_and_invalid_client_rules_answer_entra_bodies() {
    let _trace = trace_init();
    let emulator = start().await;
    let control = format!("{}/faults", emulator.urls().control);
    // Rules through the control API, as a spec and as JSON.
    let (status, headers, rule) = request(
        Method::POST,
        &control,
        &[],
        "conditional-access,tenant=blocked",
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&rule)
    );
    assert!(
        headers["location"]
            .to_str()
            .unwrap()
            .starts_with("/__control/faults/")
    );
    assert_eq!(
        json_body(&rule)["spec"],
        "conditional-access,on=token,tenant=blocked"
    );
    let (status, _, _) = request(
        Method::POST,
        &control,
        &[("content-type", "application/json")],
        r#"{"kind": "mfa", "tenant": "stepup", "count": 1}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    emulator.add_fault(fault("invalid-client,tenant=rotated"));

    let (status, _, ca) = client_credentials(&emulator, "blocked", ML, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        ca["error"], "invalid_grant",
        "a service principal gets invalid_grant"
    );
    assert_eq!(ca["error_codes"], json!([53003]));
    assert_eq!(ca["suberror"], "message_only");
    assert!(ca["claims"].as_str().unwrap().contains("capolids"), "{ca}");
    let text = ca["error_description"].as_str().unwrap();
    assert!(
        text.starts_with("AADSTS53003: Access has been blocked by Conditional Access policies.")
    );
    assert!(
        text.contains(ca["trace_id"].as_str().unwrap()),
        "fresh ids inside the text too"
    );

    let (status, _, mfa) = client_credentials(&emulator, "stepup", ML, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(mfa["error"], "interaction_required");
    assert_eq!(mfa["error_codes"], json!([50079]));
    let demanded: Value = serde_json::from_str(mfa["claims"].as_str().unwrap()).unwrap();
    assert!(
        demanded["access_token"]["polids"]["essential"]
            .as_bool()
            .unwrap()
    );
    // `count=1`: the next request of that tenant gets a token.
    assert_eq!(
        client_credentials(&emulator, "stepup", ML, &[]).await.0,
        StatusCode::OK
    );

    let (status, _, rejected) = client_credentials(&emulator, "rotated", ML, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(rejected["error"], "invalid_client");
    assert_eq!(rejected["error_codes"], json!([7000215]));
    // Other tenants are untouched.
    assert_eq!(
        client_credentials(&emulator, "contoso", ML, &[]).await.0,
        StatusCode::OK
    );

    let (_, _, list) = get(&control).await;
    let list = json_body(&list);
    assert_eq!(list[0]["applied"], 1);
    assert_eq!(list[1]["remaining"], 0);
    assert_eq!(
        counts(&emulator, "token_requests", "outcome"),
        [
            ("conditional_access".to_owned(), 1),
            ("invalid_client".to_owned(), 1),
            ("issued".to_owned(), 2),
            ("mfa".to_owned(), 1)
        ]
        .into()
    );
    // Removing every rule lets the blocked tenant through.
    assert_eq!(
        request(Method::DELETE, &control, &[], "").await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        client_credentials(&emulator, "blocked", ML, &[]).await.0,
        StatusCode::OK
    );
    // A bad spec is a 400 naming the problem.
    let (status, _, body) = request(Method::POST, &control, &[], "throttle=soon").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("whole number of seconds"));
}

#[tokio::test]
async fn throttling_and_outages_answer_with_their_status_and_retry_after() {
    let _trace = trace_init();
    let emulator = start().await;
    emulator.add_fault(fault("throttle=17,count=1"));
    emulator.add_fault(fault("status=500,count=1"));
    let (status, headers, body) = client_credentials(&emulator, "t", ML, &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "17");
    assert_eq!(body["error"], "temporarily_unavailable");
    let (status, _, body) = client_credentials(&emulator, "t", ML, &[]).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"], "server_error");
    assert!(body["trace_id"].is_string());
    assert_eq!(
        client_credentials(&emulator, "t", ML, &[]).await.0,
        StatusCode::OK
    );
    // A short lifetime shows in expires_in and exp.
    emulator.add_fault(fault("lifetime=5s"));
    let (_, _, body) = client_credentials(&emulator, "t", ML, &[]).await;
    assert_eq!(body["expires_in"], 5);
    let c = claims(body["access_token"].as_str().unwrap());
    assert!((5..=6).contains(&(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap())));
}

#[tokio::test]
async fn a_device_code_sign_in_completes_and_its_refresh_tokens_rotate() {
    let _trace = trace_init();
    let emulator = start().await;
    let authority = emulator.urls().authority_host.clone();
    let scope = "https://ml.azure.com/.default openid profile offline_access";
    let (status, _, start) = post_form(
        &format!("{authority}/organizations/oauth2/v2.0/devicecode"),
        &[("client_id", APP), ("scope", scope)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let start = json_body(&start);
    let device_code = start["device_code"].as_str().unwrap();
    assert_eq!(start["user_code"].as_str().unwrap().len(), 9);
    assert!(
        start["message"]
            .as_str()
            .unwrap()
            .contains(start["user_code"].as_str().unwrap())
    );
    assert_eq!(
        start["verification_uri"],
        format!("{authority}/devicelogin")
    );

    let url = format!("{authority}/organizations/oauth2/v2.0/token");
    let poll = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("client_id", APP),
        ("device_code", device_code),
        ("client_info", "1"),
    ];
    let (status, _, pending) = post_form(&url, &poll).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let pending = json_body(&pending);
    assert_eq!(pending["error"], "authorization_pending");
    assert_eq!(pending["error_codes"], json!([70016]));
    let (status, _, signed_in) = post_form(&url, &poll).await;
    assert_eq!(status, StatusCode::OK);
    let signed_in = json_body(&signed_in);
    let access = claims(signed_in["access_token"].as_str().unwrap());
    assert_eq!(access["aud"], "https://ml.azure.com");
    assert_eq!(access["idtyp"], "user");
    assert_eq!(access["scp"], "user_impersonation");
    assert_eq!(access["upn"], "emulator.user@contoso.example");
    assert_eq!(
        access["tid"],
        aml_auth_proxy::emulator::DEFAULT_TENANT,
        "`organizations` signs in to the emulator's tenant"
    );
    let info: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(signed_in["client_info"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(info["uid"], access["oid"]);
    assert_eq!(claims(signed_in["id_token"].as_str().unwrap())["aud"], APP);
    // The device code is spent.
    assert_eq!(
        json_body(&post_form(&url, &poll).await.2)["error"],
        "invalid_grant"
    );

    // Refresh tokens rotate; the used one then gets the recorded revocation.
    let first = signed_in["refresh_token"].as_str().unwrap();
    let refresh = |rt: &str| {
        let rt = rt.to_owned();
        let url = url.clone();
        async move {
            post_form(
                &url,
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", APP),
                    ("refresh_token", &rt),
                    ("scope", scope),
                ],
            )
            .await
        }
    };
    let (status, _, body) = refresh(first).await;
    assert_eq!(status, StatusCode::OK);
    let second = json_body(&body)["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(second, first);
    let (status, _, body) = refresh(first).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let revoked = json_body(&body);
    assert_eq!(revoked["error_codes"], json!([50173]));
    assert_eq!(revoked["suberror"], "bad_token");
    // The control API revokes every refresh token.
    let (status, _, body) = request(
        Method::POST,
        &format!("{}/revoke-refresh-tokens", emulator.urls().control),
        &[],
        "",
    )
    .await;
    assert_eq!(
        (status, json_body(&body)["revoked"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    assert_eq!(
        json_body(&refresh(&second).await.2)["error_codes"],
        json!([50173])
    );
}

/// The fields of the auto-posting form Entra ID answers with for `response_mode=form_post`.
fn form_fields(html: &str) -> Vec<(String, String)> {
    html.split("<input type=\"hidden\" ")
        .skip(1)
        .map(|input| {
            let attr = |name: &str| {
                let start = input.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                input[start..start + input[start..].find('"').unwrap()].to_owned()
            };
            (attr("name"), attr("value"))
        })
        .collect()
}

#[tokio::test]
async fn authorization_code_with_pkce_over_form_post_and_query() {
    let _trace = trace_init();
    let emulator = start().await;
    let authority = emulator.urls().authority_host.clone();
    let verifier = "BDdJmTPSIAoCLrZaWk6~v0jn8gfyOwKqc_hG9HVRutl";
    let challenge = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ));
    let authorize = |mode: &str, redirect: &str| {
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("client_id", "04b07795-8ddb-461a-bbee-02f9e1bf7b46"),
                ("response_type", "code"),
                ("redirect_uri", redirect),
                (
                    "scope",
                    "https://ml.azure.com/.default offline_access openid profile",
                ),
                ("state", "KmTecQosfXgyrDxk"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("nonce", "n-0S6_WzA2Mj"),
                ("client_info", "1"),
                ("login_hint", "ada@contoso.example"),
                ("response_mode", mode),
            ])
            .finish();
        format!("{authority}/organizations/oauth2/v2.0/authorize?{query}")
    };
    // form_post: a page whose form posts code, client_info, state and session_state to the redirect URI.
    let (status, headers, page) = get(&authorize("form_post", "http://localhost:8400")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = String::from_utf8(page.to_vec()).unwrap();
    assert!(page.contains("action=\"http://localhost:8400\""), "{page}");
    let fields = form_fields(&page);
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(field("state").as_deref(), Some("KmTecQosfXgyrDxk"));
    assert!(field("client_info").is_some() && field("session_state").is_some());
    let code = field("code").unwrap();

    let url = format!("{authority}/organizations/oauth2/v2.0/token");
    let redeem = |code: String, verifier: &'static str, redirect: &'static str| {
        let url = url.clone();
        async move {
            post_form(
                &url,
                &[
                    ("client_id", "04b07795-8ddb-461a-bbee-02f9e1bf7b46"),
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", redirect),
                    ("code_verifier", verifier),
                    (
                        "scope",
                        "https://ml.azure.com/.default offline_access openid profile",
                    ),
                ],
            )
            .await
        }
    };
    let (status, _, tokens) = redeem(code.clone(), verifier, "http://localhost:8400").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&tokens)
    );
    let tokens = json_body(&tokens);
    let access = claims(tokens["access_token"].as_str().unwrap());
    assert_eq!(
        access["preferred_username"], "ada@contoso.example",
        "login_hint names the user"
    );
    assert_eq!(access["appidacr"], "0", "a public client");
    assert_eq!(
        claims(tokens["id_token"].as_str().unwrap())["nonce"],
        "n-0S6_WzA2Mj"
    );
    // A code is redeemed once.
    let (status, _, again) = redeem(code, verifier, "http://localhost:8400").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json_body(&again)["error_codes"], json!([54005]));

    // query mode: a 302 back to the loopback listener; a wrong verifier and a wrong redirect_uri are refused.
    let (status, headers, _) = get(&authorize("query", "http://127.0.0.1:8401/cb")).await;
    assert_eq!(status, StatusCode::FOUND);
    let location = headers["location"].to_str().unwrap();
    assert!(
        location.starts_with("http://127.0.0.1:8401/cb?code="),
        "{location}"
    );
    let code = form_urlencoded::parse(location.split_once('?').unwrap().1.as_bytes())
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let (status, _, body) = redeem(
        code,
        "a-verifier-that-does-not-hash-to-the-challenge",
        "http://127.0.0.1:8401/cb",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json_body(&body)["error_codes"], json!([501481]));
    let (_, headers, _) = get(&authorize("query", "http://127.0.0.1:8401/cb")).await;
    let location = headers["location"].to_str().unwrap().to_owned();
    let code = location
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let code = form_urlencoded::parse(format!("c={code}").as_bytes())
        .next()
        .unwrap()
        .1
        .into_owned();
    let (status, _, body) = redeem(code, verifier, "http://127.0.0.1:8401/other").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json_body(&body)["error_codes"], json!([500112]));

    // A Conditional Access rule on authorize: an error redirect carrying AADSTS53003 and the state.
    emulator.add_fault(fault("conditional-access,on=authorize"));
    let (status, headers, _) = get(&authorize("query", "http://localhost:8400")).await;
    assert_eq!(status, StatusCode::FOUND);
    let location = headers["location"].to_str().unwrap();
    let params: Vec<(String, String)> =
        form_urlencoded::parse(location.split_once('?').unwrap().1.as_bytes())
            .into_owned()
            .collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(param("error"), Some("access_denied"));
    assert!(
        param("error_description")
            .unwrap()
            .starts_with("AADSTS53003:")
    );
    assert_eq!(param("state"), Some("KmTecQosfXgyrDxk"));
    assert_eq!(counts(&emulator, "authorize_requests", "pkce")["s256"], 4);
}

#[tokio::test]
async fn authorize_never_sends_a_browser_off_loopback() {
    let _trace = trace_init();
    let emulator = start().await;
    let authority = &emulator.urls().authority_host;
    for redirect in [
        "https://evil.example/cb",
        "http://localhost/no-port",
        "http://localhost.evil.example:8400/",
    ] {
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("client_id", APP),
                ("response_type", "code"),
                ("redirect_uri", redirect),
                ("scope", "openid"),
            ])
            .finish();
        let (status, headers, page) =
            get(&format!("{authority}/common/oauth2/v2.0/authorize?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{redirect}");
        assert!(headers.get("location").is_none(), "{redirect}");
        assert!(
            String::from_utf8_lossy(&page).contains("AADSTS50011"),
            "{redirect}"
        );
    }
}

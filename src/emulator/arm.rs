//! Azure Resource Manager for one Azure ML workspace and its online endpoints.
//!
//! Every call needs `?api-version=` and a live Entra ID token for ARM (`aud` `https://management.azure.com` or
//! `https://management.core.windows.net`, with or without the trailing `/`); otherwise 400/401 in ARM's own
//! shapes. Paths are matched case-insensitively, as ARM does.
//!
//! | method | path (under `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/`) | answer |
//! |---|---|---|
//! | GET | `workspaces` | `{"value": [workspace]}` |
//! | GET | `workspaces/{ws}` | the workspace: `properties.discoveryUrl`, `properties.mlFlowTrackingUri` |
//! | GET | `workspaces/{ws}/onlineEndpoints` | `{"value": [endpoint…]}` |
//! | GET | `workspaces/{ws}/onlineEndpoints/{name}` | `properties.authMode` (Key, AMLToken, AADToken), `properties.scoringUri` |
//! | POST | `…/onlineEndpoints/{name}/listKeys` | `{primaryKey, secondaryKey}` (Key endpoints) |
//! | POST | `…/onlineEndpoints/{name}/token` | `{accessToken, tokenType, expiryTimeUtc, refreshAfterTimeUtc}` (AMLToken endpoints; epoch seconds) |
//! | POST | `…/onlineEndpoints/{name}/regenerateKeys` | `{"keyType": "Primary"\|"Secondary"[, "keyValue"]}` → 202 with `Azure-AsyncOperation` and `Location`; the key changes at once |
//!
//! `GET /subscriptions` and `GET /subscriptions/{s}` list the one subscription; the long-running-operation URLs
//! of `regenerateKeys` answer `Succeeded`. Unknown subscriptions, resource groups, workspaces and endpoints get
//! ARM's 404s; a `deny` rule gets 403 `AuthorizationFailed` naming the action.

use http::{Method, Request, Response, StatusCode, header, request::Parts};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};

use super::faults::{ArmAction, Challenge, FaultKind, Probe, Target, now_secs};
use super::jwt::{self, Presented, Rejected};
use super::serve::{self, Body};
use super::stats::Area;
use super::{AuthMode, Endpoint, Keys, State};

/// The audiences ARM accepts.
const ARM_AUDIENCES: [&str; 2] = [
    "https://management.azure.com",
    "https://management.core.windows.net",
];

/// What a request asks of ARM.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Operation {
    ListSubscriptions,
    GetSubscription(String),
    ListWorkspaces(Scope),
    GetWorkspace(Scope),
    ListEndpoints(Scope),
    GetEndpoint(Scope, String),
    ListKeys(Scope, String),
    Token(Scope, String),
    RegenerateKeys(Scope, String),
    AsyncStatus(String, String),
    Unknown,
}

/// The subscription, resource group and (for most operations) workspace a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scope {
    subscription: String,
    resource_group: String,
    workspace: String,
}

// === impl Operation ===

impl Operation {
    /// Parses an ARM path.
    fn parse(path: &str) -> Self {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let lower: Vec<String> = segments.iter().map(|s| s.to_ascii_lowercase()).collect();
        let l: Vec<&str> = lower.iter().map(String::as_str).collect();
        let s = |i: usize| segments[i].to_owned();
        let scope = |ws: String| Scope {
            subscription: s(1),
            resource_group: s(3),
            workspace: ws,
        };
        match l.as_slice() {
            ["subscriptions"] => Operation::ListSubscriptions,
            ["subscriptions", _] => Operation::GetSubscription(s(1)),
            [
                "subscriptions",
                _,
                "providers",
                "microsoft.machinelearningservices",
                "locations",
                _,
                "mfeoperationsstatus" | "mfeoperationresults",
                _,
            ] => Operation::AsyncStatus(s(1), s(7)),
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                "microsoft.machinelearningservices",
                "workspaces",
            ] => Operation::ListWorkspaces(scope(String::new())),
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                "microsoft.machinelearningservices",
                "workspaces",
                _,
                rest @ ..,
            ] => {
                let scope = scope(s(7));
                match rest {
                    [] => Operation::GetWorkspace(scope),
                    ["onlineendpoints"] => Operation::ListEndpoints(scope),
                    ["onlineendpoints", _] => Operation::GetEndpoint(scope, s(9)),
                    ["onlineendpoints", _, "listkeys"] => Operation::ListKeys(scope, s(9)),
                    ["onlineendpoints", _, "token"] => Operation::Token(scope, s(9)),
                    ["onlineendpoints", _, "regeneratekeys"] => {
                        Operation::RegenerateKeys(scope, s(9))
                    }
                    _ => Operation::Unknown,
                }
            }
            _ => Operation::Unknown,
        }
    }

    /// How `/__stats` names it.
    fn name(&self) -> &'static str {
        match self {
            Operation::ListSubscriptions => "subscriptions_list",
            Operation::GetSubscription(..) => "subscription_get",
            Operation::ListWorkspaces(..) => "workspaces_list",
            Operation::GetWorkspace(..) => "workspace_get",
            Operation::ListEndpoints(..) => "endpoints_list",
            Operation::GetEndpoint(..) => "endpoint_get",
            Operation::ListKeys(..) => "list_keys",
            Operation::Token(..) => "token",
            Operation::RegenerateKeys(..) => "regenerate_keys",
            Operation::AsyncStatus(..) => "operation_status",
            Operation::Unknown => "unknown",
        }
    }

    fn method(&self) -> Method {
        match self {
            Operation::ListKeys(..) | Operation::Token(..) | Operation::RegenerateKeys(..) => {
                Method::POST
            }
            _ => Method::GET,
        }
    }

    /// The RBAC action and resource type a `deny` rule is checked against.
    fn action(&self) -> Option<(ArmAction, &'static str)> {
        const WS: &str = "workspaces";
        const EP: &str = "workspaces/onlineEndpoints";
        match self {
            Operation::ListWorkspaces(..) | Operation::GetWorkspace(..) => {
                Some((ArmAction::Read, WS))
            }
            Operation::ListEndpoints(..) | Operation::GetEndpoint(..) => {
                Some((ArmAction::Read, EP))
            }
            Operation::ListKeys(..) => Some((ArmAction::ListKeys, EP)),
            Operation::Token(..) => Some((ArmAction::Token, EP)),
            Operation::RegenerateKeys(..) => Some((ArmAction::RegenerateKeys, EP)),
            _ => None,
        }
    }

    fn endpoint(&self) -> Option<&str> {
        match self {
            Operation::GetEndpoint(_, n)
            | Operation::ListKeys(_, n)
            | Operation::Token(_, n)
            | Operation::RegenerateKeys(_, n) => Some(n),
            _ => None,
        }
    }
}

/// ARM's error body.
fn arm_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    serve::json(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

/// The ARM listener.
pub(crate) async fn handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let operation = Operation::parse(parts.uri.path());
    let body = match serve::read_body(body, serve::SMALL_BODY).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let response = answer(state, &parts, &operation, &body).await;
    let status = response.status().as_u16().to_string();
    state.stats.record(
        Area::Arm,
        &[
            ("operation", Some(operation.name())),
            ("endpoint", operation.endpoint()),
            ("status", Some(&status)),
        ],
    );
    let correlation = serve::header_text(&parts.headers, "x-ms-correlation-request-id")
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let response = serve::with_header(
        response,
        "x-ms-request-id",
        uuid::Uuid::new_v4().to_string(),
    );
    serve::with_header(response, "x-ms-correlation-request-id", correlation)
}

async fn answer(
    state: &State,
    parts: &Parts,
    operation: &Operation,
    body: &[u8],
) -> Response<Body> {
    let authority = &state.urls.authority_host;
    let claims = match jwt::check_bearer(&state.signer, &parts.headers, now_secs()) {
        Ok(c) if jwt::is_entra(&c) => c,
        Ok(_) => return unauthorized(authority, Rejected::BadSignature),
        Err(Presented::Missing) => {
            return serve::with_header(
                arm_error(
                    StatusCode::UNAUTHORIZED,
                    "AuthenticationFailed",
                    "Authentication failed. The 'Authorization' header is missing.",
                ),
                header::WWW_AUTHENTICATE,
                format!(
                    "Bearer authorization_uri=\"{authority}/\", error=\"invalid_token\", error_description=\"The authentication failed because of missing 'Authorization' header.\""
                ),
            );
        }
        Err(Presented::Rejected(why)) => return unauthorized(authority, why),
    };
    let audience = claims
        .get("aud")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !ARM_AUDIENCES.contains(&audience.trim_end_matches('/')) {
        return serve::with_header(
            arm_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationTokenAudience",
                &format!(
                    "The access token has been obtained for wrong audience or resource '{audience}'. It should exactly match with one of the allowed audiences 'https://management.core.windows.net/','https://management.core.windows.net','https://management.azure.com/','https://management.azure.com'."
                ),
            ),
            header::WWW_AUTHENTICATE,
            format!(
                "Bearer authorization_uri=\"{authority}/\", error=\"invalid_token\", error_description=\"The access token is from the wrong audience or resource.\""
            ),
        );
    }
    let pairs = serve::query_pairs(parts.uri.query());
    if serve::get(&pairs, "api-version").is_none_or(str::is_empty) {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        );
    }
    if *operation == Operation::Unknown {
        return arm_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!(
                "The emulator's Resource Manager serves Microsoft.MachineLearningServices workspaces and online endpoints only; {} {} is not one of its operations.",
                parts.method,
                parts.uri.path()
            ),
        );
    }
    if parts.method != operation.method() {
        return arm_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!(
                "The emulator answers {} on this path; it does not create, change or delete resources.",
                operation.method()
            ),
        );
    }
    let tenant = claims.get("tid").and_then(Value::as_str);
    let client = claims.get("appid").and_then(Value::as_str);
    let decision = state
        .faults
        .decide_and_wait(&Probe {
            target: Target::Arm,
            tenant,
            client,
            scope: None,
            grant: None,
            path: parts.uri.path(),
            endpoint: operation.endpoint(),
            action: operation.action().map(|(a, _)| a),
        })
        .await;
    if let Some(kind) = &decision.failure {
        return fault_answer(state, kind, operation, &claims);
    }
    if let Some(challenge) = &decision.cae
        && !challenge.satisfied_by(&claims)
    {
        state.faults.challenged(challenge.rule);
        return cae_challenge(authority, challenge);
    }
    if let Some(response) = missing_resource(state, operation) {
        return response;
    }
    let ws = &state.settings.workspace;
    match operation {
        Operation::ListSubscriptions => serve::json(
            StatusCode::OK,
            &json!({"value": [subscription(state)], "count": {"type": "Total", "value": 1}}),
        ),
        Operation::GetSubscription(_) => serve::json(StatusCode::OK, &subscription(state)),
        Operation::ListWorkspaces(_) => {
            serve::json(StatusCode::OK, &json!({"value": [workspace(state)]}))
        }
        Operation::GetWorkspace(_) => serve::json(StatusCode::OK, &workspace(state)),
        Operation::ListEndpoints(_) => serve::json(
            StatusCode::OK,
            &json!({"value": state.endpoints.iter().map(|e| endpoint(state, e)).collect::<Vec<_>>()}),
        ),
        Operation::GetEndpoint(_, name) => match find(state, name) {
            Some(e) => serve::json(StatusCode::OK, &endpoint(state, e)),
            None => not_found_endpoint(ws, name),
        },
        Operation::ListKeys(_, name) => match find(state, name) {
            Some(e) if e.auth_mode == AuthMode::Key => {
                let keys = crate::lock(&e.keys).clone();
                serve::json(
                    StatusCode::OK,
                    &json!({"primaryKey": keys.primary, "secondaryKey": keys.secondary}),
                )
            }
            Some(e) => wrong_mode(e, "listKeys", AuthMode::Key),
            None => not_found_endpoint(ws, name),
        },
        Operation::Token(_, name) => match find(state, name) {
            Some(e) if e.auth_mode == AuthMode::AmlToken => {
                let lifetime = decision
                    .lifetime
                    .unwrap_or(state.settings.aml_token_lifetime);
                aml_token(state, e, lifetime)
            }
            Some(e) => wrong_mode(e, "token", AuthMode::AmlToken),
            None => not_found_endpoint(ws, name),
        },
        Operation::RegenerateKeys(_, name) => match find(state, name) {
            Some(e) if e.auth_mode == AuthMode::Key => regenerate(state, e, &pairs, body),
            Some(e) => wrong_mode(e, "regenerateKeys", AuthMode::Key),
            None => not_found_endpoint(ws, name),
        },
        Operation::AsyncStatus(_, id) => serve::json(
            StatusCode::OK,
            &json!({"id": parts.uri.path(), "name": id, "status": "Succeeded"}),
        ),
        Operation::Unknown => arm_error(StatusCode::NOT_FOUND, "NotFound", "unknown operation"),
    }
}

/// 401 for a token ARM does not accept.
fn unauthorized(authority: &str, why: Rejected) -> Response<Body> {
    let code = match why {
        Rejected::Expired => "ExpiredAuthenticationToken",
        _ => "InvalidAuthenticationToken",
    };
    let description = why.description();
    serve::with_header(
        arm_error(StatusCode::UNAUTHORIZED, code, &format!("{description}.")),
        header::WWW_AUTHENTICATE,
        format!(
            "Bearer authorization_uri=\"{authority}/\", error=\"invalid_token\", error_description=\"{description}\""
        ),
    )
}

/// ARM's claims challenge: the older `error="invalid_token"` form with `claims`, as recorded from ARM.
fn cae_challenge(authority: &str, challenge: &Challenge) -> Response<Body> {
    let claims = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        challenge.claims().to_string(),
    );
    serve::with_header(
        arm_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "User session has been revoked.",
        ),
        header::WWW_AUTHENTICATE,
        format!(
            "Bearer authorization_uri=\"{authority}/\", error=\"invalid_token\", error_description=\"User session has been revoked\", claims=\"{claims}\""
        ),
    )
}

fn fault_answer(
    state: &State,
    kind: &FaultKind,
    operation: &Operation,
    claims: &Map<String, Value>,
) -> Response<Body> {
    match kind {
        FaultKind::Throttle { retry_after } => serve::with_header(
            arm_error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "The request is being throttled as the limit has been reached for operation type. Please refer to https://aka.ms/arm-throttling.",
            ),
            header::RETRY_AFTER,
            retry_after.to_string(),
        ),
        FaultKind::Status { code } => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let name = match code {
                500 => "InternalServerError",
                502 => "BadGateway",
                503 => "ServiceUnavailable",
                504 => "GatewayTimeout",
                _ => "EmulatedFailure",
            };
            arm_error(
                status,
                name,
                &format!("An emulated HTTP {code} from Resource Manager."),
            )
        }
        FaultKind::Deny { action } => {
            let (_, resource_type) = operation.action().unwrap_or((*action, "workspaces"));
            let oid = claims
                .get("oid")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let client = claims
                .get("upn")
                .or_else(|| claims.get("appid"))
                .and_then(Value::as_str)
                .unwrap_or(oid);
            let ws = &state.settings.workspace;
            let scope = match operation.endpoint() {
                Some(name) => format!("{}/onlineEndpoints/{name}", ws.id()),
                None => ws.id(),
            };
            arm_error(
                StatusCode::FORBIDDEN,
                "AuthorizationFailed",
                &format!(
                    "The client '{client}' with object id '{oid}' does not have authorization to perform action '{}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
                    action.permission(resource_type)
                ),
            )
        }
        _ => arm_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            &format!(
                "An emulated failure (`{}` does not apply to Resource Manager).",
                kind_name(kind)
            ),
        ),
    }
}

fn kind_name(kind: &FaultKind) -> &'static str {
    match kind {
        FaultKind::ConditionalAccess => "conditional-access",
        FaultKind::Mfa => "mfa",
        FaultKind::InvalidClient => "invalid-client",
        _ => "this rule",
    }
}

/// ARM's 404 when the subscription, resource group or workspace of the path is not the emulator's.
fn missing_resource(state: &State, operation: &Operation) -> Option<Response<Body>> {
    let ws = &state.settings.workspace;
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let subscription = match operation {
        Operation::GetSubscription(s) | Operation::AsyncStatus(s, _) => Some(s.as_str()),
        _ => None,
    };
    let scope = match operation {
        Operation::ListWorkspaces(s)
        | Operation::GetWorkspace(s)
        | Operation::ListEndpoints(s)
        | Operation::GetEndpoint(s, _)
        | Operation::ListKeys(s, _)
        | Operation::Token(s, _)
        | Operation::RegenerateKeys(s, _) => Some(s),
        _ => None,
    };
    let subscription = subscription.or(scope.map(|s| s.subscription.as_str()));
    if let Some(s) = subscription
        && !same(s, &ws.subscription_id)
    {
        return Some(arm_error(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            &format!("The subscription '{s}' could not be found."),
        ));
    }
    let scope = scope?;
    if !same(&scope.resource_group, &ws.resource_group) {
        return Some(arm_error(
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
            &format!(
                "Resource group '{}' could not be found.",
                scope.resource_group
            ),
        ));
    }
    if !scope.workspace.is_empty() && !same(&scope.workspace, &ws.name) {
        return Some(arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!(
                "The Resource 'Microsoft.MachineLearningServices/workspaces/{}' under resource group '{}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
                scope.workspace, scope.resource_group
            ),
        ));
    }
    None
}

fn not_found_endpoint(ws: &super::WorkspaceOptions, name: &str) -> Response<Body> {
    arm_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!(
            "The Resource 'Microsoft.MachineLearningServices/workspaces/{}/onlineEndpoints/{name}' under resource group '{}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
            ws.name, ws.resource_group
        ),
    )
}

fn wrong_mode(endpoint: &Endpoint, operation: &str, needs: AuthMode) -> Response<Body> {
    arm_error(
        StatusCode::BAD_REQUEST,
        "BadArgument",
        &format!(
            "{operation} is available for endpoints with authMode {}; '{}' uses {}.",
            needs.as_str(),
            endpoint.name,
            endpoint.auth_mode.as_str()
        ),
    )
}

fn find<'a>(state: &'a State, name: &str) -> Option<&'a Endpoint> {
    state
        .endpoints
        .iter()
        .find(|e| e.name.eq_ignore_ascii_case(name))
}

fn subscription(state: &State) -> Value {
    let id = &state.settings.workspace.subscription_id;
    json!({
        "id": format!("/subscriptions/{id}"),
        "subscriptionId": id,
        "tenantId": state.settings.tenant,
        "displayName": "aml-azure-emulator",
        "state": "Enabled",
    })
}

fn system_data() -> Value {
    json!({
        "createdAt": "2026-01-01T00:00:00.0000000Z",
        "createdBy": "emulator.user@contoso.example",
        "createdByType": "User",
        "lastModifiedAt": "2026-01-01T00:00:00.0000000Z",
    })
}

fn workspace(state: &State) -> Value {
    let ws = &state.settings.workspace;
    let urls = &state.urls.workspace;
    json!({
        "id": ws.id(),
        "name": ws.name,
        "type": "Microsoft.MachineLearningServices/workspaces",
        "location": ws.location,
        "tags": {},
        "etag": null,
        "properties": {
            "friendlyName": ws.name,
            "description": "A workspace of aml-azure-emulator",
            "tenantId": state.settings.tenant,
            "provisioningState": "Succeeded",
            "workspaceId": jwt::derived_guid(&["workspace", &ws.id()]),
            "publicNetworkAccess": "Enabled",
            "v1LegacyMode": false,
            "discoveryUrl": urls.discovery_url,
            "mlFlowTrackingUri": urls.mlflow_tracking_uri,
        },
        "identity": {
            "type": "SystemAssigned",
            "principalId": jwt::derived_guid(&["workspace-identity", &ws.id()]),
            "tenantId": state.settings.tenant,
        },
        "kind": "Default",
        "sku": {"name": "Basic", "tier": "Basic"},
        "systemData": system_data(),
    })
}

fn endpoint(state: &State, endpoint: &Endpoint) -> Value {
    let ws = &state.settings.workspace;
    let id = format!("{}/onlineEndpoints/{}", ws.id(), endpoint.name);
    json!({
        "id": id,
        "name": endpoint.name,
        "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
        "properties": {
            "description": format!("aml-azure-emulator endpoint ({})", endpoint.auth_mode.as_str()),
            "properties": {},
            "scoringUri": format!("{}/score", endpoint.origin),
            "swaggerUri": format!("{}/swagger.json", endpoint.origin),
            "authMode": endpoint.auth_mode.as_str(),
            "provisioningState": "Succeeded",
            "compute": null,
            "traffic": {"blue": 100},
            "mirrorTraffic": {},
            "publicNetworkAccess": "Enabled",
        },
        "systemData": system_data(),
        "tags": {},
        "location": ws.location,
        "kind": "Managed",
        "identity": {
            "type": "SystemAssigned",
            "principalId": jwt::derived_guid(&["endpoint-identity", &id]),
            "tenantId": state.settings.tenant,
        },
    })
}

/// `POST …/token`: an AML token for the endpoint, valid for `lifetime`, to refresh after half of it.
fn aml_token(state: &State, endpoint: &Endpoint, lifetime: std::time::Duration) -> Response<Body> {
    let now = now_secs();
    let secs = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX / 2);
    let expiry = now + secs;
    let mut claims = Map::new();
    claims.insert("aud".into(), endpoint.origin.clone().into());
    claims.insert("iss".into(), state.urls.resource_manager.clone().into());
    claims.insert("iat".into(), now.into());
    claims.insert("nbf".into(), now.into());
    claims.insert("exp".into(), expiry.into());
    claims.insert(jwt::AML_ENDPOINT_CLAIM.into(), endpoint.name.clone().into());
    claims.insert("uti".into(), jwt::random_b64(16).into());
    match state.signer.sign(&claims) {
        Ok(token) => serve::no_store(serve::json(
            StatusCode::OK,
            &json!({
                "accessToken": token,
                "tokenType": "Bearer",
                "expiryTimeUtc": expiry,
                "refreshAfterTimeUtc": now + secs / 2,
            }),
        )),
        Err(e) => arm_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", &e),
    }
}

/// `POST …/regenerateKeys`.
fn regenerate(
    state: &State,
    endpoint: &Endpoint,
    pairs: &[(String, String)],
    body: &[u8],
) -> Response<Body> {
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let key_type = request.get("keyType").and_then(Value::as_str);
    let key_value = request.get("keyValue").and_then(Value::as_str);
    let which = match key_type.map(str::to_ascii_lowercase).as_deref() {
        Some("primary") => true,
        Some("secondary") => false,
        _ => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "BadArgument",
                "The request body needs \"keyType\": \"Primary\" or \"Secondary\".",
            );
        }
    };
    if key_value.is_some_and(|v| v.len() < 16 || v.len() > 128) {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "BadArgument",
            "keyValue must be 16 to 128 characters.",
        );
    }
    let new = key_value.map_or_else(|| jwt::random_b64(32), str::to_owned);
    {
        let mut keys = crate::lock(&endpoint.keys);
        let Keys { primary, secondary } = &mut *keys;
        if which {
            *primary = new;
        } else {
            *secondary = new;
        }
    }
    let ws = &state.settings.workspace;
    let version = serve::get(pairs, "api-version").unwrap_or("2024-04-01");
    let operation = uuid::Uuid::new_v4().to_string();
    let base = format!(
        "{}/subscriptions/{}/providers/Microsoft.MachineLearningServices/locations/{}",
        state.urls.resource_manager, ws.subscription_id, ws.location
    );
    let response = serve::empty(StatusCode::ACCEPTED);
    let response = serve::with_header(
        response,
        "azure-asyncoperation",
        format!("{base}/mfeOperationsStatus/{operation}?api-version={version}"),
    );
    let response = serve::with_header(
        response,
        header::LOCATION,
        format!("{base}/mfeOperationResults/{operation}?api-version={version}"),
    );
    serve::with_header(response, header::RETRY_AFTER, "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_case_insensitively() {
        let base = "/subscriptions/S/resourceGroups/RG/providers/Microsoft.MachineLearningServices/workspaces/WS";
        let scope = Scope {
            subscription: "S".into(),
            resource_group: "RG".into(),
            workspace: "WS".into(),
        };
        assert_eq!(
            Operation::parse(base),
            Operation::GetWorkspace(scope.clone())
        );
        assert_eq!(
            Operation::parse(&format!("{base}/onlineEndpoints/ep/listkeys")),
            Operation::ListKeys(scope.clone(), "ep".into())
        );
        assert_eq!(
            Operation::parse(&format!(
                "{}/ONLINEENDPOINTS/ep/listKeys",
                base.to_lowercase()
            ))
            .name(),
            "list_keys"
        );
        assert_eq!(
            Operation::parse(&format!("{base}/onlineEndpoints/ep/token")),
            Operation::Token(scope.clone(), "ep".into())
        );
        assert_eq!(
            Operation::parse("/subscriptions"),
            Operation::ListSubscriptions
        );
        assert_eq!(
            Operation::parse(
                "/subscriptions/S/providers/Microsoft.MachineLearningServices/locations/local/mfeOperationsStatus/op-1"
            ),
            Operation::AsyncStatus("S".into(), "op-1".into())
        );
        assert_eq!(
            Operation::parse("/providers/Microsoft.Storage"),
            Operation::Unknown
        );
        assert_eq!(
            Operation::parse(&format!("{base}/onlineEndpoints/ep/deployments")),
            Operation::Unknown
        );
    }
}

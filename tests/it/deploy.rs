//! The container image (`deploy/Dockerfile`) and the Kubernetes examples (`deploy/kubernetes/`) agree with each
//! other and with the product: the binary path, user and ports of the image are the ones the manifests use; the
//! probes run the binary's `probe` subcommand against the configured admin port; every ConfigMap holds a
//! configuration the proxy's own loader accepts; and the image builds with the exact command `.ci/run` runs.
//! `deploy/check.sh` validates the same files with kubernetes-validate, hadolint and promtool.

use std::collections::BTreeSet;
use std::path::Path;

use aml_auth_proxy::config::{self, Config, Listen};
use aml_auth_proxy::env::MapEnv;
use serde_yaml::Value;

use crate::support::proxy::TempDir;
use crate::support::trace_init;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// What the downward API gives the gateway pod in these tests.
const POD_IP: &str = "10.244.1.17";
const POD_NAMESPACE: &str = "ml-gateway";

fn read(relative: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(relative))
        .unwrap_or_else(|e| panic!("{relative}: {e}"))
}

// === the Dockerfile ===

/// What the image promises, read from `deploy/Dockerfile`.
#[derive(Debug)]
struct Image {
    /// `FROM` images, in order.
    stages: Vec<String>,
    /// Where the final stage's `COPY --from=…` puts the binary.
    binary: String,
    user: u32,
    group: u32,
    expose: BTreeSet<u16>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    /// The `cargo build …` command of the build stage's `RUN`.
    build_command: String,
    /// `org.opencontainers.image.*` labels (name without the prefix → value).
    labels: Vec<(String, String)>,
}

/// The Dockerfile's instructions: continuation lines joined, comments and blank lines dropped.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(start) => {
                current.push_str(start);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, rest) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((keyword.to_ascii_uppercase(), rest.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

fn image() -> Image {
    image_of("deploy/Dockerfile")
}

/// What a Dockerfile / Containerfile promises.
fn image_of(relative: &str) -> Image {
    let text = read(relative);
    let mut image = Image {
        stages: Vec::new(),
        binary: String::new(),
        user: u32::MAX,
        group: u32::MAX,
        expose: BTreeSet::new(),
        entrypoint: Vec::new(),
        cmd: Vec::new(),
        build_command: String::new(),
        labels: Vec::new(),
    };
    for (keyword, rest) in instructions(&text) {
        match keyword.as_str() {
            "FROM" => image
                .stages
                .push(rest.split_whitespace().next().unwrap().to_owned()),
            "COPY" if rest.ends_with("/aml-auth-proxy") => {
                image.binary = rest.split_whitespace().last().unwrap().to_owned();
            }
            "USER" => {
                let (user, group) = rest.split_once(':').unwrap_or((&rest, &rest));
                image.user = user
                    .parse()
                    .expect("USER is numeric (runAsNonRoot needs it)");
                image.group = group.parse().expect("USER's group is numeric");
            }
            "EXPOSE" => image
                .expose
                .extend(rest.split_whitespace().map(|p| p.parse::<u16>().unwrap())),
            "ENTRYPOINT" => image.entrypoint = serde_json::from_str(&rest).unwrap(),
            "CMD" => image.cmd = serde_json::from_str(&rest).unwrap(),
            "RUN" if rest.contains("cargo build") => {
                let start = rest.find("cargo build").unwrap();
                let command = rest[start..].split("&&").next().unwrap();
                image.build_command = command.split_whitespace().collect::<Vec<_>>().join(" ");
            }
            "LABEL" => {
                // key="value" pairs; values may contain spaces.
                for part in rest.split("org.opencontainers.image.").skip(1) {
                    let (key, value) = part.split_once('=').unwrap();
                    let value = value.trim();
                    let value = value.strip_prefix('"').unwrap();
                    let value = &value[..value.find('"').unwrap()];
                    image.labels.push((key.to_owned(), value.to_owned()));
                }
            }
            _ => {}
        }
    }
    image
}

impl Image {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[test]
fn the_image_is_a_non_root_distroless_build_of_this_version() {
    let _trace = trace_init();
    let image = image();
    assert_eq!(image.stages.len(), 2, "{image:#?}");
    // A glibc build (Debian 12) runs on distroless cc-debian12: the same glibc, no shell.
    assert!(
        image.stages[0].contains("rust:") && image.stages[0].ends_with("-bookworm"),
        "{image:#?}"
    );
    assert_eq!(image.stages[1], "gcr.io/distroless/cc-debian12:nonroot");
    assert_eq!(image.binary, "/usr/local/bin/aml-auth-proxy");
    assert_eq!(
        (image.user, image.group),
        (65532, 65532),
        "distroless's nonroot"
    );
    assert_eq!(image.entrypoint, std::slice::from_ref(&image.binary));
    assert_eq!(image.cmd, ["run"]);
    assert_eq!(image.expose, BTreeSet::from([8080, 9464]));
    assert_eq!(image.label("version"), Some(VERSION));
    assert_eq!(
        image.label("base.name"),
        Some(image.stages[1].as_str()),
        "base.name label"
    );
    for label in ["title", "description", "revision", "created", "licenses"] {
        assert!(image.label(label).is_some(), "no {label} label");
    }
    assert_eq!(
        image.label("licenses"),
        Some(
            toml_value(&read("Cargo.toml"), "license")
                .as_deref()
                .unwrap_or("")
        )
    );
}

#[test]
fn the_ci_image_promises_what_the_published_image_promises() {
    let _trace = trace_init();
    // deploy/image-test.sh builds deploy/Containerfile.ci (no registry is reachable in CI): it must be the runtime
    // stage of deploy/Dockerfile on another base, nothing else.
    let published = image();
    let ci = image_of("deploy/Containerfile.ci");
    assert_eq!(ci.stages, ["scratch"], "{ci:#?}");
    assert_eq!(ci.binary, published.binary);
    assert_eq!((ci.user, ci.group), (published.user, published.group));
    assert_eq!(ci.expose, published.expose);
    assert_eq!(ci.entrypoint, published.entrypoint);
    assert_eq!(ci.cmd, published.cmd);
    let names = |image: &Image| {
        image
            .labels
            .iter()
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&ci), names(&published));
    for (key, value) in &published.labels {
        if key != "base.name" {
            assert_eq!(ci.label(key), Some(value.as_str()), "label {key}");
        }
    }
    assert_ne!(
        ci.label("base.name"),
        published.label("base.name"),
        "the base differs and says so"
    );
    // CI runs it after the release build, with the binary the image's command builds.
    let ci_script = read(".ci/run");
    let build = ci_script
        .find(&published.build_command)
        .expect("the release build in .ci/run");
    let image_test = ci_script
        .find("bash deploy/image-test.sh")
        .expect(".ci/run runs deploy/image-test.sh");
    assert!(
        build < image_test,
        "the image is built after the release binary"
    );
    let script = read("deploy/image-test.sh");
    for needle in [
        "Containerfile.ci",
        "--read-only",
        "--user 65532:65532",
        "--storage-driver vfs",
        "--runtime runc",
        "strip --strip-debug",
    ] {
        assert!(
            script.contains(needle),
            "deploy/image-test.sh lacks {needle}"
        );
    }
}

/// `key = "value"` from the `[package]` table of a Cargo.toml (enough for `license`).
fn toml_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
    })
}

#[test]
fn ci_builds_the_release_binary_with_the_images_command() {
    let _trace = trace_init();
    let image = image();
    let words: Vec<&str> = image.build_command.split(' ').collect();
    assert!(
        words.starts_with(&["cargo", "build"])
            && words.contains(&"--locked")
            && words.contains(&"--release"),
        "{}",
        image.build_command
    );
    let ci = read(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == image.build_command),
        ".ci/run has no line `{}`: the image and CI would build differently",
        image.build_command
    );
    // The build context holds what that command needs, and no more.
    let ignore = read(".dockerignore");
    let allowed: Vec<&str> = ignore
        .lines()
        .filter_map(|l| l.trim().strip_prefix('!'))
        .collect();
    assert!(ignore.lines().any(|l| l.trim() == "*"), "{ignore}");
    assert_eq!(allowed, ["Cargo.toml", "Cargo.lock", "build.rs", "src/"]);
}

// === the manifests ===

/// The documents of a multi-document YAML file.
fn documents(relative: &str) -> Vec<Value> {
    let text = read(relative);
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in text.lines().chain(std::iter::once("---")) {
        if line == "---" {
            let doc: Value = serde_yaml::from_str(&current)
                .unwrap_or_else(|e| panic!("{relative}: {e}\n{current}"));
            if !doc.is_null() {
                docs.push(doc);
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs
}

fn str_of<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string"))
}

/// `v` at a dotted path (`spec.template.spec`); keys only, no indexes, no keys with dots (index those).
fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .fold(v, |v, key| v.get(key).unwrap_or(&Value::Null))
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| str_of(d, "kind") == kind && str_of(d, "metadata.name") == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn only<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| str_of(d, "kind") == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}");
    found[0]
}

fn list(v: &Value) -> &[Value] {
    v.as_sequence().map(Vec::as_slice).unwrap_or_default()
}

fn named<'a>(items: &'a Value, name: &str) -> &'a Value {
    list(items)
        .iter()
        .find(|c| str_of(c, "name") == name)
        .unwrap_or_else(|| panic!("nothing named {name}"))
}

fn strings(v: &Value) -> Vec<String> {
    list(v)
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// Loads a ConfigMap's configuration with the proxy's own loader, as the pod would (downward-API variables set,
/// the caller key file replaced by a private temporary one).
fn load_config(text: &str, dir: &TempDir) -> Config {
    let mut value: Value = serde_yaml::from_str(text).unwrap();
    if let Some(auth) = value.get_mut("caller_auth") {
        let key = dir.file("caller-key", "0123456789abcdef0123456789abcdef\n", 0o600);
        auth["secret_file"] = Value::String(key.display().to_string());
    }
    if let Some(service) = value.get_mut("token_service") {
        let secret = dir.file("identity-secret", "0123456789abcdef0123456789abcdef", 0o600);
        service["secret_file"] = Value::String(secret.display().to_string());
    }
    let file = dir.file(
        "config.yaml",
        &serde_yaml::to_string(&value).unwrap(),
        0o644,
    );
    let env = MapEnv::new()
        .with("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000001")
        .with("AZURE_CLIENT_ID", "00000000-0000-0000-0000-000000000002")
        .with("POD_IP", POD_IP)
        .with("POD_NAMESPACE", POD_NAMESPACE);
    config::load(&file, &env).unwrap_or_else(|e| panic!("{e}"))
}

/// What one manifest's proxy container was checked to use.
#[derive(Debug)]
struct Checked {
    config: Config,
    pod: Value,
}

/// The checks every example shares, for the workload `kind`/`name` of `docs` whose proxy container is found in
/// `containers_key` (`initContainers` for a native sidecar, `containers` for the gateway).
fn check_proxy_pod(
    file: &str,
    docs: &[Value],
    kind: &str,
    name: &str,
    containers_key: &str,
) -> Checked {
    let image = image();
    let workload = find(docs, kind, name);
    let pod = at(workload, "spec.template.spec").clone();
    let labels = at(workload, "spec.template.metadata.labels");
    let proxy = named(&pod[containers_key], "aml-auth-proxy");
    let ctx = |what: &str| format!("{file}: {kind} {name}: {what}");

    // The image, started the way the Dockerfile means: its ENTRYPOINT, then `run` and the ConfigMap's file.
    assert_eq!(
        str_of(proxy, "image"),
        format!("aml-auth-proxy:{VERSION}"),
        "{}",
        ctx("image")
    );
    assert!(
        proxy.get("command").is_none(),
        "{}",
        ctx("keep the image's ENTRYPOINT")
    );
    let args = strings(&proxy["args"]);
    assert_eq!(
        args.first(),
        image.cmd.first(),
        "{}",
        ctx("args start with run")
    );
    let config_path = args
        .iter()
        .position(|a| a == "--config")
        .map(|i| args[i + 1].clone())
        .unwrap_or_else(|| panic!("{}", ctx("no --config")));
    let (dir, file_name) = config_path.rsplit_once('/').unwrap();
    let mount = list(&proxy["volumeMounts"])
        .iter()
        .find(|m| str_of(m, "mountPath") == dir)
        .unwrap_or_else(|| panic!("{}", ctx("the config directory is not mounted")));
    assert_eq!(
        mount["readOnly"],
        Value::Bool(true),
        "{}",
        ctx("config mount read-only")
    );
    let volume = named(&pod["volumes"], str_of(mount, "name"));
    let config_map = find(docs, "ConfigMap", str_of(volume, "configMap.name"));
    let dir_ = TempDir::new();
    let config = load_config(config_map["data"][file_name].as_str().unwrap(), &dir_);

    // Ports: the configuration's, the container's and the image's.
    let listen = match &config.listen {
        Listen::Tcp(addr) => addr.port(),
        Listen::Unix(_) => panic!("{}", ctx("a TCP listener")),
    };
    let admin = config.admin_listen.port();
    assert_eq!((listen, admin), (8080, 9464), "{}", ctx("ports"));
    let ports: BTreeSet<u16> = list(&proxy["ports"])
        .iter()
        .map(|p| u16::try_from(p["containerPort"].as_u64().unwrap()).unwrap())
        .collect();
    assert_eq!(ports, image.expose, "{}", ctx("containerPorts = EXPOSE"));
    assert_eq!(
        named(&proxy["ports"], "proxy")["containerPort"].as_u64(),
        Some(u64::from(listen))
    );
    assert_eq!(
        named(&proxy["ports"], "admin")["containerPort"].as_u64(),
        Some(u64::from(admin))
    );

    // Exec probes: the image's binary, its `probe` subcommand, the admin port on loopback.
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
    ] {
        let command = strings(&proxy[probe]["exec"]["command"]);
        assert_eq!(
            command,
            [
                image.binary.clone(),
                "probe".to_owned(),
                format!("http://127.0.0.1:{admin}{path}")
            ],
            "{}",
            ctx(probe)
        );
        assert!(
            config.allowed_hosts.iter().any(|h| h == "127.0.0.1"),
            "{}",
            ctx("the probe's Host must be allowed")
        );
    }

    // The image's user, and the hardening every example applies.
    let security = &proxy["securityContext"];
    for context in [security, &pod["securityContext"]] {
        assert_eq!(
            context["runAsUser"].as_u64(),
            Some(u64::from(image.user)),
            "{}",
            ctx("runAsUser")
        );
        assert_eq!(
            context["runAsGroup"].as_u64(),
            Some(u64::from(image.group)),
            "{}",
            ctx("runAsGroup")
        );
        assert_eq!(
            context["runAsNonRoot"],
            Value::Bool(true),
            "{}",
            ctx("runAsNonRoot")
        );
        assert_eq!(
            str_of(context, "seccompProfile.type"),
            "RuntimeDefault",
            "{}",
            ctx("seccomp")
        );
    }
    assert_eq!(
        security["readOnlyRootFilesystem"],
        Value::Bool(true),
        "{}",
        ctx("readOnlyRootFilesystem")
    );
    assert_eq!(
        security["allowPrivilegeEscalation"],
        Value::Bool(false),
        "{}",
        ctx("allowPrivilegeEscalation")
    );
    assert_eq!(
        strings(&security["capabilities"]["drop"]),
        ["ALL"],
        "{}",
        ctx("drop ALL")
    );
    for (path, what) in [
        ("resources.requests.cpu", "cpu request"),
        ("resources.requests.memory", "memory request"),
        ("resources.limits.memory", "memory limit"),
    ] {
        assert!(at(proxy, path).as_str().is_some(), "{}", ctx(what));
    }
    // Every request in flight may hold one stalled stream's buffers (at most 300 KiB); with the process's own
    // ~32 MiB, `max_in_flight` of them must fit the memory limit, or a local process could push it over.
    let limit = mebibytes(at(proxy, "resources.limits.memory").as_str().unwrap());
    let worst = 32 + config.limits.max_in_flight as u64 * 300 / 1024;
    assert!(
        worst <= limit,
        "{}",
        ctx(&format!(
            "max_in_flight {} × 300 KiB + 32 MiB = {worst} MiB exceeds the {limit} MiB memory limit",
            config.limits.max_in_flight
        ))
    );

    // Draining finishes within the grace period.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        config.limits.drain_timeout.as_secs() < grace,
        "{}",
        ctx("drain_timeout must be below terminationGracePeriodSeconds")
    );

    // AKS workload identity: the pod label, and the client id on its ServiceAccount.
    assert_eq!(
        labels["azure.workload.identity/use"].as_str().unwrap_or(""),
        "true",
        "{}",
        ctx("pod label")
    );
    let account = find(docs, "ServiceAccount", str_of(&pod, "serviceAccountName"));
    assert!(
        !account["metadata"]["annotations"]["azure.workload.identity/client-id"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "{}",
        ctx("ServiceAccount annotation")
    );
    Checked { config, pod }
}

#[test]
fn the_sidecar_example_runs_the_image_as_a_loopback_native_sidecar() {
    let _trace = trace_init();
    let file = "deploy/kubernetes/sidecar.yaml";
    let docs = documents(file);
    let checked = check_proxy_pod(file, &docs, "Deployment", "ml-app", "initContainers");
    let proxy = named(&checked.pod["initContainers"], "aml-auth-proxy");
    assert_eq!(str_of(proxy, "restartPolicy"), "Always", "a native sidecar");
    assert!(checked.config.listen.is_local() && !checked.config.expose);
    // The application calls the proxy on its configured port.
    let app = named(&checked.pod["containers"], "app");
    assert!(
        serde_yaml::to_string(app)
            .unwrap()
            .contains("http://127.0.0.1:8080/")
    );
}

#[test]
fn the_token_service_sidecar_example_gives_the_app_the_secret_the_proxy_reads() {
    let _trace = trace_init();
    let file = "deploy/kubernetes/sidecar-token-service.yaml";
    let docs = documents(file);
    let checked = check_proxy_pod(file, &docs, "Deployment", "ml-sdk-app", "initContainers");
    let proxy = named(&checked.pod["initContainers"], "aml-auth-proxy");
    assert_eq!(str_of(proxy, "restartPolicy"), "Always", "a native sidecar");
    let service = checked
        .config
        .token_service
        .as_ref()
        .expect("a token_service block");
    assert_eq!(
        service.listen,
        Listen::Tcp("127.0.0.1:8081".parse().unwrap())
    );
    assert!(!service.imds, "IMDS (no secret) stays off");
    // The proxy reads the secret from the mounted Secret, where the ConfigMap says.
    let config_map = find(&docs, "ConfigMap", "aml-auth-proxy-token-service");
    let written: Value =
        serde_yaml::from_str(config_map["data"]["config.yaml"].as_str().unwrap()).unwrap();
    let (dir, name) = str_of(&written, "token_service.secret_file")
        .rsplit_once('/')
        .unwrap();
    let mount = list(&proxy["volumeMounts"])
        .iter()
        .find(|m| str_of(m, "mountPath") == dir)
        .expect("the secret's directory is mounted");
    assert_eq!(mount["readOnly"], Value::Bool(true));
    let volume = named(&checked.pod["volumes"], str_of(mount, "name"));
    let secret_name = str_of(volume, "secret.secretName");
    let item = list(&volume["secret"]["items"])
        .iter()
        .find(|i| str_of(i, "path") == name)
        .expect("the Secret's key is mounted under the file name the configuration reads");
    assert_eq!(volume["secret"]["defaultMode"].as_u64(), Some(0o400));
    assert_eq!(
        checked.pod["securityContext"]["fsGroup"].as_u64(),
        Some(65532),
        "a non-root proxy can read it"
    );
    // The application gets the same Secret's key as IDENTITY_HEADER, and the endpoint on loopback.
    let app = named(&checked.pod["containers"], "app");
    let env = |name: &str| {
        list(&app["env"])
            .iter()
            .find(|e| str_of(e, "name") == name)
            .unwrap_or_else(|| panic!("{name} in the app's env"))
            .clone()
    };
    assert_eq!(
        str_of(&env("IDENTITY_ENDPOINT"), "value"),
        "http://127.0.0.1:8081/msi/token"
    );
    let header = env("IDENTITY_HEADER");
    assert_eq!(str_of(&header, "valueFrom.secretKeyRef.name"), secret_name);
    assert_eq!(
        str_of(&header, "valueFrom.secretKeyRef.key"),
        str_of(item, "key")
    );
    // The identity is the proxy's alone.
    let workload = find(&docs, "Deployment", "ml-sdk-app");
    let annotations = at(workload, "spec.template.metadata.annotations");
    assert_eq!(
        annotations["azure.workload.identity/skip-containers"].as_str(),
        Some("app")
    );
}

#[test]
fn the_job_example_completes_because_its_proxy_is_a_native_sidecar() {
    let _trace = trace_init();
    let file = "deploy/kubernetes/job.yaml";
    let docs = documents(file);
    let checked = check_proxy_pod(file, &docs, "Job", "ml-batch", "initContainers");
    let proxy = named(&checked.pod["initContainers"], "aml-auth-proxy");
    assert_eq!(str_of(proxy, "restartPolicy"), "Always");
    assert!(
        list(&checked.pod["containers"])
            .iter()
            .all(|c| str_of(c, "name") != "aml-auth-proxy"),
        "a proxy among the containers would keep the Job running"
    );
    assert!(["Never", "OnFailure"].contains(&str_of(&checked.pod, "restartPolicy")));
    assert!(checked.config.listen.is_local());
}

#[test]
fn the_gateway_example_is_exposed_with_a_caller_key_and_scrapeable() {
    let _trace = trace_init();
    let file = "deploy/kubernetes/gateway.yaml";
    let docs = documents(file);
    let checked = check_proxy_pod(
        file,
        &docs,
        "Deployment",
        "aml-auth-proxy-gateway",
        "containers",
    );
    let (config, pod) = (&checked.config, &checked.pod);
    assert!(config.expose && config.caller_auth.is_some() && !config.listen.is_local());

    // The caller key: a Secret mounted 0400, in a pod whose fsGroup is the image's group, so kubelet makes the
    // file root:<group> 0440, which the proxy accepts from root-owned files only.
    let image = image();
    let proxy = named(&pod["containers"], "aml-auth-proxy");
    let secret = list(&pod["volumes"])
        .iter()
        .find(|v| v.get("secret").is_some())
        .expect("a Secret volume");
    // `0400` is octal to Kubernetes' YAML 1.1 reader (256); yaml_serde's YAML 1.2 leaves it a string.
    let mode = &secret["secret"]["defaultMode"];
    assert!(
        mode.as_u64() == Some(0o400) || mode.as_str() == Some("0400"),
        "defaultMode 0400: {mode:?}"
    );
    assert_eq!(
        pod["securityContext"]["fsGroup"].as_u64(),
        Some(u64::from(image.group))
    );
    let mount = named(&proxy["volumeMounts"], str_of(secret, "name"));
    let key_dir = str_of(mount, "mountPath");
    let configured = find(&docs, "ConfigMap", "aml-auth-proxy-gateway");
    assert!(
        configured["data"]["config.yaml"]
            .as_str()
            .unwrap()
            .contains(&format!("secret_file: {key_dir}/")),
        "caller_auth.secret_file is in the Secret's mount"
    );

    // Callers use the Service name; Prometheus scrapes by pod IP. Both must be allowed Host names.
    let service = only(&docs, "Service");
    let service_name = str_of(service, "metadata.name");
    for host in [
        service_name.to_owned(),
        format!("{service_name}.{POD_NAMESPACE}.svc"),
        format!("{service_name}.{POD_NAMESPACE}.svc.cluster.local"),
        POD_IP.to_owned(),
    ] {
        assert!(
            config.allowed_hosts.contains(&host),
            "allowed_hosts lacks {host}: {:?}",
            config.allowed_hosts
        );
    }
    let env = &proxy["env"];
    assert_eq!(
        str_of(named(env, "POD_IP"), "valueFrom.fieldRef.fieldPath"),
        "status.podIP"
    );
    assert_eq!(
        str_of(named(env, "POD_NAMESPACE"), "valueFrom.fieldRef.fieldPath"),
        "metadata.namespace"
    );
    let annotations = at(
        find(&docs, "Deployment", "aml-auth-proxy-gateway"),
        "spec.template.metadata.annotations",
    );
    assert_eq!(
        annotations["prometheus.io/port"].as_str().unwrap_or(""),
        config.admin_listen.port().to_string()
    );

    // Service, autoscaler, disruption budget and network policy all point at these pods and ports.
    let pod_labels = at(
        find(&docs, "Deployment", "aml-auth-proxy-gateway"),
        "spec.template.metadata.labels",
    );
    let selects_pods = |selector: &Value| {
        selector
            .as_mapping()
            .unwrap()
            .iter()
            .all(|(k, v)| pod_labels.get(k.as_str().unwrap()) == Some(v))
    };
    assert!(selects_pods(&service["spec"]["selector"]));
    let service_targets: BTreeSet<u64> = list(&service["spec"]["ports"])
        .iter()
        .map(|p| {
            named(&proxy["ports"], str_of(p, "targetPort"))["containerPort"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(service_targets, BTreeSet::from([8080, 9464]));
    let hpa = only(&docs, "HorizontalPodAutoscaler");
    assert_eq!(str_of(hpa, "apiVersion"), "autoscaling/v2");
    assert_eq!(
        str_of(hpa, "spec.scaleTargetRef.name"),
        "aml-auth-proxy-gateway"
    );
    assert!(
        hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2,
        "at least two replicas"
    );
    assert!(
        at(
            find(&docs, "Deployment", "aml-auth-proxy-gateway"),
            "spec.replicas"
        )
        .is_null(),
        "the autoscaler owns replicas"
    );
    assert!(selects_pods(at(
        only(&docs, "PodDisruptionBudget"),
        "spec.selector.matchLabels"
    )));
    let policy = only(&docs, "NetworkPolicy");
    assert!(selects_pods(at(policy, "spec.podSelector.matchLabels")));
    let policy_ports: BTreeSet<u64> = list(at(policy, "spec.ingress"))
        .iter()
        .flat_map(|rule| {
            list(&rule["ports"])
                .iter()
                .map(|p| p["port"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(policy_ports, BTreeSet::from([8080, 9464]));
}

#[test]
fn the_kustomization_includes_every_manifest_and_this_version_of_the_image() {
    let _trace = trace_init();
    let kustomization: Value =
        serde_yaml::from_str(&read("deploy/kubernetes/kustomization.yaml")).unwrap();
    let listed: BTreeSet<String> = strings(&kustomization["resources"]).into_iter().collect();
    let present: BTreeSet<String> = std::fs::read_dir(Path::new(ROOT).join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present);
    let images = list(&kustomization["images"]);
    assert_eq!(images.len(), 1);
    assert_eq!(str_of(&images[0], "name"), "aml-auth-proxy");
    assert_eq!(str_of(&images[0], "newTag"), VERSION);
}

// === the documented metrics table ===

#[test]
fn the_documented_metrics_table_lists_every_exported_metric_with_its_type() {
    let _trace = trace_init();
    let metrics = aml_auth_proxy::metrics::Metrics::new().unwrap();
    // Label values make the vector families appear in the exposition.
    let _route = metrics.proxy.route("arm");
    metrics
        .tokens
        .acquisition("aks", "workload_identity", "success");
    metrics.tokens.failure("aks", "ConditionalAccessBlocked");
    metrics
        .tokens
        .expiry("aks", "https://ml.azure.com/.default", 0.0);
    metrics
        .token_service
        .count("app_service", "default", "success");
    let text = String::from_utf8(metrics.render()).unwrap();
    let exported: BTreeSet<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            (name.to_owned(), kind.to_owned())
        })
        .collect();
    let page = read("docs/operations.md");
    // The metrics table: from its header row to the first line that is not a table row.
    let documented: BTreeSet<(String, String)> = page
        .lines()
        .skip_while(|l| !l.starts_with("| metric | type | labels |"))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.strip_prefix("| `aml_auth_proxy_"))
        .map(|rest| {
            let (name, rest) = rest.split_once('`').unwrap();
            let kind = rest
                .trim_start_matches(" |")
                .split('|')
                .next()
                .unwrap()
                .trim();
            (format!("aml_auth_proxy_{name}"), kind.to_owned())
        })
        .collect();
    assert_eq!(
        documented, exported,
        "docs/operations.md metrics table vs /metrics"
    );
}

/// A Kubernetes memory quantity in `Mi` or `Gi`, in MiB.
fn mebibytes(quantity: &str) -> u64 {
    match (quantity.strip_suffix("Mi"), quantity.strip_suffix("Gi")) {
        (Some(m), _) => m.parse().unwrap(),
        (_, Some(g)) => g.parse::<u64>().unwrap() * 1024,
        _ => panic!("memory quantity {quantity:?}: use Mi or Gi"),
    }
}

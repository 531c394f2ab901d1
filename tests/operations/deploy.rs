//! The deployment files under `deploy/` checked against the gateway itself: every environment
//! variable, configuration key, port, probe and IAM action they use must be one the gateway
//! really has. Settings come from `Config` through clap's introspection, so a renamed flag or
//! variable fails here instead of in a cluster.

use clap::{CommandFactory, Parser};
use connect_chat_gateway::config::Config;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use yaml_rust2::{Yaml, YamlLoader};

/// The ports the deployment exposes: the gRPC listener and the admin HTTP listener.
const GRPC_PORT: u16 = 50051;
const ADMIN_PORT: u16 = 9090;

/// The only AWS API the gateway signs with its own credentials (participant calls use
/// Connect's bearer tokens).
const SIGNED_ACTIONS: &[&str] = &[
    "connect:StartChatContact",
    "connect:CreatePushNotificationRegistration",
    "connect:DeletePushNotificationRegistration",
    "connect:CreateParticipant",
];

// ---------------------------------------------------------------------------------------
// The gateway's settings, from clap.

/// One setting of `Config`: its configuration-file key, environment variable and default.
#[derive(Debug)]
struct Setting {
    key: String,
    env: Option<String>,
    default: Option<String>,
}

fn settings() -> Vec<Setting> {
    let mut cmd = Config::command();
    cmd.build();
    cmd.get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long()?;
            if long == "help" || long == "version" {
                return None;
            }
            let defaults = arg.get_default_values();
            Some(Setting {
                key: long.replace('-', "_"),
                env: arg.get_env().map(|e| e.to_string_lossy().into_owned()),
                default: (defaults.len() == 1).then(|| defaults[0].to_string_lossy().into_owned()),
            })
        })
        .collect()
}

fn known_keys() -> BTreeSet<String> {
    settings().into_iter().map(|s| s.key).collect()
}

fn known_env() -> BTreeSet<String> {
    settings().into_iter().filter_map(|s| s.env).collect()
}

fn default_of(key: &str) -> Option<String> {
    settings()
        .into_iter()
        .find(|s| s.key == key)
        .and_then(|s| s.default)
}

fn duration(s: &str) -> Duration {
    humantime::parse_duration(s).unwrap_or_else(|e| panic!("{s:?} is not a duration: {e}"))
}

fn port_of(addr: &str) -> u16 {
    addr.parse::<SocketAddr>()
        .unwrap_or_else(|e| panic!("{addr:?} is not a socket address: {e}"))
        .port()
}

// ---------------------------------------------------------------------------------------
// Files.

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every YAML file under `deploy/kubernetes`, with its documents.
fn manifests() -> Vec<(String, Vec<Yaml>)> {
    let dir = root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let docs = YamlLoader::load_from_str(&read(&path))
                .unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"));
            let docs: Vec<Yaml> = docs.into_iter().filter(|d| !d.is_null()).collect();
            assert!(!docs.is_empty(), "{name} holds no document");
            (name, docs)
        })
        .collect()
}

/// The Kubernetes objects (every document but the Kustomization), with their file names.
fn objects() -> Vec<(String, Yaml)> {
    manifests()
        .into_iter()
        .flat_map(|(name, docs)| docs.into_iter().map(move |d| (name.clone(), d)))
        .filter(|(_, d)| str_at(d, &["kind"]) != Some("Kustomization"))
        .collect()
}

fn object(kind: &str) -> Yaml {
    let found: Vec<Yaml> = objects()
        .into_iter()
        .filter(|(_, d)| str_at(d, &["kind"]) == Some(kind))
        .map(|(_, d)| d)
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind}");
    found.into_iter().next().unwrap()
}

fn at<'a>(y: &'a Yaml, path: &[&str]) -> &'a Yaml {
    path.iter().fold(y, |y, k| &y[*k])
}

fn str_at<'a>(y: &'a Yaml, path: &[&str]) -> Option<&'a str> {
    at(y, path).as_str()
}

fn list<'a>(y: &'a Yaml, path: &[&str]) -> &'a [Yaml] {
    at(y, path).as_vec().map(Vec::as_slice).unwrap_or(&[])
}

fn string_map(y: &Yaml) -> BTreeMap<String, String> {
    y.as_hash()
        .map(|h| {
            h.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The `ENV` instructions of the Dockerfile (continuation lines joined).
fn dockerfile_env() -> BTreeMap<String, String> {
    let text = read(&root().join("deploy/Dockerfile")).replace("\\\n", " ");
    let mut env = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.trim().strip_prefix("ENV ") {
            for pair in rest.split_whitespace() {
                let (k, v) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("Dockerfile: ENV {pair:?} is not NAME=VALUE"));
                env.insert(k.to_string(), v.to_string());
            }
        }
    }
    env
}

/// The gateway's container in the Deployment.
fn gateway_container(deployment: &Yaml) -> Yaml {
    let containers = list(deployment, &["spec", "template", "spec", "containers"]);
    assert_eq!(containers.len(), 1, "the Deployment runs one container");
    containers[0].clone()
}

/// The container's environment as the gateway sees it: the image's `ENV`, then the
/// manifest's `env` on top.
fn effective_env(container: &Yaml) -> BTreeMap<String, String> {
    let mut env = dockerfile_env();
    for var in list(container, &["env"]) {
        let name = str_at(var, &["name"]).expect("env entries have a name");
        if let Some(value) = str_at(var, &["value"]) {
            env.insert(name.to_string(), value.to_string());
        }
    }
    env
}

fn listen_ports(container: &Yaml) -> (u16, u16) {
    let env = effective_env(container);
    let grpc = env
        .get("GATEWAY_LISTEN")
        .cloned()
        .or_else(|| default_of("listen"))
        .expect("a gRPC listen address");
    let admin = env
        .get("GATEWAY_ADMIN_LISTEN")
        .cloned()
        .or_else(|| default_of("admin_listen"))
        .expect("an admin listen address");
    for (what, addr) in [("GATEWAY_LISTEN", &grpc), ("GATEWAY_ADMIN_LISTEN", &admin)] {
        assert!(
            addr.parse::<SocketAddr>()
                .is_ok_and(|a| a.ip().is_unspecified()),
            "{what} = {addr}: in a container the gateway must listen on every interface"
        );
    }
    (port_of(&grpc), port_of(&admin))
}

/// Resolves a port given by number or by the name of one of the container's ports.
fn resolve_port(container: &Yaml, port: &Yaml) -> u16 {
    if let Some(n) = port.as_i64() {
        return u16::try_from(n).expect("a port number");
    }
    let name = port.as_str().expect("a port is a number or a name");
    list(container, &["ports"])
        .iter()
        .find(|p| str_at(p, &["name"]) == Some(name))
        .and_then(|p| at(p, &["containerPort"]).as_i64())
        .map(|n| u16::try_from(n).expect("a port number"))
        .unwrap_or_else(|| panic!("no container port is named {name:?}"))
}

/// The configuration file the Deployment mounts at `GATEWAY_CONFIG`, parsed.
fn mounted_config(deployment: &Yaml, container: &Yaml) -> Option<toml::Table> {
    let path = effective_env(container).get("GATEWAY_CONFIG")?.clone();
    let (dir, file) = path
        .rsplit_once('/')
        .expect("GATEWAY_CONFIG is an absolute path");
    let mount = list(container, &["volumeMounts"])
        .iter()
        .find(|m| str_at(m, &["mountPath"]) == Some(dir))
        .unwrap_or_else(|| panic!("GATEWAY_CONFIG={path}: nothing is mounted at {dir}"));
    assert_eq!(
        at(mount, &["readOnly"]).as_bool(),
        Some(true),
        "the configuration is mounted read-only"
    );
    let volume_name = str_at(mount, &["name"]).unwrap();
    let volume = list(deployment, &["spec", "template", "spec", "volumes"])
        .iter()
        .find(|v| str_at(v, &["name"]) == Some(volume_name))
        .unwrap_or_else(|| panic!("no volume named {volume_name}"));
    let map_name =
        str_at(volume, &["configMap", "name"]).expect("the config volume is a ConfigMap");
    let items = list(volume, &["configMap", "items"]);
    let key = if items.is_empty() {
        file.to_string()
    } else {
        let item = items
            .iter()
            .find(|i| str_at(i, &["path"]) == Some(file))
            .unwrap_or_else(|| panic!("the ConfigMap volume has no item at {file}"));
        str_at(item, &["key"]).unwrap().to_string()
    };
    let map = object("ConfigMap");
    assert_eq!(str_at(&map, &["metadata", "name"]), Some(map_name));
    let text = str_at(&map, &["data", &key])
        .unwrap_or_else(|| panic!("ConfigMap {map_name} has no key {key}"));
    Some(
        text.parse::<toml::Table>()
            .unwrap_or_else(|e| panic!("ConfigMap {map_name} {key} is not valid TOML: {e}")),
    )
}

fn assert_known_keys(what: &str, table: &toml::Table) {
    let known = known_keys();
    let unknown: Vec<&String> = table.keys().filter(|k| !known.contains(*k)).collect();
    assert!(
        unknown.is_empty(),
        "{what}: {unknown:?} are not settings of the gateway (known: {known:?})"
    );
}

/// Gives every value of `table` to the gateway's own parser as the flag it stands for, so a
/// value the gateway would refuse (a bad duration, a zero limit) fails here.
fn parses_as_flags(what: &str, table: &toml::Table) {
    let command = <Config as clap::CommandFactory>::command();
    let mut args = vec!["connect-chat-gateway".to_string()];
    for (key, value) in table {
        let long = key.replace('_', "-");
        // A switch is given or left out; a boolean taking a value is given its value.
        let switch = command
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
            .is_some_and(|a| !a.get_action().takes_values());
        let flag = format!("--{long}");
        match value {
            toml::Value::Boolean(true) if switch => args.push(flag),
            toml::Value::Boolean(false) if switch => {}
            toml::Value::Array(a) if a.is_empty() => {}
            other => {
                args.push(flag);
                args.push(as_arg(other));
            }
        }
    }
    if let Err(e) = Config::try_parse_from(&args) {
        panic!("{what}: the gateway refuses these settings: {e}");
    }
}

/// A TOML value as clap would receive it on the command line.
fn as_arg(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(a) => a.iter().map(as_arg).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// The checks.

#[test]
fn every_manifest_is_named_and_listed_in_the_kustomization() {
    let all = manifests();
    let mut files = BTreeSet::new();
    let mut listed = None;
    for (name, docs) in &all {
        for doc in docs {
            let kind = str_at(doc, &["kind"]).unwrap_or_else(|| panic!("{name}: no kind"));
            assert!(
                str_at(doc, &["apiVersion"]).is_some_and(|v| !v.is_empty()),
                "{name}: no apiVersion"
            );
            if kind == "Kustomization" {
                let resources: BTreeSet<String> = list(doc, &["resources"])
                    .iter()
                    .map(|r| r.as_str().expect("resources are paths").to_string())
                    .collect();
                listed = Some(resources);
                continue;
            }
            files.insert(name.clone());
            assert!(
                str_at(doc, &["metadata", "name"]).is_some_and(|n| !n.is_empty()),
                "{name}: {kind} has no metadata.name"
            );
        }
    }
    let listed = listed.expect("a kustomization.yaml");
    assert_eq!(listed, files, "kustomization.yaml lists every manifest");

    // The image the kustomization sets is the one the Deployment runs.
    let kustomization = &all
        .iter()
        .find(|(n, _)| n == "kustomization.yaml")
        .unwrap()
        .1[0];
    let container = gateway_container(&object("Deployment"));
    let image = str_at(&container, &["image"]).unwrap();
    assert!(
        list(kustomization, &["images"])
            .iter()
            .any(|i| str_at(i, &["name"]) == Some(image)),
        "kustomization.yaml sets the image {image}"
    );
}

#[test]
fn manifests_use_only_the_gateways_environment_variables() {
    let known = known_env();
    let deployment = object("Deployment");
    let container = gateway_container(&deployment);
    let mut used = Vec::new();
    for var in list(&container, &["env"]) {
        used.push(str_at(var, &["name"]).unwrap().to_string());
    }
    // A ConfigMap loaded whole with envFrom is environment too (a Secret's keys are
    // documented in docs/security.md and not visible here).
    for source in list(&container, &["envFrom"]) {
        if let Some(name) = str_at(source, &["configMapRef", "name"]) {
            let map = object("ConfigMap");
            assert_eq!(str_at(&map, &["metadata", "name"]), Some(name));
            used.extend(string_map(at(&map, &["data"])).into_keys());
        }
    }
    used.extend(dockerfile_env().into_keys());
    let unknown: Vec<&String> = used.iter().filter(|n| !known.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "{unknown:?} are not environment variables of the gateway (known: {known:?})"
    );
    assert!(used.iter().any(|n| n == "GATEWAY_LISTEN"));
}

#[test]
fn ports_and_probes_match_the_listeners() {
    let deployment = object("Deployment");
    let container = gateway_container(&deployment);
    let (grpc, admin) = listen_ports(&container);
    assert_eq!((grpc, admin), (GRPC_PORT, ADMIN_PORT));

    let declared: BTreeSet<u16> = list(&container, &["ports"])
        .iter()
        .map(|p| resolve_port(&container, &p["containerPort"]))
        .collect();
    assert_eq!(declared, BTreeSet::from([grpc, admin]), "container ports");

    for (probe, http_path) in [
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
        ("startupProbe", "/healthz"),
    ] {
        let p = at(&container, &[probe]);
        if p.is_badvalue() {
            assert_ne!(
                probe, "readinessProbe",
                "the gateway needs a readiness probe"
            );
            assert_ne!(probe, "livenessProbe", "the gateway needs a liveness probe");
            continue;
        }
        if !p["grpc"].is_badvalue() {
            assert_eq!(
                resolve_port(&container, &p["grpc"]["port"]),
                grpc,
                "{probe}: gRPC health is served on the gRPC listener"
            );
        } else if !p["httpGet"].is_badvalue() {
            assert_eq!(
                resolve_port(&container, &p["httpGet"]["port"]),
                admin,
                "{probe}: HTTP health is served on the admin listener"
            );
            assert_eq!(str_at(p, &["httpGet", "path"]), Some(http_path), "{probe}");
        } else {
            panic!("{probe}: use a grpc or httpGet probe (the image has no shell)");
        }
    }

    let annotations = string_map(at(
        &deployment,
        &["spec", "template", "metadata", "annotations"],
    ));
    assert_eq!(
        annotations.get("prometheus.io/scrape").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        annotations.get("prometheus.io/port"),
        Some(&admin.to_string())
    );
    assert_eq!(
        annotations.get("prometheus.io/path").map(String::as_str),
        Some("/metrics")
    );

    let service = object("Service");
    let mut targets = BTreeSet::new();
    for port in list(&service, &["spec", "ports"]) {
        let target = resolve_port(&container, &port["targetPort"]);
        if target == grpc {
            assert_eq!(
                str_at(port, &["appProtocol"]),
                Some("grpc"),
                "the gRPC port's appProtocol"
            );
        }
        targets.insert(target);
    }
    assert_eq!(
        targets,
        BTreeSet::from([grpc, admin]),
        "Service targetPorts"
    );

    // The Dockerfile exposes the same ports and runs the gateway.
    let dockerfile = read(&root().join("deploy/Dockerfile"));
    let exposed: BTreeSet<u16> = dockerfile
        .lines()
        .filter_map(|l| l.trim().strip_prefix("EXPOSE "))
        .flat_map(|l| {
            l.split_whitespace()
                .map(|p| p.parse::<u16>().expect("EXPOSE a port"))
        })
        .collect();
    assert_eq!(exposed, BTreeSet::from([grpc, admin]), "Dockerfile EXPOSE");
    let entrypoint = dockerfile
        .lines()
        .rfind(|l| l.starts_with("ENTRYPOINT"))
        .expect("an ENTRYPOINT");
    assert!(
        entrypoint.contains("/connect-chat-gateway\""),
        "{entrypoint}"
    );
}

#[test]
fn the_deployment_drains_and_runs_locked_down() {
    let deployment = object("Deployment");
    let pod = at(&deployment, &["spec", "template", "spec"]);
    let container = gateway_container(&deployment);

    // terminationGracePeriodSeconds covers the preStop sleep and the whole drain.
    let env = effective_env(&container);
    let config = mounted_config(&deployment, &container).unwrap_or_default();
    let drain = env
        .get("GATEWAY_DRAIN_GRACE")
        .cloned()
        .or_else(|| config.get("drain_grace").map(as_arg))
        .or_else(|| default_of("drain_grace"))
        .expect("a drain grace");
    let pre_stop = at(&container, &["lifecycle", "preStop", "sleep", "seconds"])
        .as_i64()
        .expect("a preStop sleep lets endpoints update before the drain");
    let grace = at(pod, &["terminationGracePeriodSeconds"])
        .as_i64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        Duration::from_secs(grace as u64) > duration(&drain) + Duration::from_secs(pre_stop as u64),
        "terminationGracePeriodSeconds {grace} must exceed preStop {pre_stop}s + drain_grace {drain}"
    );

    assert_eq!(
        at(pod, &["securityContext", "runAsNonRoot"]).as_bool(),
        Some(true)
    );
    let sc = at(&container, &["securityContext"]);
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert!(
        list(sc, &["capabilities", "drop"])
            .iter()
            .any(|c| c.as_str() == Some("ALL")),
        "drop ALL capabilities"
    );
    assert!(
        !at(&container, &["resources", "requests"]).is_badvalue(),
        "resource requests"
    );
    assert!(
        !at(&container, &["resources", "limits", "memory"]).is_badvalue(),
        "a memory limit"
    );

    // The other objects point at this Deployment and its pods.
    let name = str_at(&deployment, &["metadata", "name"]).unwrap();
    let labels = string_map(at(&deployment, &["spec", "template", "metadata", "labels"]));
    let selects = |selector: &Yaml, what: &str| {
        let selector = string_map(selector);
        assert!(!selector.is_empty(), "{what} has a selector");
        for (k, v) in &selector {
            assert_eq!(labels.get(k), Some(v), "{what} selects the gateway's pods");
        }
    };
    selects(
        at(&deployment, &["spec", "selector", "matchLabels"]),
        "the Deployment",
    );
    selects(at(&object("Service"), &["spec", "selector"]), "the Service");
    selects(
        at(
            &object("PodDisruptionBudget"),
            &["spec", "selector", "matchLabels"],
        ),
        "the PodDisruptionBudget",
    );
    let hpa = object("HorizontalPodAutoscaler");
    assert_eq!(str_at(&hpa, &["apiVersion"]), Some("autoscaling/v2"));
    assert_eq!(
        str_at(&hpa, &["spec", "scaleTargetRef", "kind"]),
        Some("Deployment")
    );
    assert_eq!(
        str_at(&hpa, &["spec", "scaleTargetRef", "name"]),
        Some(name)
    );
    assert!(
        list(&hpa, &["spec", "metrics"])
            .iter()
            .any(|m| str_at(m, &["resource", "name"]) == Some("cpu")),
        "the HorizontalPodAutoscaler scales on CPU"
    );
}

#[test]
fn the_service_account_carries_the_irsa_role() {
    let account = object("ServiceAccount");
    let role = str_at(
        &account,
        &["metadata", "annotations", "eks.amazonaws.com/role-arn"],
    )
    .expect("the ServiceAccount has the eks.amazonaws.com/role-arn annotation");
    assert!(
        role.starts_with("arn:aws:iam::") && role.contains(":role/"),
        "{role}"
    );
    let deployment = object("Deployment");
    assert_eq!(
        str_at(
            &deployment,
            &["spec", "template", "spec", "serviceAccountName"]
        ),
        str_at(&account, &["metadata", "name"]),
        "the Deployment runs as the annotated ServiceAccount"
    );
}

#[test]
fn the_mounted_configuration_uses_only_real_settings() {
    let deployment = object("Deployment");
    let container = gateway_container(&deployment);
    let config = mounted_config(&deployment, &container)
        .expect("the Deployment mounts its configuration at GATEWAY_CONFIG");
    assert_known_keys("ConfigMap gateway.toml", &config);
    parses_as_flags("ConfigMap gateway.toml", &config);
}

#[test]
fn the_iam_policy_grants_only_start_chat_contact_on_contact_flows() {
    let text = read(&root().join("deploy/iam-policy.json"));
    let policy: serde_json::Value = serde_json::from_str(&text).expect("iam-policy.json is JSON");
    assert_eq!(policy["Version"], "2012-10-17");
    let statements = match &policy["Statement"] {
        serde_json::Value::Array(a) => a.clone(),
        s @ serde_json::Value::Object(_) => vec![s.clone()],
        other => panic!("Statement is {other}"),
    };
    assert!(!statements.is_empty());
    let strings = |v: &serde_json::Value| -> Vec<String> {
        match v {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(a) => a
                .iter()
                .map(|s| s.as_str().expect("a string").to_string())
                .collect(),
            other => panic!("expected a string or a list, got {other}"),
        }
    };
    let mut actions = BTreeSet::new();
    for st in &statements {
        assert_eq!(st["Effect"], "Allow");
        for forbidden in ["NotAction", "NotResource", "NotPrincipal"] {
            assert!(
                st.get(forbidden).is_none(),
                "no {forbidden}: least privilege"
            );
        }
        actions.extend(strings(&st["Action"]));
        let starts = strings(&st["Action"]) == ["connect:StartChatContact"];
        for resource in strings(&st["Resource"]) {
            let instance = "arn:aws:connect:${REGION}:${ACCOUNT_ID}:instance/${INSTANCE_ID}";
            if starts {
                // StartChatContact: on the contact flows only.
                let flow = resource
                    .strip_prefix(&format!("{instance}/contact-flow/"))
                    .unwrap_or_else(|| panic!("{resource} is not a contact flow of the instance"));
                assert!(!flow.is_empty() && !flow.contains('/'), "{resource}");
            } else {
                // The push registrations and the bots: the instance and its contacts,
                // nothing wider.
                assert!(
                    resource == instance || resource == format!("{instance}/contact/*"),
                    "{resource} is more than the instance and its contacts"
                );
            }
        }
    }
    let expected: BTreeSet<String> = SIGNED_ACTIONS.iter().map(|a| a.to_string()).collect();
    assert_eq!(actions, expected, "exactly the calls the gateway signs");
}

#[test]
fn the_example_configuration_documents_every_setting_with_its_default() {
    let text = read(&root().join("deploy/gateway.example.toml"));
    // As shipped every setting is commented out; it must still be valid TOML.
    text.parse::<toml::Table>()
        .expect("gateway.example.toml is valid TOML");
    // Uncomment the `# key = value` lines and read them.
    let uncommented: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            l.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            })
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let table: toml::Table = uncommented
        .parse()
        .unwrap_or_else(|e| panic!("the commented settings are not valid TOML: {e}"));
    assert_known_keys("gateway.example.toml", &table);
    parses_as_flags("gateway.example.toml", &table);

    // Every setting is there (but the file's own path), with clap's default.
    let missing: Vec<String> = settings()
        .into_iter()
        .map(|s| s.key)
        .filter(|k| k != "config" && !table.contains_key(k))
        .collect();
    assert!(
        missing.is_empty(),
        "gateway.example.toml does not document {missing:?}: add each with its meaning and default"
    );
    for setting in settings() {
        if let (Some(default), Some(value)) = (&setting.default, table.get(&setting.key)) {
            assert_eq!(&as_arg(value), default, "the default of {}", setting.key);
        }
    }
}

/// The `ENV` pairs of one Dockerfile's text (continuation lines joined).
fn env_pairs(text: &str) -> BTreeMap<String, String> {
    let text = text.replace("\\\n", " ");
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("ENV "))
        .flat_map(|rest| {
            rest.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("ENV NAME=VALUE");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[test]
fn both_dockerfiles_stub_every_binary_path_of_the_manifest() {
    // Cargo refuses a manifest whose [[bin]] paths are missing, so the dependency layer's
    // stub sources must create every path the manifest names.
    let manifest = read(&root().join("Cargo.toml"));
    let bins: BTreeSet<String> = manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("path = \""))
        .filter_map(|p| p.strip_suffix('"'))
        .filter(|p| p.starts_with("src/"))
        .map(str::to_owned)
        .collect();
    assert!(bins.contains("src/main.rs") && bins.len() >= 3, "{bins:?}");
    for file in ["deploy/Dockerfile", "deploy/simulator.Dockerfile"] {
        let text = read(&root().join(file));
        for bin in &bins {
            assert!(
                text.contains(&format!("> {bin}")),
                "{file}: the stub sources do not create {bin}"
            );
        }
    }
}

#[test]
fn the_simulator_image_serves_the_port_it_exposes_and_hands_out_urls_clients_reach() {
    let text = read(&root().join("deploy/simulator.Dockerfile"));
    let env = env_pairs(&text);
    // Every variable is one connect-sim reads.
    let flags = read(&root().join("src/bin/connect-sim.rs"));
    for name in env.keys() {
        assert!(
            flags.contains(&format!("env = \"{name}\"")),
            "{name} is not a connect-sim setting"
        );
    }
    let bind: SocketAddr = env["CONNECT_SIM_BIND"].parse().expect("a bind address");
    assert!(
        bind.ip().is_unspecified(),
        "a container listens on every interface"
    );
    let exposed: Vec<u16> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("EXPOSE "))
        .map(|p| p.trim().parse().expect("EXPOSE a port"))
        .collect();
    assert_eq!(exposed, vec![bind.port()]);
    // ChatJS accepts only wss:// or ws://127.0.0.1: socket URLs; the default names the
    // published port on the host's loopback.
    let sockets = &env["CONNECT_SIM_SOCKET_BASE_URL"];
    assert_eq!(sockets, &format!("ws://127.0.0.1:{}", bind.port()));
    assert_eq!(
        env["CONNECT_SIM_PUBLIC_BASE_URL"],
        format!("http://127.0.0.1:{}", bind.port())
    );
    let entrypoint = text
        .lines()
        .rfind(|l| l.starts_with("ENTRYPOINT"))
        .expect("an ENTRYPOINT");
    assert!(entrypoint.contains("/connect-sim\""), "{entrypoint}");
}

/// The `chatgateway_*` series an expression names.
fn series_named(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("chatgateway_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if end > "chatgateway_".len() {
            out.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    out
}

/// Every series the alert rules and the Grafana dashboard query is one the gateway exports:
/// a renamed metric fails here, not silently in an operator's Prometheus.
#[test]
fn the_alerts_and_the_dashboard_query_only_exported_series() {
    use connect_chat_gateway::ops::metrics::{
        CauseLabel, GrpcLabel, Metrics, OperationErrorLabel, OperationLabel,
    };
    let metrics = Metrics::new();
    // Labelled families are listed once they have a sample.
    metrics
        .grpc_calls
        .get_or_create(&GrpcLabel {
            method: "StartChat",
            code: "OK",
        })
        .inc();
    metrics
        .reconnects
        .get_or_create(&CauseLabel { cause: "test" })
        .inc();
    metrics
        .upstream_errors
        .get_or_create(&OperationErrorLabel {
            operation: "SendMessage",
            error: "Throttled",
        })
        .inc();
    metrics
        .upstream_latency
        .get_or_create(&OperationLabel {
            operation: "SendMessage",
        })
        .observe(0.01);
    let exported: BTreeSet<String> = metrics
        .encode()
        .lines()
        .filter_map(|l| {
            let name = l.strip_prefix("# TYPE ")?.split(' ').next()?;
            Some(name.to_owned())
        })
        .collect();
    // A counter is exported as name_total, a histogram as name_bucket, _sum and _count.
    let known = |s: &str| {
        exported.iter().any(|e| {
            s == e
                || s.strip_suffix("_total") == Some(e)
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| s.strip_suffix(suffix) == Some(e))
        })
    };
    for file in [
        "prometheus/alerts.yaml",
        "grafana/connect-chat-gateway.json",
    ] {
        let text = read(&root().join("deploy").join(file));
        let named = series_named(&text);
        assert!(named.len() >= 5, "{file} names too few series: {named:?}");
        let unknown: Vec<&String> = named.iter().filter(|s| !known(s)).collect();
        assert!(
            unknown.is_empty(),
            "{file} queries series the gateway does not export: {unknown:?} (exported: {exported:?})"
        );
    }
}
